"""Renders whose input and output are URLs, against real servers on 127.0.0.1: byte-identical
to the local render; STAC Items and mosaics; an interrupted render into a bucket resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geopix.config import RenderConfig, TileConfig
from geopix.pipeline import render
from tests.test_source import _stac_item, split_2x2

TILES = TileConfig(256, 64, 256)


def _render(src: str | Path, out: str | Path, model: Path, **kw) -> object:
    kw.setdefault("scheduler", "sync")
    return render(RenderConfig(input=src, output_dir=out, model=str(model), tiles=TILES, **kw))


@pytest.fixture(scope="module")
def reference(aerial: Path, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local render every remote one must equal."""
    out = tmp_path_factory.mktemp("ref")
    _render(aerial, out, checkpoint)
    return out / "map.tif"


@pytest.fixture(scope="module")
def served(http_root: Path, aerial: Path) -> str:
    """The aerial under its own name on the HTTP server (the name goes into the map's tags)."""
    shutil.copy(aerial, http_root / aerial.name)
    return aerial.name


def _pixels(path) -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(path) as ds:
        return ds.read(), ds.dataset_mask()


def _s3_bytes(url: str) -> bytes:
    from geopix.remote import filesystem

    fs, path = filesystem(url)
    return fs.cat_file(path)


def test_http_input_renders_byte_identical(http_server, served: str, checkpoint: Path, reference: Path, tmp_path):
    http_server.reset_counts()
    _render(f"{http_server.url}/{served}", tmp_path, checkpoint)
    assert (tmp_path / "map.tif").read_bytes() == reference.read_bytes()
    assert http_server.requests > 0
    manifest = json.loads((tmp_path / "render.json").read_text())
    assert manifest["input"] == f"/vsicurl/{http_server.url}/{served}"


def test_s3_input_renders_byte_identical(s3_bucket: str, aerial: Path, checkpoint: Path, reference: Path, tmp_path):
    from geopix.testservers import upload_to_s3

    upload_to_s3(aerial, f"s3://{s3_bucket}/in/{aerial.name}")
    _render(f"s3://{s3_bucket}/in/{aerial.name}", tmp_path, checkpoint)
    assert (tmp_path / "map.tif").read_bytes() == reference.read_bytes()


def test_s3_output_is_byte_identical_and_leaves_no_store(
    s3_bucket: str, aerial: Path, checkpoint: Path, reference: Path
) -> None:
    from geopix.remote import filesystem

    result = _render(aerial, f"s3://{s3_bucket}/run1", checkpoint, scheduler=None)
    assert result.map_path == f"s3://{s3_bucket}/run1/map.tif"
    assert _s3_bytes(result.map_path) == reference.read_bytes()
    fs, _ = filesystem(f"s3://{s3_bucket}")
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{s3_bucket}/run1"))
    assert names == ["map.tif", "render.json"]  # the block store is gone, nothing partial left


def test_s3_output_refuses_to_clobber(s3_bucket: str, aerial: Path, checkpoint: Path) -> None:
    from geopix.errors import OutputExistsError
    from geopix.remote import filesystem

    fs, _ = filesystem(f"s3://{s3_bucket}")
    fs.pipe_file(f"{s3_bucket}/taken/map.tif", b"old")
    with pytest.raises(OutputExistsError, match=f"s3://{s3_bucket}/taken/map.tif"):
        _render(aerial, f"s3://{s3_bucket}/taken", checkpoint)
    assert fs.cat_file(f"{s3_bucket}/taken/map.tif") == b"old"


def test_missing_output_bucket(s3_endpoint: str, aerial: Path, checkpoint: Path) -> None:
    from geopix.errors import OutputNotWritableError

    with pytest.raises(OutputNotWritableError, match="no-such-bucket"):
        _render(aerial, "s3://no-such-bucket/run", checkpoint)


def test_interrupted_s3_render_resumes(
    ctrl_c_after_three_blocks, s3_bucket: str, aerial: Path, checkpoint: Path, reference: Path
) -> None:
    from geopix.errors import Interrupted
    from geopix.remote import exists

    url = f"s3://{s3_bucket}/resume"
    with ctrl_c_after_three_blocks(), pytest.raises(Interrupted, match=f"3 of 9 blocks are finished in {url}/map.zarr"):
        _render(aerial, url, checkpoint)
    assert not exists(f"{url}/map.tif")  # nothing under the final key
    assert exists(f"{url}/map.zarr/zarr.json")
    result = _render(aerial, url, checkpoint)
    assert result.blocks_resumed == 3 and result.blocks == 9
    assert _s3_bytes(f"{url}/map.tif") == reference.read_bytes()


def test_stac_item_renders(http_server, served: str, http_root: Path, checkpoint: Path, reference: Path, tmp_path):
    _stac_item(http_root / "scene.json", {"visual": (f"./{served}", ["visual"])})
    _render(f"{http_server.url}/scene.json", tmp_path, checkpoint)
    assert (tmp_path / "map.tif").read_bytes() == reference.read_bytes()


def test_mosaic_renders_like_the_merged_file(aerial: Path, checkpoint: Path, reference: Path, tmp_path: Path) -> None:
    quarters = split_2x2(aerial, tmp_path / "q")
    _render(tuple(str(p) for p in quarters), tmp_path / "m", checkpoint)
    got, want = _pixels(tmp_path / "m" / "map.tif"), _pixels(reference)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    with rasterio.open(tmp_path / "m" / "map.tif") as m, rasterio.open(reference) as r:
        assert (m.crs, m.transform, m.profile["blockxsize"]) == (r.crs, r.transform, r.profile["blockxsize"])
        assert m.tags()["GEOPIX_SOURCE"] == "mosaic.vrt"


def test_s3_output_with_web_tiles(
    s3_bucket: str, aerial: Path, checkpoint: Path, reference: Path, tmp_path: Path
) -> None:
    """The archive in the bucket is the one the local map gives, byte for byte, beside the map itself."""
    from geopix.pyramid import PyramidConfig, build_pyramid

    result = _render(aerial, f"s3://{s3_bucket}/tiles", checkpoint, xyz=Path("map.pmtiles"))
    assert result.tiles_path == f"s3://{s3_bucket}/tiles/map.pmtiles"
    local = build_pyramid(reference, tmp_path / "local.pmtiles", PyramidConfig(), scheduler="sync")
    assert local.tiles > 0 and _s3_bytes(result.tiles_path) == (tmp_path / "local.pmtiles").read_bytes()
    assert _s3_bytes(f"s3://{s3_bucket}/tiles/map.tif") == reference.read_bytes()


def test_signed_url_query_is_not_stored(http_server, served: str, checkpoint: Path, tmp_path: Path) -> None:
    # the test server ignores the query; a real one would check the signature
    url = f"{http_server.url}/{served}?X-Amz-Signature=s3cr3tsig&X-Amz-Expires=60"
    _render(url, tmp_path, checkpoint)
    manifest = (tmp_path / "render.json").read_text()
    assert "s3cr3tsig" not in manifest and "X-Amz-Signature=***" in manifest


def test_tiles_from_a_remote_map(http_server, http_root: Path, reference: Path, tmp_path: Path) -> None:
    from geopix.pyramid import PyramidConfig, build_pyramid

    (http_root / "out").mkdir(exist_ok=True)
    shutil.copy(reference, http_root / "out" / "map.tif")
    local = build_pyramid(reference, tmp_path / "local.pmtiles", PyramidConfig(), scheduler="sync")
    remote = build_pyramid(
        f"{http_server.url}/out/map.tif", tmp_path / "remote.pmtiles", PyramidConfig(), scheduler="sync"
    )
    assert remote.tiles == local.tiles > 0
    assert (tmp_path / "remote.pmtiles").read_bytes() == (tmp_path / "local.pmtiles").read_bytes()


def test_s3_render_whose_web_tiles_failed_reruns_into_the_tiles(
    monkeypatch: pytest.MonkeyPatch, s3_bucket: str, aerial: Path, checkpoint: Path, reference: Path
) -> None:
    """As locally: the map and a render.json marking the tiles unfinished are in the bucket before
    the pyramid starts; after the pyramid fails, the same command builds only the tiles, and
    nothing appears under the tile-set key until it is complete."""
    import geopix.pipeline as pipeline
    import geopix.pyramid as pyramid
    from geopix.errors import DiskFullError, OutputExistsError
    from geopix.remote import exists

    whole = _render(aerial, f"s3://{s3_bucket}/xyz-whole", checkpoint, xyz=Path("map.pmtiles"))
    url = f"s3://{s3_bucket}/xyz-resume"
    real_write = pyramid.WRITERS["pmtiles"]

    def fails_while_packing(dst, tiles, tilejson):
        Path(dst).write_bytes(b"half an archive")
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setitem(pyramid.WRITERS, "pmtiles", fails_while_packing)
        with pytest.raises(DiskFullError, match="no space left on the device of"):
            _render(aerial, url, checkpoint, xyz=Path("map.pmtiles"))
    assert pyramid.WRITERS["pmtiles"] is real_write
    assert not exists(f"{url}/map.pmtiles")  # nothing under the final key
    assert _s3_bytes(f"{url}/map.tif") == reference.read_bytes()
    first = json.loads(_s3_bytes(f"{url}/render.json"))
    assert first["web_tiles"] == {"path": f"{url}/map.pmtiles", "done": False}
    assert first["output"] == f"{url}/map.tif"
    # the same command again: no "already exists", no block recomputed, only the tiles built
    monkeypatch.setattr(pipeline, "compute", lambda *a, **k: pytest.fail("the map was rendered again"))
    result = _render(aerial, url, checkpoint, xyz=Path("map.pmtiles"))
    assert result.map_path == f"{url}/map.tif" and result.tiles_path == f"{url}/map.pmtiles"
    assert _s3_bytes(f"{url}/map.pmtiles") == _s3_bytes(whole.tiles_path)
    assert _s3_bytes(f"{url}/map.tif") == _s3_bytes(whole.map_path) == reference.read_bytes()
    done = json.loads(_s3_bytes(f"{url}/render.json"))
    assert done["web_tiles"] == {"path": f"{url}/map.pmtiles", "done": True} and done["tiles"] == first["tiles"]
    with pytest.raises(OutputExistsError):  # finished: a third run refuses as before
        _render(aerial, url, checkpoint, xyz=Path("map.pmtiles"))


def test_s3_tile_folder_goes_up_with_its_tilejson_last(
    monkeypatch: pytest.MonkeyPatch, s3_bucket: str, aerial: Path, checkpoint: Path
) -> None:
    """A folder cannot appear at once: a reader that finds tilejson.json finds every tile."""
    import s3fs

    from geopix import remote

    order: list[str] = []
    real_put_file = s3fs.S3FileSystem._put_file  # what put() and put_file() both end in

    async def put_file(self, lpath, rpath, *a, **k):
        order.append(str(rpath))
        return await real_put_file(self, lpath, rpath, *a, **k)

    monkeypatch.setattr(s3fs.S3FileSystem, "_put_file", put_file)
    result = _render(aerial, f"s3://{s3_bucket}/folder", checkpoint, xyz=Path("tiles"))
    tiles = [p for p in order if "/folder/tiles/" in p]
    assert tiles[-1].endswith("/folder/tiles/tilejson.json") and len(tiles) > 2
    assert remote.exists(f"{result.tiles_path}/tilejson.json")


def test_s3_glob_renders_like_the_local_glob(s3_bucket: str, aerial: Path, checkpoint: Path, tmp_path: Path) -> None:
    """``render "s3://bucket/scenes/*.tif"``: the same mosaic, the same map.tif bytes as the local glob."""
    from geopix.testservers import upload_to_s3

    quarters = split_2x2(aerial, tmp_path / "scenes")
    for p in quarters:
        upload_to_s3(p, f"s3://{s3_bucket}/scenes/{p.name}")
    _render(str(tmp_path / "scenes" / "*.tif"), tmp_path / "local", checkpoint)
    _render(f"s3://{s3_bucket}/scenes/*.tif", tmp_path / "remote", checkpoint)
    assert (tmp_path / "remote" / "map.tif").read_bytes() == (tmp_path / "local" / "map.tif").read_bytes()


# ---- issue 26 case 3b: a bucket output has a lock too ------------------------------------------
def test_a_bucket_output_is_locked_for_the_whole_render(s3_bucket: str, aerial: Path, checkpoint: Path) -> None:
    """A second render of the same job into the prefix is refused (24) while the first runs, and
    another job's --force there cannot destroy it; the lock goes with the first render."""
    from geopix.cli import main
    from geopix.errors import OutputLockedError
    from geopix.remote import exists

    url = f"s3://{s3_bucket}/shared"
    second: list[object] = []

    def during_the_first(stage: str, done: int, total: int) -> None:
        if stage == "render" and done and not second:  # the first render has written blocks
            args = ["render", str(aerial), "-o", url, "-m", str(checkpoint), "--scheduler", "sync", "--no-progress"]
            second.append(main([*args, *map(str, ["--tile-size", 256, "--overlap", 64, "--chunk-size", 256])]))
            second.append(main([*args, "--overlap", "32", "--force"]))  # another job, forced
            second.append(exists(f"{url}/map.zarr/zarr.json"))

    result = render(
        RenderConfig(input=aerial, output_dir=url, model=str(checkpoint), tiles=TILES, scheduler="sync"),
        on_progress=during_the_first,
    )
    assert second == [OutputLockedError.exit_code, OutputLockedError.exit_code, True]
    assert result.blocks == 9 and exists(f"{url}/map.tif") and not exists(f"{url}/.geopix.lock")


def test_a_bucket_lock_of_a_killed_run_on_this_host_is_taken_over(s3_bucket: str, aerial: Path, checkpoint: Path):
    import socket
    import subprocess
    import sys

    from geopix.errors import OutputLockedError
    from geopix.remote import exists, write_bytes

    url = f"s3://{s3_bucket}/stale"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = {"host": socket.gethostname(), "pid": int(gone.stdout), "token": "t", "since": 0}
    write_bytes(f"{url}/.geopix.lock", json.dumps(dead).encode())
    _render(aerial, url, checkpoint)
    assert exists(f"{url}/map.tif") and not exists(f"{url}/.geopix.lock")
    elsewhere = {"host": "another-machine", "pid": 1, "token": "t", "since": 0}
    write_bytes(f"{url}/.geopix.lock", json.dumps(elsewhere).encode())
    with pytest.raises(OutputLockedError, match="another-machine") as err:
        _render(aerial, url, checkpoint, overwrite=True)
    assert "delete" not in str(err.value) and exists(f"{url}/.geopix.lock")
