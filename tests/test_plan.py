"""Property tests for the pure planner: coverage, no dropped edges, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geopix.errors import TilingError
from geopix.plan import RenderPlan, Resampling, TileGrid, Window, blend_window, ramp

sizes = st.integers(min_value=1, max_value=1500)
tiles = st.sampled_from([16, 32, 64, 256])


@st.composite
def grids(draw: st.DrawFn) -> TileGrid:
    tile = draw(tiles)
    overlap = draw(st.integers(min_value=0, max_value=(tile - 1) // 2))
    return TileGrid(draw(sizes), draw(sizes), tile, overlap)


@given(grids())
@settings(max_examples=200, deadline=None)
def test_cores_partition_the_raster_and_windows_contain_cores(g: TileGrid) -> None:
    covered = np.zeros((g.height, g.width), np.int32)
    for i, j in g:
        core, win = g.core(i, j), g.window(i, j)
        assert win.intersection(core) == core  # the window holds its core
        part = core.intersection(Window(0, 0, g.height, g.width))
        if part is not None:
            covered[part.row : part.row_stop, part.col : part.col_stop] += 1
    assert covered.min() == 1 and covered.max() == 1  # every pixel in exactly one core: edges kept


@given(grids(), st.data())
@settings(max_examples=200, deadline=None)
def test_tiles_for_finds_exactly_the_tiles_that_meet_a_region(g: TileGrid, data: st.DataObject) -> None:
    r0 = data.draw(st.integers(0, g.height - 1))
    c0 = data.draw(st.integers(0, g.width - 1))
    region = Window(r0, c0, data.draw(st.integers(1, g.height - r0)), data.draw(st.integers(1, g.width - c0)))
    brute = tuple(ij for ij in g if g.window(*ij).intersection(region) is not None)
    assert g.tiles_for(region) == brute


@st.composite
def plans(draw: st.DrawFn) -> RenderPlan:
    tile = draw(st.sampled_from([32, 64, 256]))
    overlap = draw(st.integers(0, (tile - 1) // 2))
    oh, ow = draw(sizes), draw(sizes)
    same = draw(st.booleans())
    wh = oh if same else draw(st.integers(1, 1500))
    ww = ow if same else draw(st.integers(1, 1500))
    chunk = draw(st.integers(tile - overlap, 2048))
    return RenderPlan(oh, ow, wh, ww, tile, overlap, chunk)


@given(plans())
@settings(max_examples=100, deadline=None)
def test_blocks_partition_the_output_and_see_every_tile_they_need(p: RenderPlan) -> None:
    seen = np.zeros((p.out_height, p.out_width), np.int32)
    for b in p.blocks():
        seen[b.out.row : b.out.row_stop, b.out.col : b.out.col_stop] += 1
        assert b.tiles == p.grid.tiles_for(b.work)
        for ij in b.tiles:  # the read window covers every tile
            assert p.grid.window(*ij).intersection(b.read) == p.grid.window(*ij)
        # bilinear reads stay inside the work region
        rows = p.resampling.work_coords(b.out.row, b.out.row_stop, 0)
        cols = p.resampling.work_coords(b.out.col, b.out.col_stop, 1)
        assert b.work.row <= np.floor(rows).min() and np.ceil(rows).max() < b.work.row_stop
        assert b.work.col <= np.floor(cols).min() and np.ceil(cols).max() < b.work.col_stop
    assert seen.min() == 1 and seen.max() == 1


@given(plans())
@settings(max_examples=50, deadline=None)
def test_planning_is_deterministic(p: RenderPlan) -> None:
    again = RenderPlan(p.out_height, p.out_width, p.work_height, p.work_width, p.tile, p.overlap, p.chunk)
    assert list(p.blocks()) == list(again.blocks())


def test_raster_smaller_than_one_tile_gets_one_tile() -> None:
    p = RenderPlan(10, 7, 10, 7, 256, 64, 1024)
    (block,) = list(p.blocks())
    assert block.tiles == ((0, 0),) and block.out == Window(0, 0, 10, 7)
    assert len(p.grid) == 1 and p.n_tiles == 1  # one tile in the grid, not only in the block


def test_region_restricts_blocks_to_the_aoi() -> None:
    p = RenderPlan(1000, 1000, 1000, 1000, 256, 64, 300, region=Window(100, 200, 250, 400))
    outs = [b.out for b in p.blocks()]
    assert outs[0] == Window(100, 200, 250, 300) and outs[-1] == Window(100, 500, 250, 100)


@pytest.mark.parametrize(("tile", "overlap"), [(256, 128), (256, -1), (0, 0)])
def test_impossible_tilings_are_refused(tile: int, overlap: int) -> None:
    with pytest.raises(TilingError, match=f"tile {tile} with overlap {overlap} cannot work"):
        TileGrid(100, 100, tile, overlap)
    assert len(TileGrid(3, 3, 1, 0)) == 9  # the smallest tiling: 1 px tiles, no overlap


def test_blend_window_is_smooth_symmetric_and_positive() -> None:
    w = blend_window(256, 64)
    assert w.min() > 0 and np.allclose(w, w.T) and np.allclose(w, w[::-1, ::-1])
    r = ramp(256, 64)
    assert np.all(np.diff(r[:64]) > 0) and np.all(r[64:192] == 1)
    # neighbours overlapping by `overlap` always hand over with weights that sum to a smooth curve
    assert np.allclose(r[192:] + r[:64], 1.0)


def test_resampling_identity() -> None:
    rs = Resampling(100, 80, 100, 80)
    assert rs.identity and rs.work_region(Window(3, 4, 5, 6)) == Window(3, 4, 5, 6)


@st.composite
def plans(draw: st.DrawFn) -> RenderPlan:
    tile = draw(tiles)
    overlap = draw(st.integers(min_value=0, max_value=(tile - 1) // 2))
    out_h, out_w = draw(sizes), draw(sizes)
    scale = draw(st.sampled_from([0.25, 0.5, 1.0, 2.0, 7.7]))  # work pixels per output pixel
    work_h, work_w = max(1, round(out_h * scale)), max(1, round(out_w * scale))
    chunk = draw(st.integers(min_value=tile - 2 * overlap, max_value=2048))
    return RenderPlan(out_h, out_w, work_h, work_w, tile, overlap, chunk)


@given(plans())
@settings(max_examples=150, deadline=None)
def test_footprint_is_the_block_without_listing_its_tiles(plan: RenderPlan) -> None:
    nb, mb = plan.block_shape
    for bi, bj in {(0, 0), (nb - 1, mb - 1), (nb // 2, mb // 2)}:
        b = plan.block(bi, bj)
        assert plan.footprint(bi, bj) == (b.out, b.work, b.read, len(b.tiles))
    assert plan.n_tiles == len(plan.grid.tiles_for(plan.resampling.work_region(plan.extent)))


def test_tile_size_error_names_a_setting_that_works() -> None:
    from geopix.plan import check_tiling

    with pytest.raises(TilingError, match=r"try --tile-size 512 --overlap 64"):
        check_tiling(300, 64, 256, 8)
    check_tiling(512, 64, 256, 8)


# ---- from mutation testing (docs/testing.md): each test below failed on a surviving mutant ----


def test_empty_rasters_and_chunks_are_refused_naming_the_sizes() -> None:
    for dims in ((0, 5, 5, 5), (5, 0, 5, 5), (5, 5, 0, 5), (5, 5, 5, 0)):
        with pytest.raises(TilingError, match=r"empty raster: output \d+×\d+, work \d+×\d+"):
            RenderPlan(*dims)
    with pytest.raises(TilingError, match="--chunk-size 0 must be positive"):
        RenderPlan(5, 5, 5, 5, chunk=0)
    assert len(list(RenderPlan(5, 5, 5, 5, 32, 4, chunk=1).blocks())) == 25  # 1 px blocks are fine
    for h, w in ((0, 5), (5, 0)):
        with pytest.raises(TilingError, match=f"cannot tile an empty {h}×{w} raster"):
            TileGrid(h, w)


def test_tiles_for_the_last_rows_stops_at_the_last_tile() -> None:
    """A raster ending within ``lead`` of a multiple of the stride: the windows of the last tiles
    reach past it, and no tile beyond the grid is listed."""
    g = TileGrid(440, 445, 256, 32)  # stride 224, lead 16: 440 > 2·224 − 16
    assert g.tiles_for(Window(0, 0, 440, 445)) == tuple(g) and len(g) == 4


def test_work_region_is_the_smallest_window_bilinear_reads() -> None:
    rs = Resampling(10, 10, 20, 20)  # 2 work px per output px
    # output rows 0..4 sample work rows 0.5 .. 8.5: bilinear reads rows 0..9
    assert rs.work_region(Window(0, 0, 5, 5)) == Window(0, 0, 10, 10)


def test_a_one_pixel_overlap_still_ramps() -> None:
    np.testing.assert_allclose(ramp(6, 1), [0.5, 1, 1, 1, 1, 0.5])
    assert blend_window(32, 4).dtype == np.float32  # the accumulator's type: half the memory of float64


def test_blocks_are_ordered_as_a_checkerboard() -> None:
    """One colour of the checkerboard first (row-major within it), so the second colour finds
    every border tile it shares already predicted (execute.TileCache)."""
    from geopix.plan import cache_friendly_order

    p = RenderPlan(700, 900, 700, 900, 64, 8, 200)
    order = [b.index for b in cache_friendly_order(list(p.blocks()))]
    colours = [(i + j) % 2 for i, j in order]
    first = colours.count(0)
    assert colours == [0] * first + [1] * (len(order) - first)
    assert order[:first] == sorted(order[:first]) and order[first:] == sorted(order[first:])
    assert sorted(order) == [b.index for b in p.blocks()]


def test_tile_size_error_suggests_an_integer_overlap() -> None:
    from geopix.plan import check_tiling

    with pytest.raises(TilingError, match=r"try --tile-size 512 --overlap 128$"):
        check_tiling(300, 200, 256, 8)
