"""The ``geopix`` command: a thin adapter over the library.

Each command parses options, builds a frozen config and calls one library function.
``main()`` turns ``GeopixError`` into a one-line message and a distinct exit code;
``--debug`` (or ``GEOPIX_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import os
import sys

import typer

from geopix.errors import GeopixError

app = typer.Typer(
    name="geopix",
    help="Aerial GeoTIFF → seamless, georeferenced map raster and web tiles, with a pix2pix generator on Dask.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_DEBUG = False


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    global _DEBUG
    _DEBUG = debug
    if version:
        from geopix import __version__

        typer.echo(__version__)
        raise typer.Exit()


def _register() -> None:
    # Importing a command module adds its commands to ``app``.
    from geopix.cli import evaluate as _evaluate  # noqa: F401
    from geopix.cli import render as _render  # noqa: F401
    from geopix.cli import tiles as _tiles  # noqa: F401
    from geopix.cli import train as _train  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    _register()
    debug = os.environ.get("GEOPIX_DEBUG") == "1" or "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        app(args=argv, standalone_mode=False)
    except GeopixError as exc:
        if debug:
            raise
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        return exc.exit_code
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True, fg=typer.colors.YELLOW)
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return 1
    except Exception as exc:  # click's usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if debug:
            raise
        typer.secho(
            f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
            err=True,
            fg=typer.colors.RED,
        )
        return 1
    return 0


def run() -> None:
    sys.exit(main())
