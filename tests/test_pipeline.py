"""End-to-end renders on tiny synthetic rasters: georeferencing, masks, determinism, AOI, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geopix import errors
from geopix.config import InferConfig, RenderConfig, TileConfig
from geopix.describe import estimated_seconds, info
from geopix.images import predict
from geopix.pipeline import render
from geopix.testing import random_checkpoint, synthetic_aerial


def _render(src: Path, out: Path, model: Path, **kw) -> Path:
    tiles = kw.pop("tiles", TileConfig(256, 64, 512))
    kw.setdefault("scheduler", "sync")
    render(RenderConfig(input=src, output_dir=out, model=str(model), tiles=tiles, **kw))
    return out / "map.tif"


def _pixels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(path) as ds:
        return ds.read(), ds.dataset_mask()


def test_output_keeps_the_source_grid(aerial: Path, checkpoint: Path, tmp_path: Path) -> None:
    out = _render(aerial, tmp_path, checkpoint)
    with rasterio.open(aerial) as s, rasterio.open(out) as o:
        assert (o.crs, o.transform, o.width, o.height) == (s.crs, s.transform, s.width, s.height)
        assert o.count == 3 and o.dtypes[0] == "uint8" and o.overviews(1)
        assert o.profile["tiled"] and o.tags()["GEOPIX_MODEL"] == checkpoint.name
    manifest = json.loads((tmp_path / "render.json").read_text())
    assert manifest["tiles"] == 16
    # border tiles are computed once and shared: 4 blocks need 25 tile predictions, the model
    # runs on fewer (only the diagonal blocks, processed together first, share a corner tile)
    assert manifest["tiles_run"] + manifest["tiles_cached"] == 25 and manifest["tiles_run"] <= 17
    assert not (tmp_path / "map.zarr").exists()


def test_chunk_size_and_workers_do_not_change_a_byte(aerial: Path, checkpoint: Path, tmp_path: Path) -> None:
    a = _render(aerial, tmp_path / "a", checkpoint, tiles=TileConfig(256, 64, 512))
    b = _render(aerial, tmp_path / "b", checkpoint, tiles=TileConfig(256, 64, 2048), scheduler=None, workers=1)
    c = _render(aerial, tmp_path / "c", checkpoint, tiles=TileConfig(256, 64, 512), scheduler=None, workers=2)
    # the in-process default: one block gets every core's torch thread, many blocks one each
    d = _render(aerial, tmp_path / "d", checkpoint, tiles=TileConfig(256, 64, 2048), scheduler=None)
    e = _render(aerial, tmp_path / "e", checkpoint, tiles=TileConfig(256, 64, 512), scheduler=None)
    pa, pb, pc = _pixels(a), _pixels(b), _pixels(c)
    for x, y in ((pa, pb), (pa, pc)):
        assert np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1])
    assert a.read_bytes() == b.read_bytes() == c.read_bytes() == d.read_bytes() == e.read_bytes()


def test_resampling_to_the_model_resolution(data_dir: Path, tmp_path: Path) -> None:
    src = synthetic_aerial(tmp_path / "fine.tif", (300, 400), res=0.5)
    model = random_checkpoint(tmp_path / "m.safetensors", ngf=4, ground_resolution_m=2.0)
    out = _render(src, tmp_path / "o", model)
    assert json.loads((tmp_path / "o" / "render.json").read_text())["work_grid"] == [75, 100]
    with rasterio.open(src) as s, rasterio.open(out) as o:
        assert (o.transform, o.shape) == (s.transform, s.shape)
    coarse = _render(src, tmp_path / "c", model, output_resolution="model")
    with rasterio.open(coarse) as o:
        assert o.shape == (75, 100) and o.transform.a == pytest.approx(2.0)
    # chunking does not matter with resampling either
    again = _render(src, tmp_path / "d", model, tiles=TileConfig(256, 64, 128))
    assert np.array_equal(_pixels(out)[0], _pixels(again)[0])


@pytest.mark.parametrize("kind", ["nodata", "alpha"])
def test_nodata_and_alpha_become_the_output_mask(kind: str, checkpoint: Path, tmp_path: Path) -> None:
    kw = {"nodata": 0} if kind == "nodata" else {"alpha": True}
    src = synthetic_aerial(tmp_path / "in.tif", (300, 300), nodata_corner=True, **kw)
    _, mask = _pixels(_render(src, tmp_path / "o", checkpoint))
    assert (mask[:150, :150] == 0).all() and (mask[150:, 150:] == 255).all()


def test_uint16_input_renders(checkpoint: Path, tmp_path: Path) -> None:
    src = synthetic_aerial(tmp_path / "u16.tif", (200, 200), dtype="uint16")
    data, mask = _pixels(_render(src, tmp_path / "o", checkpoint))
    assert mask.all() and data.std() > 0


def test_tiny_raster_smaller_than_a_tile(checkpoint: Path, tmp_path: Path) -> None:
    src = synthetic_aerial(tmp_path / "tiny.tif", (20, 30))
    data, mask = _pixels(_render(src, tmp_path / "o", checkpoint))
    assert data.shape == (3, 20, 30) and mask.all()


def test_aoi_limits_the_output(aerial: Path, checkpoint: Path, tmp_path: Path) -> None:
    with rasterio.open(aerial) as s:
        b = s.bounds
    x0, y0 = b.left + 100, b.top - 300  # a 200 m × 100 m box (100 × 50 px)
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": "EPSG:32633"}},
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {
                            "type": "Polygon",
                            "coordinates": [[[x0, y0], [x0 + 200, y0], [x0 + 200, y0 + 100], [x0, y0 + 100], [x0, y0]]],
                        },
                    }
                ],
            }
        )
    )
    out = _render(aerial, tmp_path / "o", checkpoint, aoi=aoi)
    full = _render(aerial, tmp_path / "f", checkpoint)
    with rasterio.open(out) as o, rasterio.open(full) as f:
        assert o.shape == (50, 100)
        assert o.transform.c == pytest.approx(x0) and o.transform.f == pytest.approx(y0 + 100)
        win = f.window(*o.bounds)
        assert np.array_equal(o.read(), f.read(window=win))  # same pixels as the full render


def test_aoi_outside_the_raster_is_an_error(aerial: Path, checkpoint: Path, tmp_path: Path) -> None:
    aoi = tmp_path / "far.geojson"
    aoi.write_text(json.dumps({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}))
    with pytest.raises(errors.AOIError, match="does not overlap"):
        _render(aerial, tmp_path / "o", checkpoint, aoi=aoi)
    assert not (tmp_path / "o" / "map.tif").exists()


def test_official_layout_checkpoint_renders(aerial: Path, official_checkpoint: Path, tmp_path: Path) -> None:
    """The authors' .pth layout loads into the same network as our format: the same weights (seed 1)
    saved both ways, at the resolution a .pth is assumed to have, render the same pixels."""
    data, _ = _pixels(_render(aerial, tmp_path / "pth", official_checkpoint))
    from geopix.models.registry import load_model

    res = load_model(official_checkpoint).spec.ground_resolution_m  # the maps dataset's, assumed for a .pth
    ours = random_checkpoint(tmp_path / "ours.safetensors", ngf=4, seed=1, ground_resolution_m=res)
    same, _ = _pixels(_render(aerial, tmp_path / "ours", ours))
    assert np.array_equal(data, same) and data.std() > 0
    other, _ = _pixels(_render(aerial, tmp_path / "other", random_checkpoint(tmp_path / "o.safetensors", ngf=4)))
    assert not np.array_equal(data, other)  # the comparison can tell weights apart


def test_palette_head_renders_only_palette_colours(aerial: Path, tmp_path: Path) -> None:
    model = random_checkpoint(tmp_path / "p.safetensors", ngf=4, head="palette")
    data, _ = _pixels(_render(aerial, tmp_path / "o", model, tiles=TileConfig(256, 0, 512)))
    colours = {tuple(c) for c in data.reshape(3, -1).T}
    assert colours <= {(232, 229, 222), (255, 255, 255), (202, 223, 170), (176, 207, 254)}


# ---- bad input: one error each, and never a file under the final name -------------------------
def _bad(tmp_path: Path, name: str) -> Path:
    p = tmp_path / name
    p.write_text("this is not a raster")
    return p


@pytest.mark.parametrize(
    ("make", "kw", "error"),
    [
        (lambda t: t / "missing.tif", {}, errors.InputNotFoundError),
        (lambda t: _bad(t, "bad.tif"), {}, errors.NotARasterError),
        (lambda t: synthetic_aerial(t / "nocrs.tif", 64, crs=None), {}, errors.MissingCRSError),
        (lambda t: synthetic_aerial(t / "two.tif", 64, count=2), {}, errors.BandError),
        (lambda t: synthetic_aerial(t / "b.tif", 64), {"bands": (1, 2, 9)}, errors.BandError),
        (lambda t: synthetic_aerial(t / "f.tif", 64, dtype="float32"), {}, errors.DtypeError),
    ],
)
def test_bad_inputs(make, kw, error, checkpoint: Path, tmp_path: Path) -> None:
    src = make(tmp_path)
    with pytest.raises(error) as info_:
        _render(src, tmp_path / "o", checkpoint, **kw)
    assert str(src.name) in str(info_.value) or "--bands" in str(info_.value)
    assert not (tmp_path / "o" / "map.tif").exists()


def test_no_crs_allowed_on_request(checkpoint: Path, tmp_path: Path) -> None:
    src = synthetic_aerial(tmp_path / "nocrs.tif", 64, crs=None)
    with rasterio.open(_render(src, tmp_path / "o", checkpoint, allow_no_crs=True)) as o:
        assert o.crs is None


def test_existing_output_needs_overwrite(aerial: Path, checkpoint: Path, tmp_path: Path) -> None:
    _render(aerial, tmp_path, checkpoint)
    with pytest.raises(errors.OutputExistsError, match="--overwrite"):
        _render(aerial, tmp_path, checkpoint)
    _render(aerial, tmp_path, checkpoint, overwrite=True)


def test_unwritable_output(aerial: Path, checkpoint: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(errors.OutputNotWritableError):
        _render(aerial, blocker / "sub", checkpoint)


@pytest.mark.parametrize(
    ("tiles", "error"), [((128, 16, 512), errors.TilingError), ((256, 64, 64), errors.TilingError)]
)
def test_impossible_tilings(tiles, error, aerial: Path, checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(error):
        _render(aerial, tmp_path, checkpoint, tiles=TileConfig(*tiles))


def test_predict_folder_of_images(checkpoint: Path, tmp_path: Path) -> None:
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 410, 3), dtype=np.uint8)).save(src / "a.png")
    Image.fromarray(rng.integers(0, 255, (50, 60, 3), dtype=np.uint8)).save(src / "b.jpg")
    written = predict(src, tmp_path / "out", model=str(checkpoint), infer=InferConfig(batch_size=2))
    assert [p.name for p in written] == ["a.png", "b.png"]
    assert Image.open(written[0]).size == (410, 300) and Image.open(written[1]).size == (60, 50)


def test_info_describes_the_job(aerial: Path, checkpoint: Path) -> None:
    meta = info(aerial, str(checkpoint), TileConfig(256, 64, 1024))
    assert meta["size"] == [700, 600] and meta["crs"] == "EPSG:32633" and meta["tiles"] == 16
    # 2 m of UTM near its central meridian is 2 / 0.9996 m on the ground (read.ground_resolution).
    assert meta["ground_resolution_m"] == pytest.approx([2.0008, 2.0008], abs=1e-4)
    # the estimate comes from the generator's rate measured here, plus the render's overhead
    rate = meta["generator_tiles_per_second"]
    assert rate > 0
    assert meta["estimated_seconds"] == pytest.approx(estimated_seconds(16, rate), abs=0.1)
    assert estimated_seconds(16, rate) > 16 / rate
    assert info(aerial, None)["estimated_seconds"] is None  # no model: nothing to measure


def test_render_with_web_tiles(aerial: Path, checkpoint: Path, tmp_path: Path) -> None:
    from geopix.pipeline import RenderConfig as _Cfg

    result = render(
        _Cfg(
            input=aerial,
            output_dir=tmp_path,
            model=str(checkpoint),
            scheduler="sync",
            xyz=Path("tiles.mbtiles"),
        )
    )
    assert result.tiles_path == tmp_path / "tiles.mbtiles" and result.tiles_path.stat().st_size > 0
    assert "pyramid" in result.stage_seconds
    with pytest.raises(errors.OutputExistsError, match=r"tiles\.mbtiles"):
        render(
            _Cfg(
                input=aerial,
                output_dir=tmp_path / "x",
                model=str(checkpoint),
                scheduler="sync",
                xyz=Path("../tiles.mbtiles"),
            )
        )


@pytest.mark.parametrize("relative_model", [False, True], ids=["model-abs", "model-relative"])
def test_render_whose_web_tiles_failed_reruns_into_the_tiles(
    monkeypatch: pytest.MonkeyPatch, aerial: Path, checkpoint: Path, tmp_path: Path, relative_model: bool
) -> None:
    import geopix.pipeline as pipeline
    import geopix.pyramid as pyramid

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if relative_model:  # -m ./model.safetensors: render.json records the absolute path
        monkeypatch.chdir(checkpoint.parent)
    cfg = RenderConfig(
        input=aerial,
        output_dir=tmp_path,
        model=checkpoint.name if relative_model else str(checkpoint),
        scheduler="sync",
        xyz=Path("t.pmtiles"),
    )
    with monkeypatch.context() as m:
        m.setattr(pyramid, "build_pyramid", full_disk)
        with pytest.raises(OSError, match="No space"):
            render(cfg)
    first = json.loads((tmp_path / "render.json").read_text())
    assert (tmp_path / "map.tif").exists() and first["web_tiles"]["done"] is False
    map_bytes = (tmp_path / "map.tif").read_bytes()
    # the same command again: no "already exists", no block recomputed, only the tiles built
    monkeypatch.setattr(pipeline, "compute", lambda *a, **k: pytest.fail("the map was rendered again"))
    result = render(cfg)
    assert result.tiles_path == tmp_path / "t.pmtiles" and result.tiles_path.stat().st_size > 0
    assert json.loads((tmp_path / "render.json").read_text())["web_tiles"]["done"] is True
    assert (tmp_path / "map.tif").read_bytes() == map_bytes and result.tiles == first["tiles"]
    with pytest.raises(errors.OutputExistsError):  # finished: a third run refuses as before
        render(cfg)


def test_outputs_get_the_umask_mode(aerial: Path, checkpoint: Path, tmp_path: Path) -> None:
    """map.tif, render.json and web tiles are 0644 under the usual umask (readable by other users)."""
    import os
    import stat

    umask = os.umask(0o022)
    try:
        _render(aerial, tmp_path, checkpoint, xyz=Path("t.mbtiles"))
    finally:
        os.umask(umask)
    for name in ("map.tif", "render.json", "t.mbtiles"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_interrupted_render_resumes_and_matches(
    ctrl_c_after_three_blocks, aerial: Path, checkpoint: Path, tmp_path: Path
) -> None:
    reference = _pixels(_render(aerial, tmp_path / "ref", checkpoint, tiles=TileConfig(256, 64, 256)))
    with ctrl_c_after_three_blocks(), pytest.raises(errors.Interrupted, match="3 of 9 blocks are finished"):
        _render(aerial, tmp_path / "o", checkpoint, tiles=TileConfig(256, 64, 256))
    assert not (tmp_path / "o" / "map.tif").exists()
    # a different setting must not reuse the unfinished store
    with pytest.raises(errors.ResumeError, match="--force"):
        _render(aerial, tmp_path / "o", checkpoint, tiles=TileConfig(256, 32, 256))
    result = render(
        RenderConfig(
            input=aerial,
            output_dir=tmp_path / "o",
            model=str(checkpoint),
            tiles=TileConfig(256, 64, 256),
            scheduler="sync",
        )
    )
    assert result.blocks_resumed == 3 and result.blocks == 9
    got = _pixels(tmp_path / "o" / "map.tif")
    assert np.array_equal(got[0], reference[0]) and np.array_equal(got[1], reference[1])


# ---- issue 26 case 13: an interrupt counts from the store and says how to go on ---------------
def test_an_interrupt_counts_the_finished_blocks_from_the_store(
    aerial: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two blocks written by workers whose results had not come back yet: "2 of 9", and the rerun resumes 2."""
    import geopix.pipeline as pipeline

    def two_then_ctrl_c(fn, args, blocks, on_done, client, label):  # on_done never runs: results in flight
        for block in list(blocks)[:2]:
            fn(*args, block)
        raise KeyboardInterrupt

    tiles = TileConfig(256, 64, 256)
    with monkeypatch.context() as m:
        m.setattr(pipeline, "run_tasks", two_then_ctrl_c)
        with pytest.raises(errors.Interrupted, match="2 of 9 blocks are finished"):
            _render(aerial, tmp_path / "o", checkpoint, tiles=tiles)
    result = render(
        RenderConfig(input=aerial, output_dir=tmp_path / "o", model=str(checkpoint), tiles=tiles, scheduler="sync")
    )
    assert result.blocks_resumed == 2


def test_an_interrupt_while_finalizing_says_what_is_kept_and_how_to_go_on(
    aerial: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import geopix.pipeline as pipeline

    def ctrl_c(*_a: object, **_k: object) -> None:
        raise KeyboardInterrupt

    tiles = TileConfig(256, 64, 256)
    with monkeypatch.context() as m:
        m.setattr(pipeline, "finalize_geotiff", ctrl_c)
        with pytest.raises(errors.Interrupted, match=r"all 9 blocks are finished in .*rerun the same command") as err:
            _render(aerial, tmp_path / "o", checkpoint, tiles=tiles)
    assert "map.tif (not written)" in str(err.value) and not (tmp_path / "o" / "map.tif").exists()
    result = render(
        RenderConfig(input=aerial, output_dir=tmp_path / "o", model=str(checkpoint), tiles=tiles, scheduler="sync")
    )
    assert result.blocks_resumed == 9 and (tmp_path / "o" / "map.tif").exists()


# ---- issue 26 case 14: an empty result is a warning; a long plan is announced first ---------
def test_a_fully_masked_input_is_a_warning_with_its_own_exit_code(checkpoint: Path, tmp_path: Path, capsys) -> None:
    from geopix.cli import main

    src = synthetic_aerial(tmp_path / "masked.tif", (200, 200), alpha=True)
    with rasterio.open(src, "r+") as ds:
        ds.write(np.zeros((200, 200), np.uint8), 4)  # alpha 0 everywhere: nothing to map
    out = tmp_path / "o"
    code = main(["render", str(src), "-o", str(out), "-m", str(checkpoint), "--scheduler", "sync", "--no-progress"])
    err = capsys.readouterr().err
    assert code == errors.EmptyResultWarning.exit_code == 37
    assert "warning:" in err and "is empty (all transparent)" in err and (out / "map.tif").exists()


def test_a_long_plan_is_announced_before_the_first_slow_step(
    aerial: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    import logging

    import geopix.pipeline as pipeline

    real_compute, seen = pipeline.compute, []

    def compute(*a, **k):  # the overview read, the cluster start and the blocks all come after this
        seen.append([r.getMessage() for r in caplog.records if r.getMessage().startswith("plan:")])
        return real_compute(*a, **k)

    monkeypatch.setattr(pipeline, "compute", compute)
    monkeypatch.setattr(pipeline, "ANNOUNCE_TILES", 1)
    with caplog.at_level(logging.INFO, logger="geopix"):
        _render(aerial, tmp_path / "o", checkpoint, tiles=TileConfig(256, 64, 256))
    assert len(seen) == 1 and len(seen[0]) == 1
    assert re.match(r"plan: 9 blocks, \d+ tiles .* at most about \d+ (s|min|h) at this machine's", seen[0][0])
    monkeypatch.setattr(pipeline, "ANNOUNCE_TILES", 10**9)  # a short plan: quiet
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="geopix"):
        _render(aerial, tmp_path / "o2", checkpoint, tiles=TileConfig(256, 64, 256))
    assert not any(r.getMessage().startswith("plan:") for r in caplog.records)


def test_the_colour_statistics_are_read_while_the_model_loads(
    aerial: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading the model imports torch (0.9 s); the statistics' read (GDAL, no GIL) runs meanwhile,
    and the map is the one reading them afterwards gives (the matching is the same arithmetic)."""
    import threading

    import geopix.models.registry
    import geopix.pipeline
    from geopix.models.registry import load_model

    stats = load_model("sat2map").spec.input_stats
    model = random_checkpoint(tmp_path / "stats.safetensors", ngf=4, input_stats=stats)
    started = threading.Event()
    real_statistics, real_load = geopix.pipeline.colour_statistics, geopix.models.registry.load_model

    def statistics(info, stop):
        started.set()
        return real_statistics(info, stop)

    def load(name):
        assert started.wait(10), "the statistics were not being read when the model loaded"
        return real_load(name)

    monkeypatch.setattr(geopix.pipeline, "colour_statistics", statistics)
    monkeypatch.setattr(geopix.models.registry, "load_model", load)
    overlapped = _render(aerial, tmp_path / "a", model)
    monkeypatch.setattr(geopix.pipeline, "_read_statistics", lambda config, info: None)  # read in compute
    monkeypatch.setattr(geopix.models.registry, "load_model", real_load)
    monkeypatch.setattr(geopix.pipeline, "colour_statistics", real_statistics)
    monkeypatch.setattr(geopix.pipeline, "colour_match", _counted(calls := []))
    after = _render(aerial, tmp_path / "b", model)
    assert calls == [None]  # compute matched them itself: the comparison is against the old path
    assert overlapped.read_bytes() == after.read_bytes()


def _counted(calls: list):
    from geopix.read import colour_match

    def match(info, target, statistics=None):
        calls.append(statistics)
        return colour_match(info, target, statistics)

    return match


def test_importing_the_pipeline_does_not_import_torch() -> None:
    """So a render's statistics read can overlap torch's import (the test above)."""
    import subprocess
    import sys

    code = "import sys, geopix.pipeline; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_a_render_that_fails_while_the_statistics_are_read_stops_the_read(
    aerial: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint that cannot be loaded fails the render at once; the statistics' read started
    before it is told to stop (on a huge raster it would otherwise keep the process for minutes)."""
    import geopix.pipeline

    reads = []
    real = geopix.pipeline._read_statistics

    def statistics(info, stop):
        assert stop.wait(10), "never told to stop"
        raise InterruptedError

    def started(config, info):
        reads.append(real(config, info))
        return reads[-1]

    monkeypatch.setattr(geopix.pipeline, "colour_statistics", statistics)
    monkeypatch.setattr(geopix.pipeline, "_read_statistics", started)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(errors.CheckpointError):
        _render(aerial, tmp_path / "out", broken)
    assert len(reads) == 1
    with pytest.raises(InterruptedError):
        reads[0].future.result(timeout=5)


def test_the_statistics_read_ends_at_the_next_cell_once_stopped(tmp_path: Path) -> None:
    import threading

    from geopix.read import colour_statistics, inspect_raster

    path = synthetic_aerial(tmp_path / "a.tif", size=2048)
    info = inspect_raster(str(path))
    stop = threading.Event()
    assert len(colour_statistics(info, stop)) == 3
    stop.set()
    with pytest.raises(InterruptedError):
        colour_statistics(info, stop)


def test_a_model_without_colour_statistics_stops_the_read(
    aerial: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read starts before the model is known; a model with nothing to match stops it."""
    import geopix.pipeline

    reads = []
    real = geopix.pipeline._read_statistics

    def statistics(info, stop):
        assert stop.wait(10), "never told to stop"
        raise InterruptedError

    monkeypatch.setattr(geopix.pipeline, "colour_statistics", statistics)
    monkeypatch.setattr(geopix.pipeline, "_read_statistics", lambda c, i: reads.append(real(c, i)) or reads[-1])
    _render(aerial, tmp_path / "out", checkpoint)  # `checkpoint`: no input statistics
    assert len(reads) == 1
    with pytest.raises(InterruptedError):
        reads[0].future.result(timeout=5)


def test_a_block_whose_border_tiles_its_neighbours_predicted_reads_only_its_own_pixels(
    aerial: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GDAL decodes every source tile a read touches: the halo of a block's border tiles is most
    of its read.  Blocks of the second checkerboard colour find those tiles predicted, so they
    read their output window alone, and the map is the one every block reading it all gives."""
    import geopix.execute as execute
    from geopix.plan import Window
    from geopix.read import WorkReader

    whole = _pixels(_render(aerial, tmp_path / "whole", checkpoint))  # reference: before the spy
    reads: list = []
    real_read = WorkReader.read
    monkeypatch.setattr(WorkReader, "read", lambda self, window: reads.append(window) or real_read(self, window))
    real_block = execute.process_block
    blocks: list = []
    monkeypatch.setattr(execute, "process_block", lambda job, block: blocks.append(block) or real_block(job, block))
    out = _render(aerial, tmp_path / "spied", checkpoint)
    assert len(blocks) == len(reads) == 4
    grid = Window(0, 0, *json.loads((tmp_path / "spied" / "render.json").read_text())["work_grid"])
    for block, window in zip(blocks, reads, strict=True):
        if sum(block.index) % 2 == 0:  # the first colour: the tiles it shares are its to predict
            assert window == block.read, block.index
        else:  # its own tiles only (the edge's reflected halo aside), where it used to read them all
            assert window.intersection(grid).intersection(block.work) == window.intersection(grid), block.index
            assert block.read.intersection(grid).intersection(block.work) != block.read.intersection(grid)
    got = _pixels(out)
    assert np.array_equal(got[0], whole[0]) and np.array_equal(got[1], whole[1])
