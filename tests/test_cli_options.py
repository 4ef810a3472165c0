"""Documented CLI options, each run through the CLI and checked by its effect (not only exit 0)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import torch
from PIL import Image

from geopix import errors, style
from geopix.cli import main
from geopix.config import InferConfig, RenderConfig, TileConfig
from geopix.images import predict
from geopix.models.registry import load_model
from geopix.pipeline import render
from geopix.testing import random_checkpoint, synthetic_aerial, synthetic_maps_dataset
from tests.test_cli import map_pixels
from tests.test_source import _stac_item
from tests.test_vectors import write_geojson

QUIET = ["--scheduler", "sync", "--no-progress"]
#: Added to the environment at each call: a copy taken at import would miss what session fixtures
#: set (GEOPIX_CACHE_DIR), and the children built int8 models in the user's cache.
CHILD_ENV = {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _cli_render(src: Path | str, out: Path, model: Path, *extra: str) -> int:
    return main(["render", str(src), "-o", str(out), "--model", str(model), *QUIET, *extra])


def _lib_render(src: Path, out: Path, model: Path, **kw: object) -> Path:
    kw.setdefault("tiles", TileConfig())
    return render(RenderConfig(input=src, output_dir=out, model=str(model), scheduler="sync", **kw)).map_path


# ---- render ------------------------------------------------------------------------------------------
def test_render_keep_zarr_keeps_the_block_store_of_the_map(aerial: Path, checkpoint: Path, tmp_path: Path) -> None:
    import zarr

    assert _cli_render(aerial, tmp_path / "plain", checkpoint) == 0
    assert not (tmp_path / "plain" / "map.zarr").exists()
    assert _cli_render(aerial, tmp_path / "kept", checkpoint, "--keep-zarr") == 0
    store = zarr.open(str(tmp_path / "kept" / "map.zarr"), mode="r")
    arrays = dict(store.arrays()) if hasattr(store, "arrays") else {"": store}
    with rasterio.open(tmp_path / "kept" / "map.tif") as m:
        rgb = m.read()
    # the kept store holds the map's pixels (the blended, unclipped-to-the-AOI blocks)
    assert any(a.shape[-2:] == rgb.shape[-2:] or a.shape[:2] == rgb.shape[-2:] for a in arrays.values())
    manifest = json.loads((tmp_path / "kept" / "render.json").read_text())
    assert manifest["store"] == str(tmp_path / "kept" / "map.zarr")


def test_render_force_discards_an_unfinished_render_of_another_job(
    ctrl_c_after_three_blocks, aerial: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out, chunk = tmp_path / "o", ["--chunk-size", "256"]
    with ctrl_c_after_three_blocks():
        assert _cli_render(aerial, out, checkpoint, *chunk, "--overlap", "64") == 128 + signal.SIGINT
    assert (out / "map.zarr").exists() and not (out / "map.tif").exists()
    # another setting: refused (the unfinished blocks are of another job) ...
    assert _cli_render(aerial, out, checkpoint, *chunk, "--overlap", "32") == errors.ResumeError.exit_code
    assert "--force" in capsys.readouterr().err
    # ... unless --force: then it starts afresh and none of the old blocks is reused
    assert _cli_render(aerial, out, checkpoint, *chunk, "--overlap", "32", "--force") == 0
    assert json.loads((out / "render.json").read_text())["blocks_resumed"] == 0
    fresh = _lib_render(aerial, tmp_path / "fresh", checkpoint, tiles=TileConfig(256, 32, 256))
    assert map_pixels(out / "map.tif") == map_pixels(fresh)


def test_render_precision_fp16(aerial: Path, checkpoint: Path, tmp_path: Path) -> None:
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            torch.nn.functional.conv2d(torch.ones(1, 3, 8, 8), torch.ones(4, 3, 3, 3))
    except RuntimeError as exc:  # torch builds without fp16 CPU kernels
        pytest.skip(f"this torch cannot run fp16 convolutions on the CPU: {exc}")
    assert _cli_render(aerial, tmp_path / "h", checkpoint, "--precision", "fp16", "--device", "cpu") == 0
    assert json.loads((tmp_path / "h" / "render.json").read_text())["precision"] == "fp16"
    fp32 = _lib_render(aerial, tmp_path / "f", checkpoint, infer=InferConfig(device="cpu", precision="fp32"))
    with rasterio.open(tmp_path / "h" / "map.tif") as h, rasterio.open(fp32) as f:
        half, full = h.read().astype(int), f.read().astype(int)
    assert np.abs(half - full).mean() < 1.0  # the same map ...
    assert not np.array_equal(half, full)  # ... computed in half precision


def test_render_asset_picks_that_asset_of_a_stac_item(checkpoint: Path, tmp_path: Path) -> None:
    visual = synthetic_aerial(tmp_path / "visual.tif", 256, seed=0)
    other = synthetic_aerial(tmp_path / "other.tif", 256, seed=1)
    item = _stac_item(tmp_path / "item.json", {"visual": (str(visual), ["visual"]), "other": (str(other), ["data"])})
    assert _cli_render(item, tmp_path / "v", checkpoint) == 0
    assert _cli_render(item, tmp_path / "o", checkpoint, "--asset", "other") == 0
    assert map_pixels(tmp_path / "v" / "map.tif") == map_pixels(_lib_render(visual, tmp_path / "lv", checkpoint))
    assert map_pixels(tmp_path / "o" / "map.tif") == map_pixels(_lib_render(other, tmp_path / "lo", checkpoint))
    assert map_pixels(tmp_path / "o" / "map.tif") != map_pixels(tmp_path / "v" / "map.tif")


def test_render_aoi_limits_the_output(aerial: Path, checkpoint: Path, tmp_path: Path) -> None:
    with rasterio.open(aerial) as src:
        left, top = src.bounds.left, src.bounds.top
    # a right triangle, 400 m × 700 m, in the raster's CRS (metres)
    tri = shapely.Polygon([(left + 100, top - 300), (left + 500, top - 300), (left + 100, top - 1000)])
    aoi = write_geojson(tmp_path / "aoi.geojson", [tri], crs="EPSG:32633")
    assert _cli_render(aerial, tmp_path / "cli", checkpoint, "--aoi", str(aoi)) == 0
    lib = _lib_render(aerial, tmp_path / "lib", checkpoint, aoi=aoi)
    assert map_pixels(tmp_path / "cli" / "map.tif") == map_pixels(lib)
    with rasterio.open(tmp_path / "cli" / "map.tif") as m:
        assert (m.width, m.height) == (200, 350) and tuple(m.bounds) == pytest.approx(tri.bounds)  # cut to the AOI
        valid = m.dataset_mask() > 0
    assert valid.mean() == pytest.approx(0.5, abs=0.01)  # ... and masked outside the triangle
    assert valid[0, 0] and valid[-20, 0] and valid[0, -20] and not valid[-1, -1] and not valid[-20, -20]


def test_render_no_match_colors(aerial: Path, tmp_path: Path) -> None:
    model = random_checkpoint(tmp_path / "s.safetensors", ngf=4, input_stats=((60.0, 40.0), (63.0, 39.0), (58.0, 40.0)))
    assert _cli_render(aerial, tmp_path / "matched", model) == 0
    assert _cli_render(aerial, tmp_path / "raw", model, "--no-match-colors") == 0
    raw = _lib_render(aerial, tmp_path / "lib", model, match_colors=False)
    assert map_pixels(tmp_path / "raw" / "map.tif") == map_pixels(raw)
    assert map_pixels(tmp_path / "matched" / "map.tif") != map_pixels(raw)


# ---- predict -----------------------------------------------------------------------------------------
def test_predict_maps_a_folder_of_images(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "in").mkdir()
    for name, shape in (("a.png", (300, 200, 3)), ("b.jpg", (130, 257, 3))):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(tmp_path / "in" / name)
    code = main(["predict", str(tmp_path / "in"), str(tmp_path / "cli"), "--model", str(checkpoint), "--device", "cpu"])
    assert code == 0 and "2 images written" in capsys.readouterr().out
    tiles = TileConfig(256, TileConfig().overlap, 1024)
    predict(tmp_path / "in", tmp_path / "lib", model=str(checkpoint), tiles=tiles, infer=InferConfig(device="cpu"))
    for stem, (h, w) in (("a", (300, 200)), ("b", (130, 257))):
        got = np.asarray(Image.open(tmp_path / "cli" / f"{stem}.png"))
        assert got.shape == (h, w, 3) and got.std() > 0
        assert np.array_equal(got, np.asarray(Image.open(tmp_path / "lib" / f"{stem}.png")))


# ---- dataset vectors: --map and --covers ---------------------------------------------------------------
X0, Y0 = 500000.0, 5300000.0


@pytest.fixture(scope="module")
def field_layer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 256 px aerial (2 m/px) and a layer whose ``kind`` field says Building or Forest."""
    folder = tmp_path_factory.mktemp("vec")
    raster = synthetic_aerial(folder / "a.tif", 256, res=2.0, origin=(X0, Y0))
    boxes = [shapely.box(X0 + 40 + 60 * i, Y0 - 200, X0 + 80 + 60 * i, Y0 - 160) for i in range(6)]
    kinds = [{"kind": "Building"}, {"kind": "Forest"}] * 3
    return raster, write_geojson(folder / "f.geojson", boxes, kinds, crs="EPSG:32633")


def _pairs(field_layer: tuple[Path, Path], out: Path, *extra: str) -> int:
    raster, layer = field_layer
    args = ["dataset", "vectors", str(out), "--raster", str(raster), "--layer", f"{layer}:kind", "--tile", "128"]
    return main([*args, "--model", str(random_checkpoint(out.parent / "m.safetensors")), *extra])


def _stack(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.iterdir())])


def test_dataset_vectors_map_values_to_classes(field_layer, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    park = np.array(style.CLASSES[style.CLASS_NAMES.index("park")].colour)
    assert _pairs(field_layer, tmp_path / "plain") == 0
    assert "kind=Forest" in capsys.readouterr().err  # an unknown value, left unlabelled
    assert not (_stack(tmp_path / "plain" / "B") == park).all(-1).any()
    assert _pairs(field_layer, tmp_path / "mapped", "--map", "Forest=park") == 0
    assert "park" in capsys.readouterr().out.split("covers", 1)[1].split(";")[0]
    assert (_stack(tmp_path / "mapped" / "B") == park).all(-1).sum() >= 3 * 20 * 20 * 0.9  # 3 forests, 20×20 px
    for bad in ("Forest", "=park"):  # VALUE=CLASS, both parts
        assert _pairs(field_layer, tmp_path / "bad", "--map", bad) == errors.GeopixError.exit_code
        assert f"--map {bad!r} must be VALUE=CLASS" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_dataset_vectors_covers_says_what_the_layers_label_completely(
    field_layer, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    water = 1 << style.CLASS_NAMES.index("water")
    assert _pairs(field_layer, tmp_path / "default") == 0
    assert "covers building;" in capsys.readouterr().out
    assert _pairs(field_layer, tmp_path / "covers", "--covers", "building,water") == 0
    assert "covers building, water;" in capsys.readouterr().out
    default, covers = _stack(tmp_path / "default" / "M"), _stack(tmp_path / "covers" / "M")
    background = (default != 0) & (default & (1 << style.CLASS_NAMES.index("building")) == 0)
    assert background.any()
    # with water declared complete, unlabelled ground may no longer be water; elsewhere nothing changes
    assert (default[background] & water).all() and not (covers[background] & water).any()
    assert np.array_equal(default[~background], covers[~background])


# ---- export --------------------------------------------------------------------------------------------
def test_export_input_stats_and_direction(checkpoint: Path, tmp_path: Path) -> None:
    from geopix.data.pairs import find_pairs, input_statistics

    data = synthetic_maps_dataset(tmp_path / "maps", n_train=2, n_val=1, size=256)
    pairs = find_pairs(data, "train")
    assert main(["export", str(checkpoint), str(tmp_path / "a.safetensors"), "--input-stats", str(data)]) == 0
    a = load_model(tmp_path / "a.safetensors").spec
    assert a.direction == "AtoB" and a.input_stats == input_statistics(pairs, "AtoB")
    args = ["export", str(checkpoint), str(tmp_path / "b.safetensors"), "--input-stats", str(data)]
    assert main([*args, "--direction", "BtoA"]) == 0
    b = load_model(tmp_path / "b.safetensors").spec
    assert b.direction == "BtoA" and b.input_stats == input_statistics(pairs, "BtoA") != a.input_stats


# ---- train ---------------------------------------------------------------------------------------------
TINY = ["--ngf", "4", "--ndf", "4", "--batch-size", "2", "--threads", "1", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def maps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_maps_dataset(tmp_path_factory.mktemp("maps"), n_train=4, n_val=1, size=256)


def test_train_save_every(maps: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from geopix.train import Trainer

    saved: list[int] = []
    real_save = Trainer.save

    def spy(self: Trainer) -> None:
        saved.append(self.state.epoch)
        real_save(self)

    monkeypatch.setattr(Trainer, "save", spy)
    run = ["train", str(maps), *TINY, "--epochs", "3", "--epochs-decay", "2"]
    assert main([*run, "--run-dir", str(tmp_path / "every"), "--save-every", "2"]) == 0
    assert saved == [2, 4, 5]  # every second epoch, and the last
    saved.clear()
    assert main([*run, "--run-dir", str(tmp_path / "each")]) == 0
    assert saved == [1, 2, 3, 4, 5]


def test_train_lambda_l1(maps: Path, tmp_path: Path) -> None:
    run = ["train", str(maps), *TINY, "--epochs", "1", "--epochs-decay", "0"]
    assert main([*run, "--run-dir", str(tmp_path / "default")]) == 0
    assert main([*run, "--run-dir", str(tmp_path / "l1"), "--lambda-l1", "5"]) == 0
    a, b = (load_model(tmp_path / r / "generator.safetensors") for r in ("default", "l1"))
    assert json.loads(b.spec.training)["config"]["lambda_l1"] == 5.0
    assert json.loads(a.spec.training)["config"]["lambda_l1"] == 100.0
    # the same seed and data: only the loss weight differs, and so do the weights it trained
    assert any(not torch.equal(x, y) for x, y in zip(a.net.parameters(), b.net.parameters(), strict=True))


# ---- serve and demo ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _served(args: list[str], marker: str, log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run ``geopix ARGS`` until it prints ``marker`` and a URL; yield the URL; then Ctrl-C it."""
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "geopix", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**os.environ, **CHILD_ENV},
        )
    try:
        for line in proc.stdout:  # ends when the process does (a failed start)
            if marker in line and "http://" in line:
                url = "http://" + line.split("http://", 1)[1].split()[0]
                yield url, proc
                return
        raise AssertionError(f"geopix {args[0]} exited {proc.wait()} without serving:\n{log.read_text()[-3000:]}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()


def _get(url: str, host: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def test_serve_host_listens_on_that_interface(tmp_path: Path) -> None:
    from geopix.pyramid import PyramidConfig, build_pyramid
    from tests.test_pyramid import make_map

    tiles = build_pyramid(make_map(tmp_path / "map.tif"), tmp_path / "t.pmtiles", PyramidConfig(), scheduler="sync")
    host = "127.0.0.2"  # loopback too, but not the default 127.0.0.1
    with socket.socket() as s:
        try:
            s.bind((host, 0))
        except OSError as exc:  # macOS has only 127.0.0.1 unless aliased
            pytest.skip(f"cannot listen on {host} here ({exc.strerror})")
    args = ["serve", str(tiles.path), "--host", host, "--port", "0", "--allowed-host", host]
    with _served(args, " at ", tmp_path / "serve.log") as (url, _):
        assert url.startswith(f"http://{host}:")
        status, body = _get(url + "tilejson.json")
        assert status == 200 and json.loads(body)["maxzoom"] == tiles.maxzoom
        port = url.rsplit(":", 1)[1].strip("/")
        with pytest.raises(urllib.error.URLError):  # nothing listens on the default interface
            urllib.request.urlopen(f"http://127.0.0.1:{port}/tilejson.json", timeout=10)


def test_tiles_dashboard_is_served_and_announced_only_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_pyramid import make_map

    src = make_map(tmp_path / "map.tif")
    for name, flags in (("plain", []), ("dash", ["--dashboard"])):
        assert main(["tiles", str(src), str(tmp_path / f"{name}.pmtiles"), "--no-progress", *flags]) == 0
        err = capsys.readouterr().err
        assert (err.count("Dask dashboard: http://127.0.0.1:") == 1) is bool(flags), err


def test_demo_serves_its_map_in_the_viewer(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    args = ["demo", "-o", str(out), "--model", str(checkpoint), "--workers", "1", "--no-progress", "--port", "0"]
    with _served(args, "viewer:", tmp_path / "demo.log") as (url, proc):
        status, page = _get(url)
        assert status == 200 and b"<html" in page.lower()
        status, body = _get(url + "tilejson.json")
        tj = json.loads(body)
        assert status == 200 and "from nairobi_oam.tif" in tj["attribution"]
        z, x, y = tj["maxzoom"], *_centre_tile(tj)
        status, png = _get(_tile_url(tj, z, x, y))
        assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
    assert proc.returncode in (0, 128 + signal.SIGINT)  # Ctrl-C stops the viewer cleanly
    assert (out / "map.tif").exists() and (out / "tiles.pmtiles").exists()


def _centre_tile(tj: dict) -> tuple[int, int]:
    import mercantile

    lon, lat = (tj["bounds"][0] + tj["bounds"][2]) / 2, (tj["bounds"][1] + tj["bounds"][3]) / 2
    t = mercantile.tile(lon, lat, tj["maxzoom"])
    return t.x, t.y


def _tile_url(tj: dict, z: int, x: int, y: int) -> str:
    return tj["tiles"][0].replace("{z}", str(z)).replace("{x}", str(x)).replace("{y}", str(y))
