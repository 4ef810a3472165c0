"""Web-Mercator pyramids: tile sets, pixels, lower zooms, archives, TileJSON, errors."""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
from pathlib import Path

import mercantile
import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_bounds
from rasterio.warp import reproject

from geopix.cli import main
from geopix.errors import EmptyRasterError, OutputExistsError, TileFormatError, ZoomRangeError
from geopix.pyramid import PyramidConfig, build_pyramid, parse_zoom
from geopix.testing import synthetic_aerial
from geopix.tilecut import downsample2
from geopix.tilesets.codec import decode_tile
from geopix.zooms import auto_maxzoom, tile_resolution
from tests.conftest import GEOTIFFS, need_shared

ZOOM = (15, 18)  # 2 m/px at 47.85°N: z18 is a 4× upsample, so the nodata quarter holds whole tiles


def make_map(path: Path, size: int = 300, masked: bool = True) -> Path:
    """A map.tif as ``geopix render`` writes it: RGB + internal mask (top-left quarter masked) + tags."""
    src = synthetic_aerial(path.with_name(path.stem + "_src.tif"), size, alpha=True, nodata_corner=masked)
    with rasterio.open(src) as s:
        data, profile = s.read(), s.profile
    profile.update(count=3, photometric="RGB", tiled=True, blockxsize=256, blockysize=256)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(np.where(data[3] > 0, data[:3], 0).astype(np.uint8))
        if masked:
            dst.write_mask(data[3])
        dst.update_tags(GEOPIX_MODEL="tiny.safetensors", GEOPIX_SOURCE="aerial_src.tif")
    return path


@pytest.fixture(scope="module")
def map_tif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_map(tmp_path_factory.mktemp("pyr") / "map.tif")


@pytest.fixture(scope="module")
def tile_dir(map_tif: Path) -> Path:
    out = map_tif.parent / "tiles"
    cfg = PyramidConfig(minzoom=ZOOM[0], maxzoom=ZOOM[1], meta_level=1)  # several meta-tile groups
    build_pyramid(map_tif, out, cfg, scheduler="sync")
    return out


def written(root: Path, z: int, ext: str = "png") -> set[mercantile.Tile]:
    return {mercantile.Tile(int(p.parent.name), int(p.stem), z) for p in (root / str(z)).glob(f"*/*.{ext}")}


def lonlat_bounds(path: Path) -> tuple[float, float, float, float]:
    from rasterio.warp import transform_bounds

    with rasterio.open(path) as s:
        return transform_bounds(s.crs, "EPSG:4326", *s.bounds, densify_pts=21)


def warp_to_tile(path: Path, tile: mercantile.Tile, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The raster and its mask warped independently (rasterio.warp.reproject) onto ``tile``."""
    dst_tr = from_bounds(*mercantile.xy_bounds(tile), size, size)
    with rasterio.open(path) as s:
        rgb = np.zeros((3, size, size), np.uint8)
        mask = np.zeros((size, size), np.uint8)
        reproject(
            s.read([1, 2, 3]),
            rgb,
            src_transform=s.transform,
            src_crs=s.crs,
            dst_transform=dst_tr,
            dst_crs="EPSG:3857",
            resampling=Resampling.bilinear,
        )
        reproject(
            s.dataset_mask(),
            mask,
            src_transform=s.transform,
            src_crs=s.crs,
            dst_transform=dst_tr,
            dst_crs="EPSG:3857",
            resampling=Resampling.nearest,
        )
    return rgb, mask


# ---- zoom rule ------------------------------------------------------------------------------
def test_auto_maxzoom_never_downsamples() -> None:
    lat = 47.85
    for z in (10, 15, 18, 21):
        res = tile_resolution(z, lat)
        assert auto_maxzoom(res, lat) == z  # exactly a zoom's resolution: that zoom
        assert auto_maxzoom(res * 1.3, lat) == z  # coarser than z+... but finer than z-1: z (upsample < 2×)
        assert auto_maxzoom(res * 0.99, lat) == z + 1  # a bit finer than z: z+1 so nothing is lost
        assert tile_resolution(auto_maxzoom(res * 0.7, lat), lat) <= res * 0.7
        assert auto_maxzoom(res, lat, tile_size=512) == z - 1  # 512 px tiles: one zoom less


def test_parse_zoom() -> None:
    assert parse_zoom("12-18") == (12, 18)
    assert parse_zoom(" 15 ") == (15, 15)
    for bad in ("18-12", "a-b", "1-2-3", "-3", "12-30", ""):
        with pytest.raises(ZoomRangeError):
            parse_zoom(bad)


def test_config_validation() -> None:
    with pytest.raises(TileFormatError):
        PyramidConfig(format="gif")
    with pytest.raises(TileFormatError):
        PyramidConfig(tile_size=300)
    with pytest.raises(ZoomRangeError):
        PyramidConfig(minzoom=10, maxzoom=8)


# ---- tile sets and pixels -------------------------------------------------------------------
def test_tile_set_is_mercantile_minus_empty(map_tif: Path, tile_dir: Path) -> None:
    bounds = lonlat_bounds(map_tif)
    for z in range(ZOOM[0], ZOOM[1] + 1):
        expected = set(mercantile.tiles(*bounds, [z]))
        got = written(tile_dir, z)
        assert got and got <= expected
        # Every tile of the data bounds that was skipped is empty: the mask warped onto it is all zero
        # (checked independently of the pyramid code with rasterio.warp.reproject).
        for t in expected - got:
            _, mask = warp_to_tile(map_tif, t)
            assert not mask.any(), f"tile {t} has data but was not written"
    # the masked top-left quarter makes whole tiles empty at max zoom
    assert len(written(tile_dir, ZOOM[1])) < len(set(mercantile.tiles(*bounds, [ZOOM[1]])))
    # no tile written is fully transparent
    for p in (tile_dir / str(ZOOM[1])).glob("*/*.png"):
        assert decode_tile(p.read_bytes())[3].any()


def test_max_zoom_tile_matches_warped_raster(map_tif: Path, tile_dir: Path) -> None:
    z = ZOOM[1]
    full = partial = 0
    for t in sorted(written(tile_dir, z)):
        tile = decode_tile((tile_dir / f"{z}/{t.x}/{t.y}.png").read_bytes())
        rgb, mask = warp_to_tile(map_tif, t)
        both = (mask > 0) & (tile[3] > 0)
        # coverage agrees except along the one-pixel mask boundary
        assert np.mean((mask > 0) != (tile[3] > 0)) < 0.02
        diff = np.abs(tile[:3].astype(int) - rgb.astype(int))[:, both]
        assert diff.mean() < 2, f"tile {t}: mean |diff| {diff.mean():.2f}"
        full += bool(tile[3].all())
        partial += bool(0 < (tile[3] > 0).mean() < 1)
    assert full and partial  # both kinds were compared
    # outside the data the tile is transparent and black (no colour under alpha 0)
    t = next(
        t
        for t in sorted(written(tile_dir, z))
        if not decode_tile((tile_dir / f"{z}/{t.x}/{t.y}.png").read_bytes())[3].all()
    )
    tile = decode_tile((tile_dir / f"{z}/{t.x}/{t.y}.png").read_bytes())
    assert not tile[:3][:, tile[3] == 0].any()


def test_lower_zoom_is_alpha_weighted_mean_of_children(tile_dir: Path) -> None:
    z = ZOOM[1] - 1
    checked = 0
    for t in sorted(written(tile_dir, z)):
        mosaic = np.zeros((4, 512, 512), np.uint8)
        for dy in (0, 1):
            for dx in (0, 1):
                p = tile_dir / f"{z + 1}/{2 * t.x + dx}/{2 * t.y + dy}.png"
                if p.exists():
                    mosaic[:, dy * 256 : dy * 256 + 256, dx * 256 : dx * 256 + 256] = decode_tile(p.read_bytes())
        got = decode_tile((tile_dir / f"{z}/{t.x}/{t.y}.png").read_bytes())
        a = mosaic[3].reshape(256, 2, 256, 2).astype(float)
        rgb = mosaic[:3].reshape(3, 256, 2, 256, 2).astype(float)
        w = a.sum(axis=(1, 3))
        want = np.where(w > 0, (rgb * a).sum(axis=(2, 4)) / np.maximum(w, 1), 0)
        assert np.abs(got[3].astype(float) - w / 4).max() <= 0.5 + 1e-9
        assert np.abs(got[:3].astype(float) - want)[:, w > 0].max() <= 0.5 + 1e-9
        checked += 1
    assert checked


def test_downsample_has_no_dark_fringe() -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[:3, :, :] = 0
    rgba[:3, :, :3] = 200  # valid colour on the left three columns, black "nodata" on the right
    rgba[3, :, :3] = 255
    out = downsample2(rgba)
    assert out.shape == (4, 2, 2)
    assert (out[:3] == 200).all()  # the half-covered right pixels keep the data colour, not 100
    assert out[3].tolist() == [[255, 128], [255, 128]]
    empty = downsample2(np.zeros((4, 4, 4), np.uint8))
    assert not empty.any()


def test_dask_matches_sync(map_tif: Path, tile_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dask"
    res = build_pyramid(map_tif, out, PyramidConfig(minzoom=ZOOM[0], maxzoom=ZOOM[1]), workers=1)
    for z in range(ZOOM[0], ZOOM[1] + 1):
        assert written(out, z) == written(tile_dir, z)
        assert res.tiles_per_zoom[z] == len(written(out, z))
        for t in written(out, z):
            rel = f"{z}/{t.x}/{t.y}.png"
            assert (out / rel).read_bytes() == (tile_dir / rel).read_bytes()


# ---- archives and TileJSON ------------------------------------------------------------------
def test_pmtiles_and_mbtiles_hold_the_directory_bytes(map_tif: Path, tile_dir: Path, tmp_path: Path) -> None:
    from pmtiles.reader import MmapSource, Reader

    cfg = PyramidConfig(minzoom=ZOOM[0], maxzoom=ZOOM[1])
    pm = build_pyramid(map_tif, tmp_path / "t.pmtiles", cfg, scheduler="sync")
    mb = build_pyramid(map_tif, tmp_path / "t.mbtiles", cfg, scheduler="sync")
    assert (pm.kind, mb.kind) == ("pmtiles", "mbtiles")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.mbtiles", "t.pmtiles"]  # no partials left
    con = sqlite3.connect(tmp_path / "t.mbtiles")
    meta = dict(con.execute("SELECT name, value FROM metadata"))
    assert meta["format"] == "png" and int(meta["minzoom"]) == ZOOM[0] and int(meta["maxzoom"]) == ZOOM[1]
    n_dir = 0
    with open(tmp_path / "t.pmtiles", "rb") as f:
        reader = Reader(MmapSource(f))
        h = reader.header()
        assert (h["min_zoom"], h["max_zoom"]) == ZOOM
        for z in range(ZOOM[0], ZOOM[1] + 1):
            got = written(tile_dir, z)
            for t in got:
                data = (tile_dir / f"{z}/{t.x}/{t.y}.png").read_bytes()
                assert reader.get(z, t.x, t.y) == data
                row = con.execute(
                    "SELECT tile_data FROM tiles WHERE zoom_level=? AND tile_column=? AND tile_row=?",
                    (z, t.x, (1 << z) - 1 - t.y),  # TMS: row 0 is the southernmost
                ).fetchone()
                assert row is not None and bytes(row[0]) == data
                n_dir += 1
            for t in set(mercantile.tiles(*lonlat_bounds(map_tif), [z])) - got:
                assert reader.get(z, t.x, t.y) is None
    assert con.execute("SELECT count(*) FROM tiles").fetchone()[0] == n_dir == pm.tiles == mb.tiles


def test_tilejson(map_tif: Path, tile_dir: Path) -> None:
    tj = json.loads((tile_dir / "tilejson.json").read_text())
    assert tj["tilejson"] == "3.0.0"
    assert tj["tiles"] == ["{z}/{x}/{y}.png"]
    assert (tj["minzoom"], tj["maxzoom"]) == ZOOM
    w, s, e, n = tj["bounds"]
    assert np.allclose(tj["bounds"], lonlat_bounds(map_tif), atol=1e-6)
    assert w < tj["center"][0] < e and s < tj["center"][1] < n and ZOOM[0] <= tj["center"][2] <= ZOOM[1]
    assert "tiny model" in tj["attribution"] and "aerial_src.tif" in tj["attribution"]
    assert "--base-url" in tj["description"]  # the relative tile URL says how to host the folder


# ---- formats, sizes, errors -----------------------------------------------------------------
def test_webp_and_512(map_tif: Path, tmp_path: Path) -> None:
    from PIL import Image

    res = build_pyramid(map_tif, tmp_path / "w", PyramidConfig(format="webp", tile_size=512), scheduler="sync")
    assert res.maxzoom == 15  # 2 m/px at 47.85°N: z15 512-px tiles are 1.6 m/px
    p = next((tmp_path / "w" / str(res.maxzoom)).glob("*/*.webp"))
    with Image.open(p) as im:
        assert im.format == "WEBP" and im.size == (512, 512)


def test_jpeg_needs_an_unmasked_raster(map_tif: Path, tmp_path: Path) -> None:
    from PIL import Image

    with pytest.raises(TileFormatError, match="jpg"):
        build_pyramid(map_tif, tmp_path / "j", PyramidConfig(format="jpg"), scheduler="sync")
    assert not list(tmp_path.iterdir())
    # an internal mask that marks every pixel valid (as a rendered COG has) does not need alpha
    opaque = make_map(tmp_path / "opaque.tif", 200, masked=False)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(opaque, "r+") as ds:
        ds.write_mask(np.full((200, 200), 255, np.uint8))
    res = build_pyramid(opaque, tmp_path / "j", PyramidConfig(format="jpg"), scheduler="sync")
    p = next((tmp_path / "j" / str(res.maxzoom)).glob("*/*.jpg"))
    with Image.open(p) as im:
        assert im.format == "JPEG" and im.mode == "RGB"


def test_fully_masked_raster_is_an_error(tmp_path: Path) -> None:
    path = make_map(tmp_path / "empty.tif", 64)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as ds:
        ds.write_mask(np.zeros((64, 64), np.uint8))
    with pytest.raises(EmptyRasterError, match="no valid pixels"):
        build_pyramid(path, tmp_path / "e.pmtiles", PyramidConfig(), scheduler="sync")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.tif", "empty_src.tif"]


def test_overwrite_and_atomic_output(map_tif: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "t.pmtiles"
    cfg = PyramidConfig(minzoom=15, maxzoom=16)
    build_pyramid(map_tif, out, cfg, scheduler="sync")
    before = out.read_bytes()
    with pytest.raises(OutputExistsError):
        build_pyramid(map_tif, out, cfg, scheduler="sync")

    import geopix.pyramid as pyramid

    def boom(*_args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setitem(pyramid.WRITERS, "pmtiles", boom)
    with pytest.raises(OSError, match="disk full"):
        build_pyramid(map_tif, out, PyramidConfig(minzoom=15, maxzoom=16, overwrite=True), scheduler="sync")
    assert out.read_bytes() == before  # the old archive survives a failed rebuild
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.pmtiles"]


def test_cli_tiles(map_tif: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.mbtiles"
    code = main(["tiles", str(map_tif), str(out), "--zoom", "15-16", "--scheduler", "sync", "--no-progress"])
    assert code == 0 and "zoom 15-16" in capsys.readouterr().out
    lib = build_pyramid(map_tif, tmp_path / "lib.mbtiles", PyramidConfig(minzoom=15, maxzoom=16), scheduler="sync")

    def rows(path: Path) -> set[tuple]:
        with contextlib.closing(sqlite3.connect(path)) as con:
            return set(con.execute("SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles"))

    assert len(rows(out)) == lib.tiles > 0 and rows(out) == rows(tmp_path / "lib.mbtiles")  # the same tiles
    assert main(["tiles", str(map_tif), str(tmp_path / "x"), "--zoom", "16-12"]) == ZoomRangeError.exit_code
    assert (
        main(["tiles", str(map_tif), str(out), "--zoom", "15-16", "--scheduler", "sync"]) == OutputExistsError.exit_code
    )


@pytest.mark.parametrize("where", ["http", "s3"])
def test_cli_tiles_from_a_remote_map(
    where: str, map_tif: Path, tmp_path: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    """``geopix tiles URL out.pmtiles`` (workers read their windows by URL) equals the local file's tiles."""
    if where == "http":
        import shutil

        server, root = request.getfixturevalue("http_server"), request.getfixturevalue("http_root")
        (root / "pyr").mkdir(exist_ok=True)
        shutil.copy(map_tif, root / "pyr" / map_tif.name)
        url = f"{server.url}/pyr/{map_tif.name}"
    else:
        from geopix.testservers import upload_to_s3

        url = f"s3://{request.getfixturevalue('s3_bucket')}/pyr/{map_tif.name}"
        upload_to_s3(map_tif, url)
    args = ["--zoom", "14-16", "--no-progress", "--workers", "1"]
    assert main(["tiles", str(map_tif), str(tmp_path / "local.pmtiles"), *args]) == 0
    assert main(["tiles", url, str(tmp_path / "remote.pmtiles"), *args]) == 0
    assert (tmp_path / "remote.pmtiles").read_bytes() == (tmp_path / "local.pmtiles").read_bytes()
    capsys.readouterr()
    missing = url.replace(map_tif.name, "none.tif")
    assert main(["tiles", missing, str(tmp_path / "x.pmtiles"), "--scheduler", "sync"]) == 3
    err = capsys.readouterr().err.strip()
    assert "none.tif does not exist" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.pmtiles").exists() and not list(tmp_path.glob("x.pmtiles*"))


def test_rendered_map(checkpoint: Path, tmp_path: Path) -> None:
    """A real ``geopix render`` output (COG + internal mask + tags) tiles cleanly."""
    from geopix.config import RenderConfig
    from geopix.pipeline import render

    aerial = synthetic_aerial(tmp_path / "aerial.tif", 256, alpha=True, nodata_corner=True)
    r = render(RenderConfig(input=aerial, output_dir=tmp_path / "r", model=str(checkpoint), scheduler="sync"))
    res = build_pyramid(r.map_path, tmp_path / "t", PyramidConfig(), scheduler="sync")
    bounds = lonlat_bounds(r.map_path)
    assert res.maxzoom == auto_maxzoom(2.0, (bounds[1] + bounds[3]) / 2)
    for z in range(res.minzoom, res.maxzoom + 1):
        assert written(res.path, z) <= set(mercantile.tiles(*bounds, [z]))
        assert len(written(res.path, z)) == res.tiles_per_zoom[z] > 0
    assert "aerial.tif" in res.tilejson["attribution"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, maxzoom",
    [
        ("vienna_30cm_epsg31256.tif", 19),
        ("massachusetts_1m_epsg26986_nodata255.tif", 17),
        ("paris_30cm_epsg4326.tif", 19),
        ("vegas_30cm_epsg4326_rgba.tif", 19),
    ],
)
def test_real_geotiffs(name: str, maxzoom: int, tmp_path: Path) -> None:
    src = need_shared(GEOTIFFS / name)
    # the auto max zoom, and one level below it (the whole pyramid is covered by the synthetic tests)
    res = build_pyramid(src, tmp_path / "t", PyramidConfig(minzoom=maxzoom - 1), scheduler="sync")
    assert res.maxzoom == maxzoom
    bounds = lonlat_bounds(src)
    for z in (res.maxzoom, res.minzoom):
        got = written(res.path, z)
        assert got and got <= set(mercantile.tiles(*bounds, [z]))
    t = max(written(res.path, res.maxzoom), key=lambda t: (t.y, t.x))
    tile = decode_tile((res.path / f"{t.z}/{t.x}/{t.y}.png").read_bytes())
    want, _ = warp_to_tile(src, t)
    valid = tile[3] == 255
    # interior pixels only: bilinear at the data edge reads nodata differently in the two warps
    for _ in range(2):  # erode by one pixel, twice (4-neighbourhood)
        valid = valid & np.roll(valid, 1, 0) & np.roll(valid, -1, 0) & np.roll(valid, 1, 1) & np.roll(valid, -1, 1)
        valid[[0, -1], :] = False
        valid[:, [0, -1]] = False
    assert valid.sum() > 1000  # the bottom-right tile of the auto max zoom holds data to compare
    assert np.abs(tile[:3].astype(int) - want.astype(int))[:, valid].mean() < 2
    assert math.isfinite(res.seconds)


# ---- issue 26 case 12: every error mapped to its exit code, the file named ------------------
def test_tiles_from_a_map_whose_pixel_reads_fail_names_it(map_tif: Path, tmp_path: Path, capsys) -> None:
    broken = tmp_path / "broken.tif"
    data = bytearray(map_tif.read_bytes())
    n = len(data)
    data[n // 5 : n // 2] = b"\xff" * (n // 2 - n // 5)  # the directory survives, tile bytes do not
    broken.write_bytes(bytes(data))
    code = main(["tiles", str(broken), str(tmp_path / "t"), "--zoom", "15-17", "--scheduler", "sync", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 4 and "damaged or truncated" in err and str(broken) in err and "unexpected" not in err
    assert len(err.splitlines()) == 1 and not list(tmp_path.glob("t*"))


@pytest.mark.parametrize("where", ["worker", "pmtiles", "mbtiles"])
def test_tiles_on_a_full_disk_is_the_render_code(
    where: str, map_tif: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A full disk while cutting (a worker's tile), packing (PMTiles) or in SQLite (MBTiles) is exit 23."""
    import errno

    import geopix.pyramid as pyramid
    from geopix.tilesets import folder

    def enospc(*_a: object, **_k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def sqlite_full(*_a: object, **_k: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    out = tmp_path / {"worker": "t", "pmtiles": "t.pmtiles", "mbtiles": "t.mbtiles"}[where]
    if where == "worker":
        monkeypatch.setattr(folder, "write_tile", enospc)
    else:
        monkeypatch.setitem(pyramid.WRITERS, where, enospc if where == "pmtiles" else sqlite_full)
    code = main(["tiles", str(map_tif), str(out), "--zoom", "15-16", "--scheduler", "sync", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 23 and "no space left on the device of" in err and "unexpected" not in err
    assert not list(tmp_path.glob("t*"))


def test_serve_on_a_port_out_of_range_is_an_option_error(tile_dir: Path, capsys) -> None:
    from geopix.errors import OptionError

    assert main(["serve", str(tile_dir), "--port", "99999"]) == OptionError.exit_code
    err = capsys.readouterr().err
    assert "--port 99999" in err and "unexpected" not in err
