"""The block store and the final COG: overviews built in place equal the COG driver's own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import zarr
from rasterio.enums import MaskFlags
from rasterio.shutil import copy as rio_copy
from rasterio.transform import Affine

from geopix.plan import Window
from geopix.write import COG_BLOCK, StoreSpec, create_store, finalize_geotiff, overview_factors, write_block


def _store(tmp_path: Path, h: int, w: int, chunk: int = 256) -> StoreSpec:
    """A store of flat map-like colours with a masked corner (RGB 0 under the mask, as render writes)."""
    spec = StoreSpec(str(tmp_path / "s.zarr"), h, w, chunk)
    create_store(spec)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    rgba = np.zeros((4, h, w), np.uint8)
    palette = rng.integers(0, 256, (6, 3), dtype=np.uint8)
    cls = ((yy // 37) * 7 + (xx // 53)) % 6
    rgba[:3] = palette[cls].transpose(2, 0, 1)
    valid = ~((yy > h * 0.7) & (xx < w * 0.4))
    rgba[:3] *= valid
    rgba[3] = valid * 255
    for r in range(0, h, chunk):
        for c in range(0, w, chunk):
            win = Window(r, c, min(chunk, h - r), min(chunk, w - c))
            write_block(spec, win, rgba[:, r : r + win.height, c : c + win.width])
    return spec


@pytest.mark.parametrize("side", [300, 512, 513, 1024, 1025, 1500, 2049])
def test_overview_factors_are_the_cog_drivers(tmp_path: Path, side: int) -> None:
    src = tmp_path / "raw.tif"
    profile = {"driver": "GTiff", "width": side, "height": side // 2 + 1, "count": 1, "dtype": "uint8",
               "crs": "EPSG:3857", "transform": Affine(1, 0, 0, 0, -1, side)}  # fmt: skip
    with rasterio.open(src, "w", **profile) as ds:
        ds.write(np.zeros((1, side // 2 + 1, side), np.uint8))
    rio_copy(src, tmp_path / "cog.tif", driver="COG", BLOCKSIZE=COG_BLOCK)
    with rasterio.open(tmp_path / "cog.tif") as ds:
        assert overview_factors(ds.width, ds.height) == ds.overviews(1)


def test_cog_overviews_and_mask_equal_the_cog_drivers(tmp_path: Path) -> None:
    """Our in-place overviews (then copied) must give what the COG driver computes itself."""
    spec = _store(tmp_path, 1300, 1100)
    tr = Affine(2.0, 0, 500_000, 0, -2.0, 4_000_000)
    ours = finalize_geotiff(spec, tmp_path / "map.tif", crs="EPSG:32633", transform=tr)
    # the reference: the same raw intermediate, overviews left to the COG driver
    raw = tmp_path / "raw.tif"
    finalize_geotiff(spec, raw, crs="EPSG:32633", transform=tr, cog=False)
    ref = tmp_path / "ref.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        rio_copy(raw, ref, driver="COG", COMPRESS="DEFLATE", PREDICTOR="NO", BLOCKSIZE=COG_BLOCK,
                 OVERVIEW_RESAMPLING="AVERAGE")  # fmt: skip
    with rasterio.open(ours) as a, rasterio.open(ref) as b:
        assert a.overviews(1) == b.overviews(1) == [2, 4]
        assert a.profile["compress"] == "deflate" and a.profile["blockxsize"] == COG_BLOCK
        for f in [1, *a.overviews(1)]:
            shape = (a.height // f, a.width // f) if f > 1 else (a.height, a.width)
            assert np.array_equal(a.read(out_shape=(3, *shape)), b.read(out_shape=(3, *shape)))
            assert np.array_equal(a.dataset_mask(out_shape=shape), b.dataset_mask(out_shape=shape))
        # masked pixels stay out of the averages: the overview of a valid area keeps its colours
        assert a.dataset_mask(out_shape=(650, 550))[640, 10] == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("map")) == ["map.tif"]


def test_a_block_is_written_without_comparing_it_with_the_fill_value(tmp_path: Path) -> None:
    """zarr's check for an empty chunk took more than half of a block's write; the block is
    written whatever it holds, so an all-nodata block is a chunk like any other (and reads back)."""
    spec = StoreSpec(str(tmp_path / "s.zarr"), 64, 96, 32)
    create_store(spec)
    empty = np.zeros((4, 32, 32), np.uint8)
    full = np.full((4, 32, 32), 7, np.uint8)
    write_block(spec, Window(0, 0, 32, 32), empty, (0, 0))
    write_block(spec, Window(0, 32, 32, 32), full, (0, 1))
    chunks = sorted(p.name for p in (tmp_path / "s.zarr" / "c" / "0" / "0").iterdir())
    assert chunks == ["0", "1"]  # zarr skips an empty chunk unless told not to compare
    back = zarr.open_array(store=spec.path, mode="r")[:]
    assert (back[:, :32, :32] == 0).all() and (back[:, :32, 32:64] == 7).all()


def _valid_store(tmp_path: Path, h: int, w: int, chunk: int = 256) -> tuple[StoreSpec, np.ndarray]:
    """A store of map-like colours with every pixel valid (a raster without nodata, no AOI)."""
    spec = StoreSpec(str(tmp_path / "v.zarr"), h, w, chunk)
    create_store(spec)
    yy, xx = np.mgrid[0:h, 0:w]
    rgba = np.full((4, h, w), 255, np.uint8)
    rgba[:3] = np.stack([(yy // 41) * 30 % 256, (xx // 29) * 50 % 256, (yy + xx) // 97 * 20 % 256]).astype(np.uint8)
    for r in range(0, h, chunk):
        for c in range(0, w, chunk):
            win = Window(r, c, min(chunk, h - r), min(chunk, w - c))
            write_block(spec, win, rgba[:, r : r + win.height, c : c + win.width])
    return spec, rgba


def test_a_map_without_masked_pixels_gets_no_mask_band_and_the_same_overviews(tmp_path: Path) -> None:
    """An all-valid mask says nothing GDAL would not say without one, and it made the overviews
    four times slower; the file reads all-valid, its pixels and overviews equal the masked copy's."""
    spec, rgba = _valid_store(tmp_path, 1300, 1100)
    tr = Affine(2.0, 0, 500_000, 0, -2.0, 4_000_000)
    ours = finalize_geotiff(spec, tmp_path / "map.tif", crs="EPSG:32633", transform=tr)
    raw = finalize_geotiff(spec, tmp_path / "raw.tif", crs="EPSG:32633", transform=tr, cog=False)
    masked = tmp_path / "masked.tif"  # the same pixels with an explicit all-valid mask, as before
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(raw) as src:
        with rasterio.open(tmp_path / "m_raw.tif", "w", **src.profile) as dst:
            dst.write(src.read())
            dst.write_mask(np.full((src.height, src.width), 255, np.uint8))
        rio_copy(tmp_path / "m_raw.tif", masked, driver="COG", COMPRESS="DEFLATE", PREDICTOR="NO",
                 BLOCKSIZE=COG_BLOCK, OVERVIEW_RESAMPLING="AVERAGE")  # fmt: skip
    for path in (ours, raw):
        with rasterio.open(path) as ds:
            assert all(flags == [MaskFlags.all_valid] for flags in ds.mask_flag_enums)
            assert np.array_equal(ds.read(), rgba[:3]) and (ds.dataset_mask() == 255).all()
    with rasterio.open(ours) as a, rasterio.open(masked) as b:
        assert b.mask_flag_enums[0] == [MaskFlags.per_dataset]
        assert a.overviews(1) == b.overviews(1) == [2, 4]
        for f in a.overviews(1):
            shape = (3, a.height // f, a.width // f)
            assert np.array_equal(a.read(out_shape=shape), b.read(out_shape=shape))


@pytest.mark.parametrize("cog", [True, False])
def test_the_mask_band_begins_at_the_first_masked_chunk_and_keeps_every_earlier_chunk_valid(
    tmp_path: Path, cog: bool
) -> None:
    """The store's first masked pixel is chunks into the raster (its lower left corner); the
    chunks written before the mask band existed must read valid, the masked ones masked."""
    spec = _store(tmp_path, 1300, 1100)
    tr = Affine(2.0, 0, 500_000, 0, -2.0, 4_000_000)
    out = finalize_geotiff(spec, tmp_path / "map.tif", crs="EPSG:32633", transform=tr, cog=cog)
    plane = zarr.open_array(store=spec.path, mode="r")[3]
    assert plane[:256].all() and not plane.all()  # a whole row of chunks comes before the first masked pixel
    with rasterio.open(out) as ds:
        assert ds.mask_flag_enums[0] == [MaskFlags.per_dataset]
        assert np.array_equal(ds.dataset_mask(), plane)


def test_the_finalize_runs_with_a_cache_of_megabytes_not_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rasterio.Env takes GDAL_CACHEMAX in bytes; the finalize once gave it 64, a cache of 64
    bytes, and a compressed intermediate was decompressed once per band."""
    import geopix.write as write

    seen: list[int] = []
    real = write._write_chunks
    monkeypatch.setattr(
        write, "_write_chunks", lambda *a: seen.append(rasterio.env.getenv()["GDAL_CACHEMAX"]) or real(*a)
    )
    spec, _ = _valid_store(tmp_path, 300, 200, 128)
    finalize_geotiff(spec, tmp_path / "map.tif", crs="EPSG:32633", transform=Affine(2.0, 0, 0, 0, -2.0, 600))
    assert seen == [write.FINALIZE_CACHE_MB << 20]
