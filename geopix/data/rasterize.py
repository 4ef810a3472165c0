"""Draw style-classed features on a raster grid: the map the style would show, and what is known.

Two arrays per grid:

* ``top``: the class the style shows at each pixel — features burned in draw order with
  rasterio's ``features.rasterize`` (pixel centres inside a polygon; later classes on top),
  background elsewhere;
* ``allowed``: a bit mask over style classes of what the pixel may truly be.  Where a
  covered class is drawn, that class — plus any *uncovered* class drawn above it that can lie
  over it (a water layer says nothing of a bridge over it; no road crosses a building, see
  ``StyleClass.roads_cross``).  Where nothing is drawn, background plus every
  uncovered class: a building-only layer tells us a pixel is *not a building*, not that it is
  background.  Areas of ignored features (a forest: park or background?) and pixels without
  source data are 0 (unknown).  Training maximises the probability of the allowed set, so an
  all-classes pixel carries no information and 0 is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rasterio.features import rasterize
from rasterio.transform import Affine

from geopix import style
from geopix.data.vectors import Features

ALL_CLASSES = (1 << len(style.CLASSES)) - 1


@dataclass(frozen=True)
class Labels:
    """``top``: (H, W) uint8 class index; ``allowed``: (H, W) uint8 class bit mask, 0 = unknown."""

    top: np.ndarray
    allowed: np.ndarray

    def known(self) -> np.ndarray:
        """Pixels that say something (not unknown, not "could be anything")."""
        return (self.allowed != 0) & (self.allowed != ALL_CLASSES)


def allowed_lut(covers: frozenset[str]) -> np.ndarray:
    """``lut[top]``: the allowed bit mask of a pixel whose drawn (covered) class is ``top``."""
    uncovered = [c.index for c in style.CLASSES if c.name not in covers and c.name != "background"]
    lut = np.zeros(len(style.CLASSES), np.uint8)
    for t, below in enumerate(style.CLASSES):
        bits = 1 << t
        for u in uncovered:
            above = style.CLASSES[u]
            if above.order > below.order and (above.kind != "road" or below.roads_cross):
                bits |= 1 << u
        lut[t] = bits
    return lut


def rasterize_labels(
    features: Features, transform: Affine, shape: tuple[int, int], valid: np.ndarray | None = None
) -> Labels:
    """``top`` and ``allowed`` of ``features`` on the grid ``transform`` × ``shape`` (see the module docstring)."""
    drawn = features.classes >= 0
    order = np.array([style.CLASSES[c].order if c >= 0 else -1 for c in features.classes])
    idx = [i for i in np.argsort(order, kind="stable") if drawn[i] and not features.geoms[i].is_empty]
    top = np.zeros(shape, np.uint8)
    if idx:
        rasterize(
            ((features.geoms[i], int(features.classes[i])) for i in idx),
            out=top,
            transform=transform,
            dtype="uint8",
        )
    allowed = allowed_lut(features.covers)[top]
    ignored = [g for g, c in zip(features.geoms, features.classes, strict=True) if c < 0 and not g.is_empty]
    if ignored:
        mask = rasterize(((g, 1) for g in ignored), out_shape=shape, transform=transform, dtype="uint8") > 0
        allowed[mask & (top == 0)] = 0
    if valid is not None:
        allowed[~valid] = 0
    return Labels(top, allowed)
