"""The base install covers everything the README shows: no command needs an extra for it."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")
PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    return {r.split(">")[0].split("=")[0].split("[")[0].split(";")[0].strip().lower() for r in requirements}


@pytest.mark.parametrize("dist", ["pmtiles", "rio-tiler", "starlette", "uvicorn"])
def test_the_tiles_and_server_of_the_readme_are_in_the_base_install(dist: str) -> None:
    # geopix tiles OUT.pmtiles, geopix serve (tile sets, GeoTIFFs and --source tiled on request)
    assert dist in _names(PYPROJECT["dependencies"])
