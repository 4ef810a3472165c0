"""The map style: one table the palette head, the rasterizer and the metrics share."""

from __future__ import annotations

import re

import numpy as np
import pytest

from geopix import style


def test_style_colours_are_the_shipped_palette_head_colours() -> None:
    from geopix.models.registry import WEIGHTS_DIR, load_model

    if not (WEIGHTS_DIR / "sat2map.safetensors").exists():
        pytest.skip("sat2map weights are not installed")
    palette = load_model("sat2map").spec.palette
    assert {c.colour for c in style.CLASSES} <= set(palette)
    owners = [style.CLASS_NAMES[i] for i in style.palette_classes(palette)]
    assert set(owners) == set(style.CLASS_NAMES)  # every class has a colour the head can draw


def test_classify_and_paint_round_trip() -> None:
    idx = np.arange(len(style.CLASSES), dtype=np.uint8).reshape(1, -1)
    painted = style.paint(idx)
    assert painted.dtype == np.uint8 and painted.shape == (1, len(style.CLASSES), 3)
    assert np.array_equal(style.classify(painted), idx)
    # A blend between park and background lands on the nearer one.
    assert style.CLASS_NAMES[style.classify(np.array([205, 222, 178]))] == "park"


def test_road_widths() -> None:
    assert style.road_width_m("minor_road") == 9.0
    assert style.road_width_m("highway", lanes=6) == 6 * style.LANE_WIDTH_M
    assert style.road_width_m("arterial", lanes=float("nan")) == 13.0
    assert style.road_width_m("arterial", lanes=1) == style.LANE_WIDTH_M  # one known lane is a width
    assert style.road_width_m("arterial", lanes=0) == style.road_width_m("arterial", lanes=-2) == 13.0  # unknown
    with pytest.raises(ValueError, match=re.escape(f"'park' is not a road class ({', '.join(style.ROAD_CLASSES)})")):
        style.road_width_m("park")


def test_class_to_palette_mask_covers_each_palette_colour_once() -> None:
    palette = [c.colour for c in style.CLASSES] + [(222, 218, 210)]
    mask = style.class_to_palette_mask(palette)
    assert mask.shape == (len(style.CLASSES), len(palette))
    assert (mask.sum(0) == 1).all()
    assert mask[style.CLASS_NAMES.index("background"), -1]


def test_palette_bias_offsets_every_colour_of_a_class_or_group() -> None:
    palette = [c.colour for c in style.CLASSES] + [(222, 218, 210), (250, 250, 248)]  # + background, road blends
    owner = style.palette_classes(palette)
    bias = style.palette_bias(palette, {"building": 0.25, "road": 0.05, "minor_road": 0.1})
    for k, cls in enumerate(owner):
        name = style.CLASS_NAMES[cls]
        want = {"building": 0.25, "minor_road": 0.15, "arterial": 0.05, "highway": 0.05}.get(name, 0.0)
        assert bias[k] == pytest.approx(want), (k, name)
    assert sum(b != 0 for b in bias) == 1 + len(style.ROAD_CLASSES) + 1  # the road blend is a minor road too
    assert style.palette_bias(palette, {}) == (0.0,) * len(palette)
    with pytest.raises(ValueError, match="'roof' is not a style class or group; use one of background, "):
        style.palette_bias(palette, {"roof": 1.0})


def test_classify_covers_more_pixels_than_one_chunk() -> None:
    """classify works through 2**20 pixels at a time (bounded memory): every chunk is classified."""
    idx = np.resize(np.arange(len(style.CLASSES), dtype=np.uint8), (1 << 20) + 7)
    assert np.array_equal(style.classify(style.paint(idx)), idx)
