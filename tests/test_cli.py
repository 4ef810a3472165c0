"""The CLI adapter: exit codes, one-line errors, --debug, help."""

from __future__ import annotations

from pathlib import Path

import pytest

from geopix import errors
from geopix.cli import main


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("render", "predict", "info", "demo", "train"):
        assert cmd in out


def test_render_and_summary(aerial: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "render",
            str(aerial),
            "-o",
            str(tmp_path),
            "--model",
            str(checkpoint),
            "--scheduler",
            "sync",
            "--no-progress",
            "--chunk-size",
            "512",
        ]
    )
    assert code == 0 and (tmp_path / "map.tif").exists()
    assert "tiles/s" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["render", "{tmp}/missing.tif", "-o", "{tmp}/o", "--model", "{ckpt}"], errors.InputNotFoundError),
        (["render", "{aerial}", "-o", "{tmp}/o", "--model", "{tmp}/none.safetensors"], errors.CheckpointError),
        (["render", "{aerial}", "-o", "{tmp}/o", "--model", "{ckpt}", "--overlap", "200"], errors.TilingError),
        (["render", "{aerial}", "-o", "{tmp}/o", "--model", "{ckpt}", "--bands", "x"], errors.BandError),
    ],
)
def test_errors_are_one_line_with_distinct_codes(
    args: list[str],
    error: type[errors.GeopixError],
    aerial: Path,
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [a.format(tmp=tmp_path, ckpt=checkpoint, aerial=aerial) for a in args]
    assert main(argv) == error.exit_code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err


def test_exit_codes_are_distinct() -> None:
    codes = {}
    for name in dir(errors):
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, errors.GeopixError) and cls is not errors.GeopixError:
            codes.setdefault(cls.exit_code, []).append(name)
    assert all(len(v) == 1 for v in codes.values()), codes


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    with pytest.raises(errors.InputNotFoundError):
        main(["--debug", "info", str(tmp_path / "missing.tif")])
