"""Optional dependencies: the base install covers the README; an extra's absence is named before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from geopix import deps
from geopix.cli import main
from geopix.errors import MissingDependencyError

tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")
PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    return {r.split(">")[0].split("=")[0].split("[")[0].split(";")[0].strip().lower() for r in requirements}


def test_the_tile_formats_of_the_readme_are_in_the_base_install() -> None:
    assert "pmtiles" in _names(PYPROJECT["dependencies"])  # geopix tiles OUT.pmtiles, geopix serve OUT.pmtiles


@pytest.mark.parametrize("module", sorted(deps.OPTIONAL))
def test_each_optional_package_is_in_the_extra_its_message_names(module: str) -> None:
    dist, extra = deps.OPTIONAL[module]
    assert dist in _names(PYPROJECT["optional-dependencies"][extra])


def test_serving_a_geotiff_without_rio_tiler_names_the_extra_before_starting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import geopix.serve

    monkeypatch.setattr(deps, "find_spec", lambda name: None)
    monkeypatch.setattr(geopix.serve, "serve", lambda *a, **k: pytest.fail("the server started"))
    assert main(["serve", str(tmp_path / "map.tif")]) == MissingDependencyError.exit_code == 40
    assert 'pip install "geopix[tiles]"' in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "t.pmtiles"), "--source", str(tmp_path / "a.tif")]) == 40
