"""PMTiles v3 archives: a writer, and a reader over any :class:`~geopix.tilesets.base.ByteSource`."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

from geopix.errors import GeopixError, TilesetError
from geopix.tilesets.base import ByteSource, FileByteSource, Tile, TileSet

DIRECTORY_CACHE = 256  # decoded leaf directories kept; a huge archive's memory stays bounded


def _tile_types() -> dict:
    from pmtiles.tile import TileType

    return {"png": TileType.PNG, "webp": TileType.WEBP, "jpg": TileType.JPEG}


def write(dst: str | Path, tiles: Iterable[Tile], tilejson: dict) -> None:
    """A PMTiles archive at ``dst``; ``tiles`` must come in tile-id order (as ``folder.iter_tiles`` yields)."""
    from pmtiles.tile import Compression, zxy_to_tileid
    from pmtiles.writer import Writer

    tj = tilejson
    w, s, e, n = tj["bounds"]
    cx, cy, cz = tj["center"]
    with open(dst, "wb") as f:
        writer = Writer(f)
        for t in tiles:
            writer.write_tile(zxy_to_tileid(t.z, t.x, t.y), t.data)
        header = {
            "tile_type": _tile_types()[tj["format"]],
            "tile_compression": Compression.NONE,
            "min_lon_e7": int(w * 1e7),
            "min_lat_e7": int(s * 1e7),
            "max_lon_e7": int(e * 1e7),
            "max_lat_e7": int(n * 1e7),
            "center_zoom": cz,
            "center_lon_e7": int(cx * 1e7),
            "center_lat_e7": int(cy * 1e7),
        }
        meta = {k: v for k, v in tj.items() if k not in ("tiles", "tilejson", "scheme")}
        writer.finalize(header, meta)


class PMTilesTileSet(TileSet):
    """Reads tiles through ``source.read(offset, length)``; directories are decoded once and cached.

    (``pmtiles.reader.Reader.get`` re-reads the header and re-inflates every directory on each
    call, which made tiles several times slower to serve.)
    """

    kind = "pmtiles"

    def __init__(self, source: ByteSource, name: str | None = None) -> None:
        from pmtiles.reader import Reader

        self.source = source
        self.inline_reads = isinstance(source, FileByteSource)  # a remote source's reads wait on the network
        label = name or str(getattr(source, "path", "archive"))
        try:
            reader = Reader(source.read)
            header = reader.header()
            self._meta = reader.metadata()
        except GeopixError:  # a remote read failed: its own message and exit code
            source.close()
            raise
        except Exception as exc:
            source.close()
            raise TilesetError(f"{label} is not a readable PMTiles v3 archive ({exc})") from exc
        kinds = {v: k for k, v in _tile_types().items()}
        if header["tile_type"] not in kinds:
            source.close()
            raise TilesetError(f"{label} holds {header['tile_type'].name} tiles; geopix serves raster tiles only")
        self.format = kinds[header["tile_type"]]
        self.minzoom, self.maxzoom = header["min_zoom"], header["max_zoom"]
        self._header = header
        self._dirs: dict[tuple[int, int], list] = {}
        self._lock = threading.Lock()

    def _directory(self, offset: int, length: int) -> list:
        from pmtiles.tile import deserialize_directory

        key = (offset, length)
        entries = self._dirs.get(key)
        if entries is None:
            entries = deserialize_directory(self.source.read(offset, length))
            with self._lock:
                if len(self._dirs) > DIRECTORY_CACHE:
                    self._dirs.clear()
                self._dirs[key] = entries
        return entries

    def get(self, z: int, x: int, y: int) -> bytes | None:
        from pmtiles.tile import find_tile, zxy_to_tileid

        h = self._header
        if not self.minzoom <= z <= self.maxzoom:
            return None
        tile_id = zxy_to_tileid(z, x, y)
        offset, length = h["root_offset"], h["root_length"]
        for _ in range(4):  # root + at most 3 levels of leaves (the PMTiles spec)
            entry = find_tile(self._directory(offset, length), tile_id)
            if entry is None:
                return None
            if entry.run_length == 0:
                offset, length = h["leaf_directory_offset"] + entry.offset, entry.length
                continue
            return self.source.read(h["tile_data_offset"] + entry.offset, entry.length)
        return None

    def tilejson(self, tiles_url: str) -> dict:
        from geopix.tilesets.tilejson import make_tilejson

        h, m = self._header, self._meta
        bounds = (h["min_lon_e7"] / 1e7, h["min_lat_e7"] / 1e7, h["max_lon_e7"] / 1e7, h["max_lat_e7"] / 1e7)
        return make_tilejson(
            name=m.get("name", "geopix"),
            tiles_url=tiles_url,
            bounds=bounds,
            minzoom=self.minzoom,
            maxzoom=self.maxzoom,
            attribution=m.get("attribution", ""),
            tile_size=int(m.get("tileSize", 256)),
            fmt=self.format,
            description=m.get("description", ""),
            center=(h["center_lon_e7"] / 1e7, h["center_lat_e7"] / 1e7, h["center_zoom"]),
        )

    def close(self) -> None:
        self.source.close()
