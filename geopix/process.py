"""Process-wide settings of a process that renders: GDAL's block cache, glibc's allocator, torch threads.

They change the whole process, so nothing sets them on import: the entry points call
``configure_process`` (``geopix.cli.main``, a render on the sync scheduler) and Dask workers
get it from the ``cluster.ProcessSetup`` worker plugin.  None of them changes a pixel.
"""

from __future__ import annotations

import os

#: GDAL's block cache defaults to 5 % of RAM *per process*; every Dask worker would fill it with
#: blocks it never reads again, so memory would grow with the raster.  64 MB holds the source
#: blocks a thread's next block shares with its last; more only pays while the whole decoded
#: raster fits (8192²: read 3.4 vs 3.9 worker-s with 256 MB, the same wall time within noise)
#: and makes peak memory grow with the raster until it is full (16384² vs 4096² peak RSS +40 %
#: with 256 MB).  Set GDAL_CACHEMAX yourself to override.
GDAL_CACHE_MB = 64

_ALLOCATOR_TUNED = False


def configure_process(torch_threads: int | None = None) -> None:
    """GDAL's cache (unless ``$GDAL_CACHEMAX`` is set), the allocator, and ``torch_threads`` if given."""
    if "GDAL_CACHEMAX" not in os.environ:
        from rasterio._env import set_gdal_config

        # GDALSetCacheMax64: takes effect now, even after GDAL has read a file.
        set_gdal_config("GDAL_CACHEMAX", GDAL_CACHE_MB << 20)
    tune_allocator()
    if torch_threads:
        import torch

        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)


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
