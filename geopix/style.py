"""The map style as data: the classes a map is drawn in, their colours, draw order and road widths.

One table, so the palette head (which palette colour means which class), the vector
rasterizer (what colour and width to draw a feature) and the metrics (which class a rendered
pixel shows) cannot disagree.

Colours are the shipped ``sat2map`` palette: k-means (10 colours) over the Berkeley maps
training maps (Google's 2013 style around New York).  Seven of the ten are classes; the other
three are anti-aliasing blends that the nearest class colour absorbs (222,218,210 → background,
203,205,190 → park, 227,174,75 → highway casing).  Road widths were measured on 100 training
maps at 0.90 m/px (``python benchmarks/measure_style.py``: per map, the median over road pixels
of the shorter of the horizontal and vertical runs through them): minor roads 10 px (IQR 10–10)
= 9 m; highways with casing 26 px (IQR 16–31) = 23 m; arterials are rare and their yellow
suffers most from JPEG (median 10 px, IQR 2–16), so they get 13 m, between the two.  The style
draws roads wider than they are on the ground, so the rasterizer must too, or the model is
taught a thinner road than the one it learned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: Width of one lane in the style's metres: a two-lane minor road is drawn 9 m wide.
LANE_WIDTH_M = 4.5


@dataclass(frozen=True, slots=True)
class StyleClass:
    """One thing a map draws: its colour, its place in the draw order, and (roads) its width."""

    name: str
    colour: tuple[int, int, int]
    order: int  # higher is drawn on top
    width_m: float | None = None  # roads: drawn width in the style's metres
    kind: str = "area"  # area | road
    # Can a road be drawn over this class?  Roads cross parks, water (bridges) and background,
    # never a building's footprint.  Partial labels rely on it: were a labelled building pixel
    # allowed to be an unlabelled road, "road" would satisfy both a building-only layer's inside
    # and its outside (not a building), and fine-tuning learns to paint houses as roads.
    roads_cross: bool = True

    @property
    def index(self) -> int:
        return CLASS_NAMES.index(self.name)


#: Every class, background first (index 0 is what no feature covers).
CLASSES: tuple[StyleClass, ...] = (
    StyleClass("background", (232, 229, 222), 0),
    StyleClass("park", (202, 222, 172), 1),
    StyleClass("water", (176, 207, 254), 2),
    StyleClass("building", (242, 240, 234), 3, roads_cross=False),
    StyleClass("minor_road", (253, 253, 251), 4, 9.0, "road"),
    StyleClass("arterial", (247, 220, 140), 5, 13.0, "road"),
    StyleClass("highway", (247, 158, 38), 6, 23.0, "road"),
)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
BY_NAME: dict[str, StyleClass] = {c.name: c for c in CLASSES}
ROAD_CLASSES: tuple[str, ...] = tuple(c.name for c in CLASSES if c.kind == "road")
COLOURS = np.array([c.colour for c in CLASSES], np.float32)  # (C, 3)

#: Groups the metrics report: any road class counts as "road".
METRIC_GROUPS: dict[str, tuple[str, ...]] = {
    "building": ("building",),
    "road": ROAD_CLASSES,
    "park": ("park",),
    "water": ("water",),
    "background": ("background",),
}


def road_width_m(name: str, lanes: float | None = None) -> float:
    """Drawn width of a road of class ``name``: ``lanes × LANE_WIDTH_M`` when the lane count is known."""
    cls = BY_NAME[name]
    if cls.width_m is None:
        raise ValueError(f"{name!r} is not a road class ({', '.join(ROAD_CLASSES)})")
    if lanes is not None and np.isfinite(lanes) and lanes > 0:
        return float(lanes) * LANE_WIDTH_M
    return cls.width_m


def classify(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` colours (0..255) → index of the nearest style class colour (Euclidean RGB)."""
    x = np.asarray(rgb, np.float32)
    flat = x.reshape(-1, 3)
    out = np.empty(flat.shape[0], np.uint8)
    step = 1 << 20  # bounded memory on large maps
    for s in range(0, flat.shape[0], step):
        d = ((flat[s : s + step, None, :] - COLOURS[None]) ** 2).sum(-1)
        out[s : s + step] = d.argmin(-1)
    return out.reshape(x.shape[:-1])


def palette_classes(palette: Sequence[Sequence[int]]) -> np.ndarray:
    """The style class of each palette colour of a palette-head checkpoint (nearest colour)."""
    return classify(np.asarray(palette, np.float32))


def class_to_palette_mask(palette: Sequence[Sequence[int]]) -> np.ndarray:
    """``(C, K)`` bool: palette colour k draws style class c (several blends may draw one class)."""
    owner = palette_classes(palette)
    return owner[None, :] == np.arange(len(CLASSES))[:, None]


def palette_bias(palette: Sequence[Sequence[int]], offsets: Mapping[str, float]) -> tuple[float, ...]:
    """Per-class logit offsets → one offset per palette colour (every colour that draws the class).

    Keys are class names or metric groups (``road``: every road class).  A prior shift of the
    palette decoding: it trades a class's precision for its recall without touching the weights.
    """
    owner = class_to_palette_mask(palette)
    bias = np.zeros(len(palette), np.float64)
    for name, value in offsets.items():
        members = METRIC_GROUPS.get(name, (name,))
        if any(m not in BY_NAME for m in members):
            known = ", ".join(dict.fromkeys([*CLASS_NAMES, *METRIC_GROUPS]))
            raise ValueError(f"{name!r} is not a style class or group; use one of {known}")
        for m in members:
            bias[owner[CLASS_NAMES.index(m)]] += float(value)
    return tuple(float(b) for b in bias)


def paint(classes: np.ndarray) -> np.ndarray:
    """``(H, W)`` class indices → ``(H, W, 3)`` uint8 map in the style's colours."""
    return COLOURS.astype(np.uint8)[classes]
