"""What every tile-set reader shares: the ``TileSet`` interface (its TileJSON built from the set's ``About``)
and the byte sources archives are read through (a local file, or a URL read with ranged GETs)."""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, NamedTuple, Protocol

from geopix.errors import TileReadError, TilesetError
from geopix.remote import filesystem, read_error, remote_error
from geopix.source import gdal_name, redact
from geopix.tilesets.codec import damage, media_type
from geopix.tilesets.tilejson import make_tilejson

#: Cache lifetimes (seconds) a server may give a tile set's answers.
CACHE_TILE_S = 3600
CACHE_EMPTY_S = 60  # an empty tile may gain data when the set is rebuilt; don't pin the blank for long
CACHE_DYNAMIC_S = 300
#: Web Mercator's extent in degrees: the bounds of a set that does not state its own.
WORLD = (-180.0, -85.051129, 180.0, 85.051129)


class Tile(NamedTuple):
    """One encoded tile at an XYZ address (row 0 at the north)."""

    z: int
    x: int
    y: int
    data: bytes


class About(NamedTuple):
    """What a tile set says about itself, decoded from its own metadata: its TileJSON but the
    endpoint, zooms and format (which the set knows as attributes)."""

    name: str
    bounds: tuple[float, float, float, float] = WORLD
    attribution: str = ""
    description: str = ""
    tile_size: int = 256
    center: tuple[float, float, int] | None = None  # None: the bounds' middle

    @classmethod
    def from_meta(cls, meta: Mapping, where: str, **decoded: object) -> About:
        """The fields every format stores under TileJSON's own keys (attribution, description,
        tileSize) from ``meta`` (checked; ``where`` names it in errors); ``decoded`` gives the others."""
        common = {
            "attribution": str(meta.get("attribution", "")),
            "description": str(meta.get("description", "")),
            "tile_size": parse_int(meta.get("tileSize", 256), "tileSize", where, 1, 4096),
        }
        return cls(**{**common, **decoded})  # type: ignore[arg-type]


class ByteSource(Protocol):
    """Random-access bytes of one archive: a local file here, an HTTP or object-store range reader elsewhere."""

    def read(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


class FileByteSource:
    """A local file read with ``pread`` on one descriptor: a read past the end is a
    :class:`TileReadError`, never a crash.

    (A memory map was quicker by a system call per tile, but a file cut short while mapped kills
    the process with SIGBUS at the first access past the new end.)  The descriptor keeps reading the
    file that was opened even when a new one is renamed over its path.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
        st = os.fstat(self._fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(self._fd)
            raise TilesetError(f"{self.path} is not a regular file; pass the archive itself")
        self.size = st.st_size

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        while 0 < len(data) < length:  # a regular file answers short only at its end; make sure
            more = os.pread(self._fd, length - len(data), offset + len(data))
            if not more:
                break
            data += more
        if len(data) < length:
            raise TileReadError(f"{self.path} is cut short: {length} bytes asked at offset {offset}, {len(data)} there")
        return data

    def snapshot(self) -> tuple[int, int, int, int]:
        """The open file's identity now (device, inode, size, mtime): it changes when the file is written in place."""
        return _identity(os.fstat(self._fd))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def file_identity(path: str | Path) -> tuple[int, int, int, int] | None:
    """The identity of the file at ``path`` now (device, inode, size, mtime), ``None`` if there is none."""
    try:
        return _identity(os.stat(path))
    except OSError:
        return None


class URLByteSource:
    """An archive behind a URL (``https://``, ``s3://``, ``gs://``, ``az://``), read with ranged GETs
    through fsspec.

    The first ``HEAD_BYTES`` are fetched once at open: a PMTiles header and root directory lie
    there (the spec keeps them within 16 KiB), so a tile costs one request for its bytes plus
    one per leaf directory not yet cached by the reader.  Thread-safe: each read is one
    stateless request.  Failures raise the same errors (and exit codes) as a remote raster's.
    """

    HEAD_BYTES = 16384

    def __init__(self, url: str, role: str = "tile archive") -> None:
        self.url, self.role = url, role
        try:
            self._fs, self._path = filesystem(url)
        except ImportError as exc:  # s3fs, gcsfs or adlfs is not installed
            raise TilesetError(
                f"reading {redact(url)} needs {exc.name or 'an fsspec backend'}: pip install 'geopix[cloud]'"
            ) from exc
        self._error = read_error
        self._head = self._get(0, self.HEAD_BYTES)
        self.size: int | None = None  # unknown without another request; reads past the end raise instead

    def _get(self, offset: int, length: int) -> bytes:
        try:
            data = self._fs.cat_file(self._path, start=offset, end=offset + length)
        except Exception as exc:
            raise self._error(exc, self.url, self.role) from exc
        if len(data) > length:  # the server ignored the Range header and sent the whole file
            raise remote_error(RuntimeError("Range downloading not supported"), gdal_name(self.url), self.role)
        if len(data) < length and offset > 0:  # (the first read may ask past the end of a small archive)
            from geopix.source import redact

            raise TileReadError(f"{redact(self.url)}: {length} bytes asked at offset {offset}, {len(data)} sent")
        return data

    def snapshot(self) -> None:
        return None

    def read(self, offset: int, length: int) -> bytes:
        if offset + length <= len(self._head):
            return self._head[offset : offset + length]
        return self._get(offset, length)

    def close(self) -> None:
        self._head = b""


class TileSet:
    """A readable tile set: ``get`` answers encoded bytes or ``None`` (no tile there); thread-safe."""

    kind: ClassVar[str] = ""
    format: str = "png"  # png | webp | jpg
    cache_seconds: int = CACHE_TILE_S
    minzoom: int = 0
    maxzoom: int = 24

    def get(self, z: int, x: int, y: int) -> bytes | None:
        raise NotImplementedError

    def read(self, z: int, x: int, y: int) -> bytes | None:
        """``get``, refusing bytes that are not a whole tile (:class:`TileReadError`) instead of passing them on."""
        data = self.get(z, x, y)
        if data is not None and (why := damage(data, self.format)) is not None:
            raise TileReadError(f"tile {z}/{x}/{y} of {self.label} {why}")
        return data

    @property
    def label(self) -> str:
        """The set's file, folder or URL, for messages."""
        return str(getattr(self, "path", self.kind))

    def snapshot(self) -> object:
        """What identifies the bytes this set reads now (device, inode, size, mtime of its files); ``None`` for
        a remote set.  A server compares it with the path's own to notice a file changed or replaced."""
        return None

    @classmethod
    def identity_of(cls, path: str | Path) -> object:
        """The on-disk identity of a set of this kind at ``path`` (as ``snapshot`` gives it once opened)."""
        return file_identity(path)

    def about(self) -> About:
        """The set's name, bounds, credits … as its format stores them."""
        raise NotImplementedError

    def tilejson(self, tiles_url: str) -> dict:
        """The set's TileJSON 3.0.0 with ``tiles_url`` (absolute, ``{z}/{x}/{y}`` template) as its endpoint."""
        a = self.about()
        return make_tilejson(
            name=a.name,
            tiles_url=tiles_url,
            bounds=a.bounds,
            minzoom=self.minzoom,
            maxzoom=self.maxzoom,
            attribution=a.attribution,
            tile_size=a.tile_size,
            fmt=self.format,
            description=a.description,
            center=a.center,
        )

    @property
    def media_type(self) -> str:
        return media_type(self.format)

    def close(self) -> None:
        """Release files or connections; the default holds none."""

    def __enter__(self) -> TileSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def in_world(z: int, x: int, y: int) -> bool:
    """Whether ``z/x/y`` is a tile address at all (inside the 2**z × 2**z grid)."""
    return 0 <= z <= MAX_ZOOM and 0 <= x < (1 << z) and 0 <= y < (1 << z)


# ---- metadata a set states about itself, checked once at open -------------------------------------
MAX_ZOOM = 30


def _numbers(value: object, n: tuple[int, ...], what: str, where: str, shape: str) -> list[float]:
    items = value.split(",") if isinstance(value, str) else value
    try:
        nums = [float(v) for v in items]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        nums = []
    if len(nums) not in n or not all(math.isfinite(v) for v in nums):
        raise TilesetError(f"{where}: {what} = {value!r} must be {shape}; fix or remove it")
    return nums


def parse_bounds(value: object, where: str) -> tuple[float, float, float, float]:
    """``west,south,east,north`` in degrees (a string or a list), checked to be a box on the globe."""
    w, s, e, n = _numbers(value, (4,), "bounds", where, "four numbers west,south,east,north (degrees)")
    if not (-180 <= w <= e <= 180 and -90 <= s <= n <= 90):
        raise TilesetError(
            f"{where}: bounds = {value!r} is not a box on the globe "
            "(west <= east within ±180, south <= north within ±90)"
        )
    return (w, s, e, n)


def parse_center(value: object, where: str) -> tuple[float, float, int] | None:
    """``lon,lat[,zoom]`` (a string or a list); ``None`` when absent."""
    if value is None:
        return None
    nums = _numbers(value, (2, 3), "center", where, "lon,lat or lon,lat,zoom")
    zoom = nums[2] if len(nums) == 3 else 0
    if not (-180 <= nums[0] <= 180 and -90 <= nums[1] <= 90 and zoom == int(zoom) and 0 <= zoom <= MAX_ZOOM):
        raise TilesetError(f"{where}: center = {value!r} is not a place on the globe with a zoom 0-{MAX_ZOOM}")
    return (nums[0], nums[1], int(zoom))


def parse_int(value: object, what: str, where: str, low: int, high: int) -> int:
    """A whole number in ``low..high`` (from a string, or a JSON number without a fraction)."""
    try:
        number = int(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise TilesetError(f"{where}: {what} = {value!r} must be a whole number {low}-{high}; fix or remove it")
    return number


def parse_zooms(minzoom: object, maxzoom: object, where: str) -> tuple[int, int]:
    """``minzoom, maxzoom`` as whole numbers in 0..30, ``minzoom <= maxzoom``."""
    lo = parse_int(minzoom, "minzoom", where, 0, MAX_ZOOM)
    hi = parse_int(maxzoom, "maxzoom", where, 0, MAX_ZOOM)
    if lo > hi:
        raise TilesetError(f"{where}: minzoom {lo} is above maxzoom {hi}; fix one of them")
    return lo, hi
