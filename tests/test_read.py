"""Reading: input scaling rules and colour matching to the model's training imagery."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.enums import Resampling

from geopix import read
from geopix.config import RenderConfig, TileConfig
from geopix.pipeline import render
from geopix.plan import Window
from geopix.read import WorkReader, colour_match, ground_resolution, inspect_raster, reflect_index, to_unit, work_grid
from geopix.testing import random_checkpoint, synthetic_aerial

TARGET = ((60.0, 40.0), (63.0, 39.0), (58.0, 40.0))


def _all_pixels_0_255(info) -> np.ndarray:
    with rasterio.open(info.path) as src:
        data = src.read(list(info.bands))
    return to_unit(data, info) * 127.5 + 127.5


def test_colour_match_gives_the_training_mean_and_std(tmp_path: Path) -> None:
    info = inspect_raster(synthetic_aerial(tmp_path / "a.tif", 300))
    matched = colour_match(info, TARGET)
    x = _all_pixels_0_255(matched).reshape(3, -1)
    assert np.allclose(x.mean(1), [t[0] for t in TARGET], atol=3)
    # values pushed below 0 are clipped, which narrows the spread a little
    assert np.allclose(x.std(1), [t[1] for t in TARGET], atol=8)
    assert not np.allclose(_all_pixels_0_255(info).reshape(3, -1).mean(1), x.mean(1), atol=3)


def test_uint16_is_stretched_then_matched(tmp_path: Path) -> None:
    info = inspect_raster(synthetic_aerial(tmp_path / "u.tif", 200, dtype="uint16"))
    assert info.stretch is not None
    x = _all_pixels_0_255(colour_match(info, TARGET)).reshape(3, -1)
    assert np.allclose(x.mean(1), [t[0] for t in TARGET], atol=4)


def test_render_matches_colours_only_when_the_model_declares_statistics(tmp_path: Path) -> None:
    src = synthetic_aerial(tmp_path / "a.tif", 256)
    plain = random_checkpoint(tmp_path / "p.safetensors", ngf=4)
    stats = random_checkpoint(tmp_path / "s.safetensors", ngf=4, input_stats=TARGET)

    def run(model: Path, out: str, match: bool) -> np.ndarray:
        render(
            RenderConfig(
                input=src,
                output_dir=tmp_path / out,
                model=str(model),
                tiles=TileConfig(256, 64, 512),
                scheduler="sync",
                match_colors=match,
            )
        )
        with rasterio.open(tmp_path / out / "map.tif") as ds:
            return ds.read()

    assert np.array_equal(run(plain, "p1", True), run(plain, "p2", False))
    assert not np.array_equal(run(stats, "s1", True), run(stats, "s2", False))


@pytest.mark.parametrize("lat", [0.0, 28.0, 45.0, 60.0])
def test_ground_resolution_is_metres_on_the_ground_in_web_mercator(tmp_path: Path, lat: float) -> None:
    """1 Web Mercator unit is cos(latitude) ground metres: the raster at 60° N has 0.5 m pixels, not 1 m."""
    import math

    from pyproj import Transformer

    x, y = Transformer.from_crs(4326, 3857, always_xy=True).transform(85.0, lat)
    path = synthetic_aerial(tmp_path / "m.tif", 64, crs="EPSG:3857", res=1.0, origin=(x - 32, y + 32))
    with rasterio.open(path) as src:
        dx, dy = ground_resolution(src)
    # Web Mercator is spherical; on the WGS84 ellipsoid (x and y slightly apart) within 0.7 %.
    assert dx == pytest.approx(math.cos(math.radians(lat)), rel=7e-3)
    assert dy == pytest.approx(math.cos(math.radians(lat)), rel=7e-3)


@pytest.mark.parametrize(
    ("crs", "origin"),
    [
        ("EPSG:32633", (500000.0, 5300000.0)),  # UTM on its central meridian (k = 0.9996)
        ("EPSG:32633", (800000.0, 5300000.0)),  # 300 km east of it (k > 1)
        ("EPSG:2154", (652000.0, 6862000.0)),  # Lambert-93 at Paris
    ],
)
def test_ground_resolution_applies_the_projection_scale(tmp_path: Path, crs: str, origin) -> None:
    """Geodesic distances agree with pyproj's projection factors at the centre (an independent method)."""
    from pyproj import Proj, Transformer

    path = synthetic_aerial(tmp_path / "u.tif", 64, crs=crs, res=2.0, origin=origin)
    with rasterio.open(path) as src:
        dx, dy = ground_resolution(src)
        cx, cy = src.xy(32, 32)
    lon, lat = Transformer.from_crs(crs, 4326, always_xy=True).transform(cx, cy)
    f = Proj(crs).get_factors(lon, lat)
    assert dx == pytest.approx(2.0 / f.parallel_scale, rel=1e-5)
    assert dy == pytest.approx(2.0 / f.meridional_scale, rel=1e-5)
    if origin[0] == 500000.0:
        assert dx == pytest.approx(2.0 / 0.9996, rel=1e-5)


def test_ground_resolution_of_a_geographic_raster(tmp_path: Path) -> None:
    path = synthetic_aerial(tmp_path / "g.tif", 64, crs="EPSG:4326", res=1e-5, origin=(15.0, 60.0))
    with rasterio.open(path) as src:
        dx, dy = ground_resolution(src)
    assert dx == pytest.approx(0.557, rel=1e-2)  # 1e-5 ° of longitude at 60° N
    assert dy == pytest.approx(1.116, rel=1e-2)  # 1e-5 ° of latitude


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), start=st.integers(-120, 40), length=st.integers(1, 160))
def test_reflect_index_is_numpy_reflect_of_the_whole_axis(n: int, start: int, length: int) -> None:
    lead = max(0, -start) + 200
    padded = np.pad(np.arange(n), (lead, lead + start + length), mode="reflect" if n > 1 else "edge")
    assert reflect_index(start, start + length, n).tolist() == padded[lead + start : lead + start + length].tolist()


def test_past_edge_pixels_do_not_depend_on_the_window_read(tmp_path: Path) -> None:
    """A tile reaching 185 px past the edge is read once inside a wide block window and once
    inside a narrow one (71 px inside the raster): the same pixels either way.  Padding the
    narrow window by more than it holds bounced back and forth inside it, so a render's
    output depended on --chunk-size (seen on Vienna at 0.3 -> 1.1 m)."""
    src = synthetic_aerial(tmp_path / "a.tif", (100, 455), res=1.0)
    info = inspect_raster(src)
    with WorkReader(info, work_grid(info, None, False)) as reader:
        wide, wide_valid = reader.read(Window(0, 128, 100, 512))
        narrow, narrow_valid = reader.read(Window(0, 384, 100, 256))
        whole, _ = reader.read(Window(0, 0, 100, 455))
    assert np.array_equal(wide[:, :, 256:], narrow) and np.array_equal(wide_valid[:, 256:], narrow_valid)
    assert np.array_equal(narrow, np.pad(whole, ((0, 0), (0, 0), (0, 185)), mode="reflect")[:, :, 384:640])


@pytest.mark.parametrize("size", [(700, 913), (1021, 640), (333, 2000)])
def test_a_downsampled_read_skips_the_warper_and_no_pixel_depends_on_the_window(
    tmp_path: Path, size: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An all-valid raster at 0.3 m read at 1 m by averaging each pixel's source footprint:
    any window (edges, reflected halos) holds the pixels of the whole grid's read, bit for
    bit, and they are the warper's average within one level (its footprints differ in the
    last bits)."""
    import geopix.read as read

    src = synthetic_aerial(tmp_path / "a.tif", size, res=0.3, seed=3)
    info = inspect_raster(src)
    grid = work_grid(info, 1.0, True)
    rng = np.random.default_rng(1)
    windows = [Window(-40, -40, 120, 130), Window(100, 100, 1, 1)]
    windows += [Window(int(r), int(c), int(h), int(w)) for r, c, h, w in rng.integers(-30, 300, (60, 4)) if h > 0 < w]
    with WorkReader(info, grid) as fast:
        assert fast._scale is not None and fast._vrt is None
        whole, valid = fast.read(Window(0, 0, grid.height, grid.width))
        for w in windows:
            rows, cols = reflect_index(w.row, w.row_stop, grid.height), reflect_index(w.col, w.col_stop, grid.width)
            data, ok = fast.read(w)
            assert np.array_equal(data, whole[:, rows][:, :, cols]) and ok.all(), w
    assert valid.all()
    monkeypatch.setattr(read, "WARP_FREE_READS", False)
    with WorkReader(info, grid) as warped:
        assert warped._vrt is not None
        want, want_valid = warped.read(Window(0, 0, grid.height, grid.width))
    levels = np.abs(whole - want) * 127.5
    assert want_valid.all() and levels.max() < 1.01 and (levels > 0.5).mean() < 0.001


def test_a_raster_with_nodata_or_alpha_is_still_warped(tmp_path: Path) -> None:
    """The warper's mask of a partly valid raster is kept: no decimating read there."""
    for name, kw in (("n", {"nodata": 0, "nodata_corner": True}), ("a", {"alpha": True, "nodata_corner": True})):
        info = inspect_raster(synthetic_aerial(tmp_path / f"{name}.tif", (300, 300), res=0.3, **kw))
        with WorkReader(info, work_grid(info, 1.0, True)) as reader:
            assert reader._scale is None and reader._vrt is not None
            assert not reader.read(Window(0, 0, 90, 90))[1].all()


def _stretched(raw: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The documented uint16 rule, computed here independently: per band, the 2nd and 98th percentiles
    of the valid pixels become 0 and 255 (rounded), values outside them clip."""
    lo_hi = np.array([np.percentile(band[valid], [2, 98]) for band in raw])
    lo, hi = lo_hi[:, 0, None, None], lo_hi[:, 1, None, None]
    return lo_hi, np.rint(np.clip((raw.astype(np.float64) - lo) / (hi - lo), 0, 1) * 255)


def test_uint16_stretch_maps_the_2nd_and_98th_percentiles_to_black_and_white(tmp_path: Path) -> None:
    """Without colour matching (which would cancel any linear stretch) the stretch itself is visible."""
    path = synthetic_aerial(tmp_path / "u.tif", 200, dtype="uint16", nodata=0, nodata_corner=True)
    info = inspect_raster(path)
    with rasterio.open(path) as src:
        raw, valid = src.read(list(info.bands)), src.dataset_mask() > 0
    lo_hi, want = _stretched(raw, valid)
    assert np.allclose(info.stretch, lo_hi)  # the nodata corner (0) does not drag the low end down
    assert lo_hi[:, 0].min() > 300 and lo_hi[:, 1].max() < 255 * 40 + 300  # not the type's 0..65535
    x = to_unit(raw, info)[:, valid] * 127.5 + 127.5
    assert np.allclose(x, want[:, valid], atol=1e-3)
    assert x.min() == 0 and x.max() == 255  # the full 8-bit range is used


def test_uint16_render_equals_the_render_of_its_stretched_8_bit_copy(tmp_path: Path) -> None:
    src16 = synthetic_aerial(tmp_path / "u16.tif", 256, dtype="uint16")
    with rasterio.open(src16) as src:
        raw, profile = src.read(), src.profile
    _, eight = _stretched(raw, np.ones(raw.shape[1:], bool))
    src8 = tmp_path / "u8.tif"
    with rasterio.open(src8, "w", **(profile | {"dtype": "uint8"})) as dst:
        dst.write(eight.astype(np.uint8))
    model = random_checkpoint(tmp_path / "m.safetensors", ngf=4)

    def run(src: Path, out: str) -> np.ndarray:
        cfg = RenderConfig(input=src, output_dir=tmp_path / out, model=str(model), tiles=TileConfig(256, 64, 512))
        render(replace(cfg, scheduler="sync", match_colors=False))
        with rasterio.open(tmp_path / out / "map.tif") as ds:
            return ds.read()

    assert np.array_equal(run(src16, "o16"), run(src8, "o8"))


def test_uint16_stretch_of_a_constant_band_is_one_level_wide(tmp_path: Path) -> None:
    """A flat band (2nd = 98th percentile) gets hi = lo + 1, not a division by zero."""
    path = synthetic_aerial(tmp_path / "c.tif", 64, dtype="uint16")
    with rasterio.open(path, "r+") as dst:
        dst.write(np.full((64, 64), 1234, np.uint16), 2)
    info = inspect_raster(path)
    assert info.stretch[1] == (1234.0, 1235.0)
    with rasterio.open(path) as src:
        x = to_unit(src.read(list(info.bands)), info)
    assert np.isfinite(x).all() and (x[1] == -1.0).all()


# ---- from mutation testing (docs/testing.md): each test below failed on a surviving mutant ----


def _raster(path: Path, bands: np.ndarray, nodata: float | None = 0) -> Path:
    from rasterio.transform import from_origin

    profile = {"driver": "GTiff", "width": bands.shape[2], "height": bands.shape[1], "count": 3,
               "dtype": str(bands.dtype), "crs": "EPSG:32633",
               "transform": from_origin(500000, 5300000, 2, 2)}  # fmt: skip
    with rasterio.open(path, "w", **profile, **({"nodata": nodata} if nodata is not None else {})) as dst:
        dst.write(bands)
    return path


def test_plain_8_bit_values_map_to_minus_one_to_one_as_float32() -> None:
    """Training images and plain images (no raster info): ``x / 127.5 − 1``, by the formula and
    by the lookup table alike."""
    small = np.array([0, 51, 255], np.uint8).reshape(3, 1, 1)
    large = np.tile(np.arange(256, dtype=np.uint8), (3, 4, 1))  # > 768 values: the table
    for data in (small, large):
        got = to_unit(data)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, data.astype(np.float32) / np.float32(127.5) - np.float32(1.0))
    assert to_unit(large).min() == -1.0 and to_unit(large).max() == 1.0


def test_colour_match_is_the_affine_map_of_the_valid_pixels_statistics(tmp_path: Path) -> None:
    """gain = target std / std, bias = target mean − gain · mean, over the valid pixels only (the
    nodata ones are 0 and would pull the mean down), to 6 decimals; a constant band keeps gain 1."""
    rng = np.random.default_rng(4)
    bands = rng.integers(10, 250, (3, 40, 50)).astype(np.uint8)
    bands[1] = np.where(np.arange(50) % 2, 100, 101)[None, :]  # std 0.5: still matched
    bands[2] = 90  # constant: nothing to stretch
    bands[:, :10] = 0  # nodata
    info = inspect_raster(_raster(tmp_path / "m.tif", bands))
    got = colour_match(info, TARGET).colour
    valid = bands[:, 10:].reshape(3, -1).astype(np.float64)
    for b, ((gain, bias), (t_mean, t_std)) in enumerate(zip(got, TARGET, strict=True)):
        want = t_std / valid[b].std() if b < 2 else 1.0
        assert gain == pytest.approx(want, rel=1e-5)
        assert bias == pytest.approx(t_mean - want * valid[b].mean(), abs=1e-4)
    assert got[1][0] == pytest.approx(TARGET[1][1] / 0.5, rel=1e-5)


def test_a_raster_with_no_valid_pixel_is_matched_and_stretched_from_all_its_pixels(tmp_path: Path) -> None:
    """No valid pixel in the overview (an empty scene, or valid ones too few to survive the
    overview): the statistics fall back to every pixel rather than failing."""
    eight = inspect_raster(_raster(tmp_path / "e8.tif", np.zeros((3, 20, 20), np.uint8)))
    assert colour_match(eight, TARGET).colour == tuple((1.0, t[0]) for t in TARGET)
    sixteen = inspect_raster(_raster(tmp_path / "e16.tif", np.full((3, 20, 20), 7, np.uint16), nodata=7))
    assert sixteen.stretch == ((7.0, 8.0),) * 3


def test_colour_matched_values_are_clipped_to_the_8_bit_range_in_float32(tmp_path: Path) -> None:
    data = np.tile(np.arange(0, 256, 5, dtype=np.uint8), (3, 20, 1))
    info = inspect_raster(_raster(tmp_path / "c.tif", data, nodata=None))
    steep = replace(info, colour=((2.0, -100.0),) * 3)  # 0..255 → -100..410
    for d in (data, data[:, :1, ::5]):  # the table and the formula (33 values: 0..250)
        got = to_unit(d, steep)
        assert got.dtype == np.float32 and got.min() == -1.0 and got.max() == 1.0
    wide = inspect_raster(_raster(tmp_path / "w.tif", (data.astype(np.uint16) * 200), nodata=None))
    assert to_unit(data.astype(np.uint16) * 200, wide).dtype == np.float32


@pytest.mark.parametrize(
    ("size", "overviews"),
    [((1500, 1100), False), ((2048, 3000), False), ((3000, 1025), False), ((1200, 1200), True)],
)
@pytest.mark.parametrize("resampling", [Resampling.average, Resampling.nearest])
def test_the_statistics_overview_read_in_cells_equals_one_read_of_the_whole_raster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: tuple[int, int], overviews: bool, resampling: Resampling
) -> None:
    """Cells cut along whole output pixels give each overview pixel the footprint one read gives
    it (an axis that is not a whole multiple, and a raster with its own overviews, read whole)."""
    monkeypatch.setattr(read, "OVERVIEW_CELL", 96)  # many cells on a small raster
    rng = np.random.default_rng(sum(size))
    bands = rng.integers(1, 256, (3, *size), dtype=np.uint8)
    bands[:, : size[0] // 3, : size[1] // 5] = 0  # nodata: the valid mask is read in cells too
    path = _raster(tmp_path / "r.tif", bands)
    if overviews:
        with rasterio.open(path, "r+") as ds:
            ds.build_overviews([3], Resampling.average)
    with rasterio.open(path) as src:
        f = -(-max(size) // 1024)
        shape = (size[0] // f, size[1] // f)
        cells = len(list(read._overview_cells(src, (1, 2, 3), shape)))
        assert cells == 1 if overviews else cells > 1  # GDAL picks an overview level per read: whole
        whole = src.read([1, 2, 3], out_shape=(3, *shape), resampling=resampling)
        whole_valid = src.dataset_mask(out_shape=shape, resampling=Resampling.nearest) > 0
        data, valid = read._overview(src, (1, 2, 3), resampling)
    np.testing.assert_array_equal(data, whole)
    np.testing.assert_array_equal(valid, whole_valid)
