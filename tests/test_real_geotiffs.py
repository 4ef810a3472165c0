"""The four real GeoTIFFs in ../shared render with their georeferencing and masks intact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from geopix.config import RenderConfig, TileConfig
from geopix.pipeline import render
from tests.conftest import GEOTIFFS, need_shared

pytestmark = pytest.mark.slow

NAMES = [
    "vienna_30cm_epsg31256.tif",
    "massachusetts_1m_epsg26986_nodata255.tif",
    "paris_30cm_epsg4326.tif",
    "vegas_30cm_epsg4326_rgba.tif",
]


@pytest.mark.parametrize("name", NAMES)
def test_real_geotiff_renders(name: str, checkpoint: Path, tmp_path: Path) -> None:
    src = need_shared(GEOTIFFS / name)
    render(
        RenderConfig(
            input=src,
            output_dir=tmp_path,
            model=str(checkpoint),
            tiles=TileConfig(256, 64, 1024),
            scheduler="sync",
        )
    )
    with rasterio.open(src) as s, rasterio.open(tmp_path / "map.tif") as o:
        assert (o.crs, o.transform, o.width, o.height) == (s.crs, s.transform, s.width, s.height)
        src_mask, out_mask = s.dataset_mask(), o.dataset_mask()
        # every masked source pixel is masked in the output; valid ones are mapped
        assert not (out_mask[src_mask == 0]).any()
        assert (out_mask[src_mask > 0] > 0).mean() > 0.99
        if "nodata" in name:  # (the Vegas alpha band is fully opaque)
            assert (src_mask == 0).any()
        assert np.std(o.read(1)[out_mask > 0]) > 0
