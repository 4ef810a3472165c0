"""``geopix predict``: plain images in, maps out; bad images named with their exit code."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from geopix.cli import main
from geopix.errors import NotARasterError


def test_a_decompression_bomb_is_refused_with_the_file_named(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Issue 26 case 12: a PNG with more pixels than PIL decodes safely is exit 4, not "unexpected"."""
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (64, 64)).save(photos / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 3)  # the bomb: over twice the limit
    # fp32: with geopix[int8] on an int8-capable CPU, `auto` would first build this checkpoint's int8 model,
    # whose calibration images trip the lowered limit too (the test then depends on the cache's state).
    argv = ["predict", str(photos), str(tmp_path / "maps"), "--model", str(checkpoint), "--precision", "fp32"]
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == NotARasterError.exit_code and "decompression bomb" in err and str(photos / "bomb.png") in err
    assert "unexpected" not in err and not list((tmp_path / "maps").glob("*.png"))
