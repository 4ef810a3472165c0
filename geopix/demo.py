"""``geopix demo``: a real aerial scene shipped in the package, rendered to a map and web tiles.

The scene is 1024² px of Nairobi at 0.3 m (OpenAerialMap imagery, CC BY 4.0; see
``geopix/demo_data/README.md``), so a fresh install shows what geopix is for on a real place
without any data of one's own.  The map is written as ``map.tif`` plus a PMTiles pyramid, which
``geopix serve`` shows over the aerial (the CLI starts it).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from geopix.config import ProgressFn, RenderConfig
from geopix.errors import DemoDataError
from geopix.pipeline import render
from geopix.publish import RenderResult

DEMO_SCENE = "nairobi_oam.tif"
DEMO_TILES = "tiles.pmtiles"


@dataclass(frozen=True, slots=True)
class DemoResult:
    render: RenderResult
    aerial: Path  # the shipped scene (inside the installed package)
    tiles: Path


def demo_scene() -> Path:
    """The shipped aerial GeoTIFF."""
    path = Path(str(resources.files("geopix").joinpath("demo_data", DEMO_SCENE)))
    if not path.is_file():
        raise DemoDataError(f"the demo scene {path} is missing from this install; reinstall geopix")
    return path


def demo(
    out_dir: str | Path = "geopix-demo",
    model: str = "sat2map",
    workers: int | None = None,
    scheduler: str | None = None,
    on_progress: ProgressFn | None = None,
) -> DemoResult:
    """Render the shipped scene into ``out_dir`` (``map.tif``, ``tiles.pmtiles``), replacing an earlier demo."""
    aerial = demo_scene()
    result = render(
        RenderConfig(
            input=aerial,
            output_dir=Path(out_dir),
            model=model,
            overwrite=True,
            workers=workers,
            scheduler=scheduler,
            xyz=Path(DEMO_TILES),
        ),
        on_progress=on_progress,
    )
    return DemoResult(render=result, aerial=aerial, tiles=result.tiles_path)
