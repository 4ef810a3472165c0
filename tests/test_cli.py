"""The CLI adapter: exit codes, one-line errors, --debug, help."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import rasterio

from geopix import errors
from geopix.cli import main
from geopix.config import RenderConfig, TileConfig
from geopix.pipeline import render


def map_pixels(path: Path) -> tuple:
    """A map's grid and pixels, comparable with ``==``."""
    with rasterio.open(path) as ds:
        return ds.crs, ds.transform, ds.shape, ds.read().tobytes(), ds.dataset_mask().tobytes()


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("render", "predict", "info", "demo", "train"):
        assert cmd in out


def test_render_and_summary(
    aerial: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    frozen = gc_freezes(monkeypatch, allowed=True)
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
    assert code == 0 and "tiles/s" in capsys.readouterr().err
    assert frozen  # once the render's modules were imported (process.freeze_gc)
    cfg = RenderConfig(input=aerial, output_dir=tmp_path / "lib", model=str(checkpoint), scheduler="sync")
    lib = render(replace(cfg, tiles=TileConfig(chunk_size=512)))
    assert map_pixels(tmp_path / "map.tif") == map_pixels(lib.map_path)  # what the library renders


def gc_freezes(monkeypatch: pytest.MonkeyPatch, *, allowed: bool) -> list[bool]:
    """Record gc.freeze calls instead of freezing this (long-lived) test process."""
    import gc

    from geopix import process

    frozen: list[bool] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    monkeypatch.setattr(process, "_GC_FREEZE", allowed)
    return frozen


def test_only_the_console_script_freezes_the_garbage_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    """The script's exit skips the last collection over every object (0.7–1.2 s after a render);
    main() called in a test's process freezes nothing."""
    from geopix import cli, process

    frozen = gc_freezes(monkeypatch, allowed=False)
    process.freeze_gc()
    assert not frozen
    monkeypatch.setattr(cli, "main", lambda: 3)
    with pytest.raises(SystemExit) as stop:
        cli.run()
    assert stop.value.code == 3 and frozen == [True]


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
            if "exit_code" not in vars(cls):  # a finer kind of its parent (TileReadError is a TilesetError): its code
                continue
            codes.setdefault(cls.exit_code, []).append(name)
    assert all(len(v) == 1 for v in codes.values()), codes


def test_debug_shows_the_traceback_and_keeps_the_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--debug", "info", str(tmp_path / "missing.tif")])
    err = capsys.readouterr().err
    assert code == errors.InputNotFoundError.exit_code
    assert "Traceback (most recent call last)" in err and "InputNotFoundError" in err


# ---- usage errors at the edge: typer's own (vendored) click, as installed --------------------------
def test_unknown_option_is_a_usage_error_with_clicks_message(
    aerial: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", str(aerial), "-o", str(tmp_path / "o"), "--nosuch"]) == 2
    err = capsys.readouterr().err
    assert "No such option: --nosuch" in err and "Usage:" in err and "unexpected" not in err
    assert not (tmp_path / "o").exists()


def test_missing_argument_and_bad_type_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render"]) == 2
    assert main(["render", "x.tif", "-o", "o", "--tile-size", "big"]) == 2
    err = capsys.readouterr().err
    assert "Missing argument" in err and "Invalid value for '--tile-size'" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from geopix import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"geopix {__version__}"


_ORPHAN = """
import asyncio, gc, sys
from geopix.cli import main
code = main(sys.argv[1:])
loop = asyncio.new_event_loop()
fut = loop.create_future()
fut.set_exception(TimeoutError("Timeout"))  # as distributed's loop leaves one when Ctrl-C tears it down
del fut
gc.collect()
loop.close()
sys.exit(code)
"""


@pytest.mark.parametrize("debug", [False, True])
def test_orphaned_asyncio_futures_print_nothing_after_the_last_line(debug: bool) -> None:
    """An interrupted run's last line says what was kept; asyncio's GC-time noise may not follow it."""
    import subprocess
    import sys

    args = [sys.executable, "-c", _ORPHAN, *(["--debug"] if debug else []), "--version"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert ("Future exception was never retrieved" in done.stderr) is debug, done.stderr


def test_bare_geopix_prints_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    captured = capsys.readouterr()
    assert "render" in captured.out + captured.err and "unexpected" not in captured.err


def test_typer_raises_its_vendored_clicks_exceptions() -> None:
    """The handler maps the exception types the installed typer really raises."""
    import typer

    from geopix.cli import click_exceptions

    with pytest.raises(click_exceptions.UsageError):
        typer.main.get_command(__import__("geopix.cli", fromlist=["app"]).app).main(
            ["render", "--nosuch"], standalone_mode=False
        )


def test_tile_size_message_names_a_setting_that_works(
    aerial: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--tile-size 100` used to take two tries: first the overlap, then the model's multiple."""
    base = ["render", str(aerial), "-o", str(tmp_path / "o"), "-m", str(checkpoint), "--scheduler", "sync"]
    assert main([*base, "--tile-size", "100"]) == errors.TilingError.exit_code
    err = capsys.readouterr().err
    suggestion = err.split("try ")[1].split()
    assert suggestion[:2] == ["--tile-size", "256"] and suggestion[2] == "--overlap"
    assert main([*base, *suggestion, "--no-progress"]) == 0
    assert main([*base[:3], str(tmp_path / "p"), *base[4:], "--tile-size", "300"]) == errors.TilingError.exit_code
    assert "try --tile-size 512 --overlap 32" in capsys.readouterr().err


def test_info_describes_a_model_from_its_checkpoint(capsys: pytest.CaptureFixture[str]) -> None:
    """`geopix info MODEL`: what a self-describing checkpoint says, with no raster to give."""
    import json

    from geopix.recipes import RECIPES
    from geopix.style import ROAD_CLASSES

    assert main(["info", "sat2map", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    offsets = dict(RECIPES["sat2map"].class_bias)
    want = {"building": offsets["building"]} | {c: offsets["road"] for c in ROAD_CLASSES}
    assert data["class_offsets"] == want and data["ground_resolution_m"] == 1.0 and data["direction"] == "AtoB"
    assert data["parameters"] > 10**6 and data["keep_class"] is True and data["path"].endswith("sat2map.safetensors")
    assert main(["info", "map2sat", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["direction"] == "BtoA" and "class_offsets" not in data and "tanh head" in data["architecture"]
    assert main(["info", "missing.safetensors"]) == errors.CheckpointError.exit_code
    assert "missing.safetensors" in capsys.readouterr().err


def _command_paths(command, path: tuple[str, ...] = ()):
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from _command_paths(sub, (*path, name))


def test_no_help_shows_a_flag_as_taking_a_value(capsys: pytest.CaptureFixture[str]) -> None:
    """Typer's rich help shows flags' type as ``<bool>``: no command's help may (an ``<int>`` still shows)."""
    import typer.main

    from geopix.cli.app import app

    paths = list(_command_paths(typer.main.get_command(app)))
    assert ("render",) in paths and ("dataset", "labels") in paths
    shown = {}
    for path in paths:
        assert main([*path, "--help"]) == 0
        shown[path] = capsys.readouterr().out
    assert {p for p, out in shown.items() if "<bool>" in out} == set()
    assert "--cog" in shown[("render",)] and "<int>" in shown[("render",)]
    assert "--help" in shown[()]
