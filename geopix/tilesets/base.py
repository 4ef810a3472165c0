"""What every tile-set reader shares: the ``TileSet`` interface (its TileJSON built from the set's ``About``)
and the byte sources archives are read through (a local file, or a URL read with ranged GETs)."""

from __future__ import annotations

import mmap
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, NamedTuple, Protocol

from geopix.errors import TilesetError
from geopix.remote import filesystem, read_error, remote_error
from geopix.source import gdal_name, redact
from geopix.tilesets.codec import media_type
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
    def from_meta(cls, meta: Mapping, **decoded: object) -> About:
        """The fields every format stores under TileJSON's own keys (attribution, description,
        tileSize) from ``meta``; ``decoded`` gives the others (and may override these)."""
        common = {
            "attribution": str(meta.get("attribution", "")),
            "description": str(meta.get("description", "")),
            "tile_size": int(meta.get("tileSize", 256)),
        }
        return cls(**{**common, **decoded})  # type: ignore[arg-type]


class ByteSource(Protocol):
    """Random-access bytes of one archive: a local file here, an HTTP or object-store range reader elsewhere."""

    def read(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


class FileByteSource:
    """A local file, memory-mapped: range reads are slices, with no system call per tile."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if self.path.stat().st_size else None

    def read(self, offset: int, length: int) -> bytes:
        return self._map[offset : offset + length] if self._map is not None else b""

    def close(self) -> None:
        if self._map is not None:
            self._map.close()


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

    def _get(self, offset: int, length: int) -> bytes:
        try:
            data = self._fs.cat_file(self._path, start=offset, end=offset + length)
        except Exception as exc:
            raise self._error(exc, self.url, self.role) from exc
        if len(data) > length:  # the server ignored the Range header and sent the whole file
            raise remote_error(RuntimeError("Range downloading not supported"), gdal_name(self.url), self.role)
        return data

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
    #: Whether ``get`` is quick local I/O (a small file, an mmap slice, an indexed SQLite row) that a
    #: server may call on its event loop instead of paying a thread hand-off per tile.
    inline_reads: bool = False
    minzoom: int = 0
    maxzoom: int = 24

    def get(self, z: int, x: int, y: int) -> bytes | None:
        raise NotImplementedError

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
    return 0 <= z <= 30 and 0 <= x < (1 << z) and 0 <= y < (1 << z)
