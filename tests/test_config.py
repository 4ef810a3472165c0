"""The stage configs of the library functions the CLI calls: each is what a keyword call of its function builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from geopix.config import RenderConfig
from geopix.errors import GeopixError, OptionError, TilingError


def test_render_keywords_are_gathered_into_the_nested_configs(tmp_path: Path) -> None:
    from geopix.pipeline import render

    # refused while the config is built: before the input is even looked at
    with pytest.raises(TilingError, match="--overlap 200"):
        render(input=str(tmp_path / "absent.tif"), output_dir=tmp_path / "o", overlap=200)
    with pytest.raises(OptionError, match="--device 'gpu'"):
        render(input=str(tmp_path / "absent.tif"), output_dir=tmp_path / "o", device="gpu")
    with pytest.raises(GeopixError, match=r"render\(\) needs input="):
        render(output_dir=tmp_path / "o")
    with pytest.raises(TypeError, match="not both: overlap"):
        render(RenderConfig(input="a.tif", output_dir=tmp_path / "o"), overlap=32)
    assert not (tmp_path / "o").exists()
