"""Process-wide settings: GDAL's block cache and remote reads, glibc's allocator, torch threads,
what SIGTERM does, the garbage collector.

They change the whole process, so nothing sets them on import: the entry points call
``configure_process`` (``geopix.cli.main``, a render on the sync scheduler) and Dask workers
get it from the ``cluster.ProcessSetup`` worker plugin; ``sigterm_interrupts`` is held by
``geopix.cli.main`` and by ``train.train`` for the length of the call, as is ``torch_threads``
by ``train.train``; ``freeze_gc`` is called by the CLI.  None of them changes a pixel.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import signal
import threading
from collections.abc import Iterator

from geopix.errors import Interrupted

#: GDAL's block cache defaults to 5 % of RAM *per process*; every Dask worker would fill it with
#: blocks it never reads again, so memory would grow with the raster.  64 MB holds the source
#: blocks a thread's next block shares with its last; more only pays while the whole decoded
#: raster fits (8192²: read 3.4 vs 3.9 worker-s with 256 MB, the same wall time within noise)
#: and makes peak memory grow with the raster until it is full (16384² vs 4096² peak RSS +40 %
#: with 256 MB).  Set GDAL_CACHEMAX yourself to override.
GDAL_CACHE_MB = 64

#: GDAL settings for reading over HTTP and object stores (docs/scaling.md explains each).
#: ``configure_process`` applies them as defaults: a variable already set in the environment wins.
REMOTE_READ_SETTINGS = {
    # Opening s3://b/k/x.tif must not list the whole folder looking for side-car files.
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # One request fetches a COG's header and tile index (instead of several 16 kB ones).
    "GDAL_INGESTED_BYTES_AT_OPEN": "65536",
    # Transient failures (HTTP 429/5xx, resets) are retried with back-off, not fatal.
    "GDAL_HTTP_MAX_RETRY": "4",
    "GDAL_HTTP_RETRY_DELAY": "1",
    # Fail in bounded time when a server does not answer (seconds).
    "GDAL_HTTP_CONNECTTIMEOUT": "10",
    "GDAL_HTTP_TIMEOUT": "60",
    # A stalled answer (under 1 byte/s) ends as "Operation too slow", which GDAL does not retry,
    # before GDAL_HTTP_TIMEOUT's "timed out", which it retries GDAL_HTTP_MAX_RETRY times (a stall
    # took 5 × 60 s): see ``configure_gdal``.
    "GDAL_HTTP_LOW_SPEED_LIMIT": "1",
    # Adjacent tiles of one window come in one request; a window's ranges go out in parallel.
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIRANGE": "YES",
    # Keep one connection per host alive between requests.
    "GDAL_HTTP_MULTIPLEX": "YES",
    # Downloaded byte ranges are cached per process (MB: 64), so a block's halo is fetched once.
    "CPL_VSIL_CURL_CACHE_SIZE": str(64 << 20),
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(16 << 20),
}


_ALLOCATOR_TUNED = False


_GC_FREEZE = False


def allow_gc_freeze() -> None:
    """Called by the console script before a command runs: ``freeze_gc`` freezes from then on.
    Not by ``main()``, which tests call in their own (long-lived) process."""
    global _GC_FREEZE
    _GC_FREEZE = True


def freeze_gc() -> None:
    """Leave every object that exists now out of the garbage collector's later passes (once
    ``allow_gc_freeze`` has been called).

    Imported modules live as long as the process, and torch alone makes over a million
    objects: each full collection walks them all, and so does the interpreter's last one at
    exit.  Measured, 8192² render from the CLI: six full collections took 0.56 s of
    GIL-holding time, and the exit's 0.7–1.2 s (the wall time went from 23.4 to 22.0 s with
    a freeze after the imports and one before exit).  Objects frozen are never freed, so
    call it once the modules are imported, or when nothing is left to free.
    """
    if _GC_FREEZE:
        gc.freeze()


def configure_process(torch_threads: int | None = None) -> None:
    """GDAL's cache (unless ``$GDAL_CACHEMAX`` is set), its remote-read settings, the allocator,
    and ``torch_threads`` if given."""
    configure_gdal()
    if "GDAL_CACHEMAX" not in os.environ:
        from rasterio._env import set_gdal_config

        # GDALSetCacheMax64: takes effect now, even after GDAL has read a file.
        set_gdal_config("GDAL_CACHEMAX", GDAL_CACHE_MB << 20)
    tune_allocator()
    if torch_threads:
        import torch

        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)


def configure_gdal() -> None:
    """``REMOTE_READ_SETTINGS`` as defaults of this process (GDAL reads them at each open), and a
    stall cut-off just under the timeout, so a stalled read fails once, within the timeout."""
    for key, value in REMOTE_READ_SETTINGS.items():
        os.environ.setdefault(key, value)
    if "GDAL_HTTP_LOW_SPEED_TIME" not in os.environ:
        with contextlib.suppress(ValueError):
            timeout = float(os.environ["GDAL_HTTP_TIMEOUT"])
            os.environ["GDAL_HTTP_LOW_SPEED_TIME"] = str(max(1, math.ceil(timeout) - 1))


def tune_allocator() -> None:
    """Let glibc keep freed activation buffers on the heap instead of unmapping them.

    Dask nannies start workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes
    glibc's mmap threshold: every multi-MB activation tensor is then mmap'ed, page-faulted
    and unmapped again on every forward pass.  Measured (unet_256 ngf 32, batch 8, 2 threads):
    35.1 tiles/s plain, 26.6 with that variable, 39.8 with it and these settings.  Linux/glibc
    only; elsewhere a no-op.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return
    _ALLOCATOR_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD: glibc's maximum
        libc.mallopt(-1, 256 * 1024 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """``n`` torch intra-op threads while held (``None``: as they are), the previous count after."""
    if not n:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted("", signum)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While held, SIGTERM raises ``Interrupted`` (exit 143) where Ctrl-C raises ``KeyboardInterrupt``.

    Cluster schedulers and ``kill`` stop a run with SIGTERM, whose default ends the process at
    once: no state saved, partial files left.  As an exception it runs every clean-up written for
    Ctrl-C.  SIGINT is restored too when a shell started us in the background with it ignored.
    Signal handlers belong to the main thread: elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old_int = signal.getsignal(signal.SIGINT)
    if old_int == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    old_term = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if old_int == signal.SIG_IGN:
            signal.signal(signal.SIGINT, old_int)
