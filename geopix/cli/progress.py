"""The one progress bar: the library reports ``(stage, done, total)`` (``config.ProgressFn``),
this draws it with rich on the terminal."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from geopix.config import ProgressFn


@contextlib.contextmanager
def progress_bar(enabled: bool) -> Iterator[ProgressFn | None]:
    """A ``ProgressFn`` drawing one bar per kind of stage (``render``, ``tiles z…``); None when off."""
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        transient=False,
    )
    tasks: dict[str, object] = {}

    def update(stage: str, done: int, total: int) -> None:
        kind = stage.split()[0]
        if kind not in tasks:
            tasks[kind] = bar.add_task(stage, total=total)
        bar.update(tasks[kind], completed=done, total=total, description=stage)

    with bar:
        yield update
