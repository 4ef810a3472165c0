"""geopix: aerial GeoTIFF → map raster with a pix2pix generator, tiled on Dask.

The public API is imported lazily so ``import geopix`` stays cheap (no torch or Dask
until a function that needs them is called).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {
    "render": "geopix.pipeline",
    "predict": "geopix.images",
    "info": "geopix.describe",
    "train": "geopix.train",
    "evaluate": "geopix.evaluate",
    "load_model": "geopix.models.registry",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'geopix' has no attribute {name!r}")
