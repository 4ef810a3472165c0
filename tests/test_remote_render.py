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


def test_s3_output_with_web_tiles(s3_bucket: str, aerial: Path, checkpoint: Path) -> None:
    from geopix.remote import exists

    result = _render(aerial, f"s3://{s3_bucket}/tiles", checkpoint, xyz=Path("map.pmtiles"))
    assert result.tiles_path == f"s3://{s3_bucket}/tiles/map.pmtiles"
    assert exists(f"s3://{s3_bucket}/tiles/map.pmtiles") and exists(f"s3://{s3_bucket}/tiles/map.tif")


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
