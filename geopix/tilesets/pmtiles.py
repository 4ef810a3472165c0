"""PMTiles v3 archives: a writer, and a reader over any :class:`~geopix.tilesets.base.ByteSource`."""

from __future__ import annotations

import json
import threading
import zlib
from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from geopix.errors import GeopixError, TileReadError, TilesetError
from geopix.tilesets.base import About, ByteSource, Tile, TileSet, parse_bounds, parse_center, parse_zooms

HEADER_BYTES = 127
#: Largest decoded directory (at >= 4 bytes an entry, <= 1 M entries, 32 MB as arrays); real leaves
#: of planet-scale archives hold tens of thousands of entries (a few hundred KB).
MAX_DIRECTORY_BYTES = 4 << 20
MAX_METADATA_BYTES = 16 << 20
DIRECTORY_CACHE_ENTRIES = 2_000_000  # decoded leaf entries kept (~64 MB at most), least recently used dropped


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

    Checked at open, so a cut or crafted archive is refused with its name instead of served: the
    header's sections lie within the file, the metadata and root directory decode within
    :data:`MAX_DIRECTORY_BYTES`, and every root entry points inside its section.  Leaf directories
    get the same checks when first read (a failure is that request's :class:`TileReadError`).
    (``pmtiles.reader.Reader`` re-reads the header and re-inflates every directory on each tile,
    inflates without a limit, and trusts every offset.)
    """

    kind = "pmtiles"

    def __init__(self, source: ByteSource, name: str | None = None) -> None:
        self.source = source
        self.name = name or str(getattr(source, "path", "archive"))
        try:
            self._header, self._meta = self._check_header()
            h = self._header
            self._root = self._checked_directory(h["root_offset"], h["root_length"])
            self._about = self._read_about()
        except TileReadError as exc:  # at open, damage is the archive's: refused with exit code 21
            source.close()
            raise TilesetError(str(exc)) from exc
        except GeopixError:  # a remote read failed (its own message and exit code), or a check above
            source.close()
            raise
        kinds = {v: k for k, v in _tile_types().items()}
        self.format = kinds[self._header["tile_type"]]
        self.minzoom, self.maxzoom = self._header["min_zoom"], self._header["max_zoom"]
        self._dirs: OrderedDict[tuple[int, int], Directory] = OrderedDict()
        self._cached_entries = 0
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        return self.name

    def _check_header(self) -> tuple[dict, dict]:
        from pmtiles.tile import Compression, deserialize_header

        size = getattr(self.source, "size", None)
        if size is not None and size < HEADER_BYTES:
            raise TilesetError(f"{self.name} has {size} bytes: not a PMTiles archive (its header is {HEADER_BYTES})")
        try:
            h = deserialize_header(self.source.read(0, HEADER_BYTES))
        except GeopixError:
            raise
        except Exception as exc:  # no magic number, another spec version, an unknown enum value
            raise TilesetError(f"{self.name} is not a readable PMTiles v3 archive ({exc!r})") from exc
        if h["tile_type"] not in _tile_types().values():
            raise TilesetError(f"{self.name} holds {h['tile_type'].name} tiles; geopix serves raster tiles only")
        if h["internal_compression"] not in (Compression.NONE, Compression.GZIP):
            raise TilesetError(
                f"{self.name} compresses its directories with {h['internal_compression'].name}; "
                "geopix reads gzip or none: rewrite it with `pmtiles convert`"
            )
        if h["tile_compression"] not in (Compression.NONE, Compression.UNKNOWN):
            raise TilesetError(f"{self.name} compresses its tiles ({h['tile_compression'].name}); raster tiles are not")
        parse_zooms(h["min_zoom"], h["max_zoom"], f"{self.name} header")
        self._compression = h["internal_compression"]
        if size is not None:
            for section in ("root", "metadata", "leaf_directory", "tile_data"):
                end = h[f"{section}_offset"] + h[f"{section}_length"]
                if h[f"{section}_length"] and end > size:
                    raise TilesetError(
                        f"{self.name} is cut short: its header puts the {section.replace('_', ' ')} up to byte "
                        f"{end}, the file has {size} bytes (an interrupted download or copy?); fetch or build it again"
                    )
        meta_bytes = self.source.read(h["metadata_offset"], h["metadata_length"])
        raw = self._inflate(meta_bytes, "metadata", MAX_METADATA_BYTES)
        try:
            meta = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise TilesetError(f"{self.name}: its metadata is not JSON ({exc})") from exc
        if not isinstance(meta, dict):
            raise TilesetError(f"{self.name}: its metadata is not a JSON object")
        return h, meta

    def _inflate(self, data: bytes, what: str, limit: int) -> bytes:
        """``data`` decompressed as the header says, refused past ``limit`` bytes (a decompression bomb)."""
        from pmtiles.tile import Compression

        if self._compression == Compression.NONE:
            if len(data) > limit:
                raise TileReadError(f"{self.name}: its {what} is {len(data)} bytes, over the {limit} geopix reads")
            return data
        inflater = zlib.decompressobj(wbits=31)  # gzip
        try:
            out = inflater.decompress(data, limit)
        except zlib.error as exc:
            raise TileReadError(f"{self.name}: its {what} does not decompress ({exc})") from exc
        if inflater.unconsumed_tail:
            raise TileReadError(f"{self.name}: its {what} decompresses to over {limit} bytes; a crafted archive?")
        return out

    def _checked_directory(self, offset: int, length: int, leaf: bool = False) -> Directory:
        h = self._header
        raw = self._inflate(self.source.read(offset, length), "directory", MAX_DIRECTORY_BYTES)
        try:
            d = Directory.decode(raw)
        except ValueError as exc:
            raise TileReadError(f"{self.name}: a directory at byte {offset} is damaged ({exc})") from exc
        tile_end, leaf_end = h["tile_data_length"], h["leaf_directory_length"]
        for i in range(len(d)):
            end = leaf_end if d.run_lengths[i] == 0 else tile_end  # a leaf pointer, or tile data
            if d.lengths[i] == 0 or d.offsets[i] + d.lengths[i] > end:
                raise TileReadError(
                    f"{self.name}: {'a leaf' if leaf else 'the root'} directory has a bad entry: {d.lengths[i]} "
                    f"bytes at {d.offsets[i]} of a {end}-byte section; the archive is damaged"
                )
        return d

    def _directory(self, offset: int, length: int) -> Directory:
        key = (offset, length)
        with self._lock:
            d = self._dirs.get(key)
            if d is not None:
                self._dirs.move_to_end(key)
                return d
        d = self._checked_directory(offset, length, leaf=True)
        with self._lock:
            self._dirs[key] = d
            self._cached_entries += len(d)
            while self._cached_entries > DIRECTORY_CACHE_ENTRIES and len(self._dirs) > 1:
                _, old = self._dirs.popitem(last=False)
                self._cached_entries -= len(old)
        return d

    def get(self, z: int, x: int, y: int) -> bytes | None:
        from pmtiles.tile import zxy_to_tileid

        h = self._header
        if not self.minzoom <= z <= self.maxzoom:
            return None
        tile_id = zxy_to_tileid(z, x, y)
        d = self._root
        for _ in range(4):  # root + at most 3 levels of leaves (the PMTiles spec)
            i = d.find(tile_id)
            if i is None:
                return None
            if d.run_lengths[i] == 0:
                d = self._directory(h["leaf_directory_offset"] + d.offsets[i], d.lengths[i])
                continue
            return self.source.read(h["tile_data_offset"] + d.offsets[i], d.lengths[i])
        return None

    def snapshot(self) -> object:
        return self.source.snapshot() if hasattr(self.source, "snapshot") else None

    def about(self) -> About:
        return self._about

    def _read_about(self) -> About:
        h, m = self._header, self._meta
        where = f"{self.name} header"
        bounds = parse_bounds([h[k] / 1e7 for k in ("min_lon_e7", "min_lat_e7", "max_lon_e7", "max_lat_e7")], where)
        center = parse_center([h["center_lon_e7"] / 1e7, h["center_lat_e7"] / 1e7, h["center_zoom"]], where)
        return About.from_meta(m, self.name, name=str(m.get("name", "geopix")), bounds=bounds, center=center)

    def close(self) -> None:
        self.source.close()


class Directory:
    """One decoded PMTiles directory in four compact arrays (tile id, run length, length, offset)."""

    __slots__ = ("lengths", "offsets", "run_lengths", "tile_ids")

    def __init__(self) -> None:
        self.tile_ids, self.run_lengths = array("Q"), array("Q")
        self.lengths, self.offsets = array("Q"), array("Q")

    def __len__(self) -> int:
        return len(self.tile_ids)

    @classmethod
    def decode(cls, raw: bytes) -> Directory:
        """The spec's layout: a count, then each column as varints (ids delta-coded, offsets 0 = contiguous)."""
        pos = 0

        def varint() -> int:
            nonlocal pos
            value = shift = 0
            while True:
                if pos >= len(raw) or shift > 63:
                    raise ValueError("it ends inside a number")
                b = raw[pos]
                pos += 1
                value |= (b & 0x7F) << shift
                if b < 0x80:
                    return value
                shift += 7

        n = varint()
        if n > len(raw):  # every entry takes at least one byte per column
            raise ValueError(f"it claims {n} entries in {len(raw)} bytes")
        d = cls()
        last = 0
        for _ in range(n):
            last += varint()
            d.tile_ids.append(last)
        for _ in range(n):
            d.run_lengths.append(varint())
        for _ in range(n):
            d.lengths.append(varint())
        for i in range(n):
            v = varint()
            d.offsets.append(d.offsets[i - 1] + d.lengths[i - 1] if i > 0 and v == 0 else v - 1)
        if n and min(d.offsets) < 0:
            raise ValueError("an entry has no offset")
        return d

    def find(self, tile_id: int) -> int | None:
        """The entry holding ``tile_id`` (a run covers ``run_length`` ids; a leaf pointer, all up to the next entry)."""
        i = bisect_right(self.tile_ids, tile_id) - 1
        if i < 0:
            return None
        run = self.run_lengths[i]
        if run == 0 or tile_id < self.tile_ids[i] + run:
            return i
        return None
