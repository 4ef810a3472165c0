"""The ``geopix`` command: a thin adapter over the library.

Each command parses options, builds a frozen config and calls one library function.
``main()`` is the process's entry point: it sets the process-wide settings
(``geopix.process``, SIGTERM included), shows the library's log lines on stderr, and maps
every way a command can end to one line and an exit code: a ``GeopixError`` its own code, a
usage error 2 (click's message), SIGINT 130, SIGTERM 143 (``interrupted: what was kept``).
``--debug`` (or ``GEOPIX_DEBUG=1``) adds the traceback and keeps the code.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

import typer

# Importing a command module adds its commands to ``app``.
from geopix.cli import evaluate, render, tiles, train  # noqa: F401
from geopix.cli.app import app
from geopix.errors import GeopixError, Interrupted

try:  # typer >= 0.20 raises the exceptions of its own vendored click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exceptions


class _Stderr(logging.Handler):
    """The library's log lines, one per line, on the *current* stderr (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(self.format(record), err=True)


class _OrphanedFutures(logging.Filter):
    """Drop asyncio's "Future/Task exception was never retrieved" (shown with ``--debug``).

    A Dask cluster torn down by Ctrl-C leaves futures that timed out inside distributed's event
    loop; asyncio reports them when they are garbage-collected, at exit, *after* the line that
    says what was kept.  The outcome is already decided and reported by then.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "exception was never retrieved" not in record.getMessage()


def _log_to_stderr(debug: bool = False) -> None:
    logger = logging.getLogger("geopix")
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        logger.addHandler(_Stderr())
    logger.setLevel(logging.INFO)
    aio = logging.getLogger("asyncio")
    orphans = [f for f in aio.filters if isinstance(f, _OrphanedFutures)]
    if debug:
        for f in orphans:
            aio.removeFilter(f)
    elif not orphans:
        aio.addFilter(_OrphanedFutures())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    from geopix.process import configure_process, sigterm_interrupts

    args = argv if argv is not None else sys.argv[1:]
    debug = os.environ.get("GEOPIX_DEBUG") == "1" or "--debug" in args
    configure_process()
    _log_to_stderr(debug)
    try:
        with sigterm_interrupts():
            code = app(args=argv, standalone_mode=False)
    except Interrupted as exc:
        return _fail(f"interrupted{f': {exc}' if str(exc) else ''}", 128 + exc.signum, debug, colour="yellow")
    except GeopixError as exc:
        if isinstance(exc, Warning):  # the output is written; something about it needs a look
            return _fail(f"warning: {exc}", exc.exit_code, debug, colour="yellow")
        return _fail(f"error: {exc}", exc.exit_code, debug)
    except click_exceptions.NoArgsIsHelpError:
        return 0  # a bare `geopix`: typer has printed the help
    except click_exceptions.ClickException as exc:  # usage errors: click's own message, its exit code (2)
        exc.show()
        return exc.exit_code
    except typer.Abort:
        return 1
    except Exception as exc:
        return _fail(f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1, debug)
    if code == 130:  # typer's answer to a KeyboardInterrupt outside a render
        typer.secho("interrupted", err=True, fg=typer.colors.YELLOW)
    return code if isinstance(code, int) else 0


def _fail(line: str, code: int, debug: bool, colour: str = "red") -> int:
    if debug:
        traceback.print_exc()
    typer.secho(line, err=True, fg=colour)
    return code


def run() -> None:
    """The console script (and ``python -m geopix``): ``main()`` in a process of its own."""
    from geopix.process import allow_gc_freeze, freeze_gc

    allow_gc_freeze()
    code = main()
    freeze_gc()  # the process ends now: its last garbage collection would free nothing needed
    sys.exit(code)
