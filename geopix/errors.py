"""Every error geopix raises on purpose, in one family.

Each message names the bad value and how to fix it.  Built-in bases are mixed in where
they fit (``InputNotFoundError`` is also a ``FileNotFoundError``) so callers can catch
either.  ``exit_code`` gives the CLI a distinct status per kind of failure.
"""

from __future__ import annotations


class GeopixError(Exception):
    """Base class: a problem the user can fix; the CLI prints it on one line."""

    exit_code = 1


class InputNotFoundError(GeopixError, FileNotFoundError):
    exit_code = 3


class NotARasterError(GeopixError, ValueError):
    exit_code = 4


class MissingCRSError(GeopixError, ValueError):
    exit_code = 5


class BandError(GeopixError, ValueError):
    exit_code = 6


class DtypeError(GeopixError, TypeError):
    exit_code = 7


class AOIError(GeopixError, ValueError):
    exit_code = 8


class EmptyRasterError(GeopixError, ValueError):
    exit_code = 9


class OutputExistsError(GeopixError, FileExistsError):
    exit_code = 10


class OutputNotWritableError(GeopixError, PermissionError):
    exit_code = 11


class CheckpointError(GeopixError, ValueError):
    """A checkpoint is missing, corrupt, or does not match what was asked of it."""

    exit_code = 12


class ModelNotAvailableError(CheckpointError):
    """A registry name whose weights are not installed."""

    exit_code = 13


class TilingError(GeopixError, ValueError):
    """Tile size, overlap or chunk size that cannot work together."""

    exit_code = 14


class DeviceError(GeopixError, RuntimeError):
    exit_code = 15


class ClusterError(GeopixError, RuntimeError):
    exit_code = 16


class DatasetError(GeopixError, ValueError):
    exit_code = 17


class ResumeError(GeopixError, ValueError):
    exit_code = 18


class TileFormatError(GeopixError, ValueError):
    """A web-tile format, tile size or output path that cannot hold the pyramid asked for."""

    exit_code = 19


class ZoomRangeError(GeopixError, ValueError):
    """A ``--zoom`` range that is malformed or outside 0..24."""

    exit_code = 20


class TilesetError(GeopixError, ValueError):
    """A path ``geopix serve`` cannot serve (not a tile folder, PMTiles, MBTiles or GeoTIFF)."""

    exit_code = 21


class TileReadError(TilesetError):
    """A tile that cannot be served whole: an empty or cut-short file, or bytes past the end of its archive.

    Raised per request while serving (the server answers 500, not cached); never at open.
    """

    exit_code = 26


class TilesetChangedError(TilesetError):
    """The file under a served tile set changed and does not open as a tile set (yet): being copied
    in place, truncated, or replaced by something else (the server answers 503 until it is whole)."""

    exit_code = 27


class MemoryBudgetError(GeopixError, MemoryError):
    """A render whose plan needs more memory than its budget (``--memory-budget``)."""

    exit_code = 22


class DiskFullError(GeopixError, OSError):
    """The output's filesystem ran out of space; what was finished is kept for a resume."""

    exit_code = 23


class OutputLockedError(GeopixError, BlockingIOError):
    """Another geopix run is writing into the same output folder."""

    exit_code = 24


class OptionError(GeopixError, ValueError):
    """An option value no run can use (``--batch-size 0``, ``--device foo``, ``--workers 0``, ``--norm foo``)."""

    exit_code = 25


class Interrupted(BaseException):
    """SIGINT or SIGTERM stopped a run after its workers stopped; the message says what was kept.

    Like ``KeyboardInterrupt`` a ``BaseException``: no ``except Exception`` swallows it, and every
    clean-up written for Ctrl-C runs for SIGTERM too.  The CLI exits ``128 + signum``.
    """

    def __init__(self, message: str = "", signum: int = 2) -> None:
        super().__init__(message)
        self.signum = signum


class PortInUseError(GeopixError, OSError):
    """``geopix serve`` cannot listen on the ``--host``/``--port`` asked for."""

    exit_code = 35


class EmptyResultWarning(GeopixError, UserWarning):
    """A run finished and wrote its output, but the output holds no data: every input pixel is
    masked (nodata, alpha or mask band) or outside the AOI.  The CLI prints a warning line."""

    exit_code = 37


class DemoDataError(GeopixError, FileNotFoundError):
    """The demo scene shipped in the package is missing or unreadable (a broken install)."""

    exit_code = 36


# ---- remote inputs and outputs (45–49) -------------------------------------------------------
class RemoteAccessError(GeopixError, PermissionError):
    """A server or bucket refused us (HTTP 401/403): missing or wrong credentials."""

    exit_code = 45


class RemoteUnreachableError(GeopixError, ConnectionError):
    """No answer, or not a usable one: connection refused, unknown host, a timeout or stall, or a
    server error (HTTP 5xx) — never reported as damage to the file."""

    exit_code = 46


class RemoteProtocolError(GeopixError, OSError):
    """The server answers but cannot serve a raster in parts (no HTTP Range support)."""

    exit_code = 47


class StacError(GeopixError, ValueError):
    """A STAC document that is not an Item, or an Item without the asset asked for."""

    exit_code = 48


class MosaicError(GeopixError, ValueError):
    """Several inputs that cannot be mosaicked as they are (different CRSs or band layouts)."""

    exit_code = 49


class VectorError(GeopixError, ValueError):
    """A vector layer that cannot be read or holds nothing usable."""

    exit_code = 30


class VectorCRSError(VectorError):
    """A vector layer without a CRS (one in another CRS is reprojected, not refused)."""

    exit_code = 31


class VectorClassError(VectorError):
    """A class name, field or value mapping that geopix cannot turn into map-style classes."""

    exit_code = 32


class VectorOverlapError(VectorError):
    """Vector layers that do not overlap the raster."""

    exit_code = 33


class LabelCoverageError(GeopixError, ValueError):
    """An evaluation whose labels cover no class the map style draws, so nothing can be scored."""

    exit_code = 34
