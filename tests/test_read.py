"""Reading: input scaling rules and colour matching to the model's training imagery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio

from geopix.config import RenderConfig, TileConfig
from geopix.pipeline import render
from geopix.read import colour_match, inspect_raster, to_unit
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
