"""The ``geopix`` Typer app every command module adds its commands to, and what they share:
the root options (``--version``, ``--debug``) and ``interrupted_says``."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

import typer

from geopix import __version__
from geopix.errors import Interrupted

app = typer.Typer(
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
