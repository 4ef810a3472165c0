"""``geopix demo``: the shipped real scene is small, credited and georeferenced, and renders to tiles."""

from __future__ import annotations

from pathlib import Path

import rasterio
import rasterio.warp

from geopix.demo import demo, demo_scene
from geopix.tilesets import open_tileset


def test_shipped_scene_is_small_real_and_credited() -> None:
    path = demo_scene()
    assert path.stat().st_size < 1_000_000
    assert (path.parent / "README.md").read_text().count("CC BY 4.0") >= 2
    with rasterio.open(path) as src:
        assert (src.width, src.height, src.count, src.dtypes[0]) == (1024, 1024, 3, "uint8")
        assert src.crs.to_epsg() == 3857 and abs(src.res[0] - 0.2986) < 1e-3
        assert src.tags()["TIFFTAG_COPYRIGHT"] == "Imagery: OpenAerialMap contributors, CC BY 4.0"
        lon, lat = rasterio.warp.transform(src.crs, "EPSG:4326", [src.bounds.left], [src.bounds.top])
    assert 36.8 < lon[0] < 37.0 and -1.4 < lat[0] < -1.2  # Nairobi


def test_demo_renders_the_scene_to_a_map_and_pmtiles(checkpoint: Path, tmp_path: Path) -> None:
    result = demo(tmp_path / "demo", model=str(checkpoint), scheduler="sync")
    assert result.render.map_path == tmp_path / "demo" / "map.tif" and result.aerial == demo_scene()
    with rasterio.open(result.render.map_path) as m:
        assert m.tags()["GEOPIX_SOURCE"] == "nairobi_oam.tif" and (m.width, m.height) == (1024, 1024)
    with open_tileset(result.tiles) as tiles, open_tileset(result.aerial) as aerial:
        assert tiles.kind == "pmtiles" and tiles.maxzoom >= 18
        tj = tiles.tilejson("http://127.0.0.1/tiles/{z}/{x}/{y}.png")
        assert "from nairobi_oam.tif with the tiny model" in tj["attribution"]
        assert aerial.tilejson("http://x/{z}/{x}/{y}.png")["attribution"].endswith("CC BY 4.0")
