"""Oracle tests: tiled + blended output equals the whole-image result for a pointwise stand-in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

import geopix.execute as execute
from geopix.blend import Accumulator, bilinear
from geopix.config import InferConfig, RenderConfig, TileConfig
from geopix.pipeline import render
from geopix.plan import RenderPlan, Resampling, Window

MIX = np.array([[0.6, -0.3, 0.2], [0.1, 0.9, -0.4], [-0.2, 0.3, 0.7]], np.float32)


def stand_in(x: np.ndarray) -> np.ndarray:
    """A fixed 1×1 convolution + tanh: a generator whose true output is known everywhere."""
    y = np.tanh(np.einsum("oc,nchw->nohw", MIX, x) + 0.1)
    return (y + 1.0) * 127.5


class StandIn:
    """What ``execute`` asks of a ``Predictor``."""

    def tiles_per_call(self, batch_size: int) -> int:
        return batch_size

    def predict(self, x: np.ndarray) -> np.ndarray:
        return stand_in(x)


@pytest.mark.parametrize(("tile", "overlap", "chunk"), [(32, 8, 40), (64, 16, 100), (64, 0, 64), (32, 15, 333)])
def test_blend_equals_whole_image(tile: int, overlap: int, chunk: int) -> None:
    rng = np.random.default_rng(0)
    h, w = 150, 170
    img = rng.uniform(-1, 1, (3, h, w)).astype(np.float32)
    whole = stand_in(img[None])[0]
    plan = RenderPlan(h, w, h, w, tile, overlap, chunk)
    out = np.full_like(whole, np.nan)
    padded_origin = Window(-tile, -tile, h + 2 * tile, w + 2 * tile)
    padded = np.pad(img, ((0, 0), (tile, tile), (tile, tile)), mode="reflect")
    for b in plan.blocks():
        acc = Accumulator(b.work, 3, tile, overlap)
        for ij in b.tiles:
            win = plan.grid.window(*ij)
            acc.add(win, stand_in(padded[(slice(None), *win.relative_to(padded_origin))][None])[0])
        vals, covered = acc.result()
        assert covered.all()
        out[(slice(None), *b.out.relative_to(Window(0, 0, h, w)))] = vals
    np.testing.assert_allclose(out, whole, atol=1e-3)


@pytest.mark.parametrize(("work_h", "work_w"), [(30, 40), (30, 60), (180, 60)])
def test_bilinear_of_a_linear_ramp_is_exact(work_h: int, work_w: int) -> None:
    """90 × 120 output pixels from work grids of other (and per-axis different) scales; the expected
    positions are the pixel-centre rule written out here, not taken from ``work_coords``."""
    plan = RenderPlan(90, 120, work_h, work_w, 32, 8, 50)
    yy, xx = np.mgrid[0:work_h, 0:work_w].astype(np.float32)
    field = (2 * yy + 3 * xx)[None]
    for b in plan.blocks():
        values = field[(slice(None), *b.work.relative_to(Window(0, 0, work_h, work_w)))]
        got = bilinear(values, b.work, plan.resampling, b.out)
        assert got.dtype == np.float32 and got.shape == (1, b.out.height, b.out.width)
        ry = np.clip((np.arange(b.out.row, b.out.row_stop) + 0.5) * work_h / 90 - 0.5, 0, work_h - 1)[:, None]
        rx = np.clip((np.arange(b.out.col, b.out.col_stop) + 0.5) * work_w / 120 - 0.5, 0, work_w - 1)[None, :]
        np.testing.assert_allclose(got[0], 2 * ry + 3 * rx, atol=1e-3)


def test_bilinear_on_the_same_grid_is_a_crop() -> None:
    values = np.arange(2 * 20 * 30, dtype=np.float32).reshape(2, 20, 30)
    work, out = Window(10, 5, 20, 30), Window(12, 9, 6, 7)
    got = bilinear(values, work, Resampling(100, 100, 100, 100), out)
    assert np.array_equal(got, values[:, 2:8, 4:11])


@pytest.mark.parametrize(("tile", "overlap", "chunk"), [(256, 64, 256), (256, 32, 512), (256, 100, 1024)])
def test_render_with_stand_in_equals_whole_image(
    monkeypatch: pytest.MonkeyPatch, aerial: Path, checkpoint: Path, tmp_path: Path, tile: int, overlap: int, chunk: int
) -> None:
    """The full pipeline (read, plan, blend, write) with the stand-in matches the whole image."""
    monkeypatch.setattr(execute, "get_predictor", lambda *_: StandIn())
    cfg = RenderConfig(
        input=aerial,
        output_dir=tmp_path,
        model=str(checkpoint),
        tiles=TileConfig(tile, overlap, chunk),
        scheduler="sync",
        resample=False,
        infer=InferConfig(precision="fp32"),  # the stand-in: no int8 model to build for it
    )
    render(cfg)
    with rasterio.open(aerial) as src:
        x = src.read().astype(np.float32) / 127.5 - 1.0
    expected = stand_in(x[None])[0]
    with rasterio.open(tmp_path / "map.tif") as out:
        got = out.read().astype(np.float32)
    assert np.abs(got - expected).max() <= 0.5 + 1e-3  # only the final rounding to uint8


# ---- from mutation testing (docs/testing.md): each test below failed on a surviving mutant ----


def test_to_uint8_rounds_and_clips_to_the_8_bit_range() -> None:
    from geopix.blend import to_uint8

    got = to_uint8(np.array([-5.0, 0.4, 0.6, 127.5, 254.6, 255.4, 300.0], np.float32))
    assert got.dtype == np.uint8
    assert got.tolist() == [0, 0, 1, 128, 255, 255, 255]  # rint: 127.5 → 128 (to even)


def test_uncovered_pixels_are_zero_and_not_covered() -> None:
    """Only where a tile landed has a value; elsewhere 0 and ``covered`` False (the write masks
    those pixels), never a division by zero or leftover memory; the sums are float32."""
    acc = Accumulator(Window(0, 0, 48, 48), 3, 32, 8)
    assert acc.sum.dtype == np.float32 and acc.wsum.dtype == np.float32
    acc.add(Window(-4, -4, 32, 32), np.full((3, 32, 32), 200.0, np.float32))
    with np.errstate(all="raise"):  # 0/0 outside the tile would raise here
        values, covered = acc.result()
    assert covered[:28, :28].all() and not covered[28:].any() and not covered[:, 28:].any()
    np.testing.assert_allclose(values[:, :28, :28], 200.0, rtol=1e-6)
    assert values.dtype == np.float32 and not values[:, 28:].any() and not values[:, :, 28:].any()
