"""The ``geopix`` Typer app every command module adds its commands to, and what they share:
the root options (``--version``, ``--debug``), flags shown as flags in help, and ``interrupted_says``."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

import typer
from typer.core import TyperGroup, TyperOption

from geopix import __version__
from geopix.errors import Interrupted


def _flags_take_no_value(command) -> None:
    """Blank the value column of every flag in ``command``'s help and its subcommands' (``--help`` too).

    Typer's rich help shows a flag's type as ``<bool>``, as if it took a value; an empty metavar
    is what its help shows instead.
    """
    ctx = typer.Context(command, **command.context_settings)
    for param in command.get_params(ctx):  # the help option included (made once, kept on the command)
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _flags_take_no_value(sub)


class _Geopix(TyperGroup):
    """The root command: built with every command under it, whose flags it then shows without ``<bool>``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _flags_take_no_value(self)


app = typer.Typer(
    cls=_Geopix,
    name="geopix",
    help="Aerial GeoTIFF → seamless, georeferenced map raster and web tiles, with a pix2pix generator on Dask.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"geopix {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
    ),
) -> None:
    """``--debug`` is read by ``main`` from the arguments; nothing to do here."""


@contextlib.contextmanager
def interrupted_says(message: str) -> Iterator[None]:
    """Ctrl-C or SIGTERM inside: ``interrupted: message`` (what was kept, how to go on), unless the
    library already said it."""
    try:
        yield
    except (KeyboardInterrupt, Interrupted) as exc:
        if isinstance(exc, Interrupted) and str(exc):
            raise
        raise Interrupted(message, getattr(exc, "signum", signal.SIGINT)) from exc
