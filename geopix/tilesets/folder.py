"""A ``{z}/{x}/{y}.ext`` tile folder with its ``tilejson.json``: reader, writer and tile iterator."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from geopix.errors import TileReadError, TilesetError
from geopix.tilesets.base import WORLD, About, Tile, TileSet, file_identity, parse_bounds, parse_center, parse_zooms
from geopix.tilesets.codec import TILE_FORMATS

TILEJSON_NAME = "tilejson.json"
MAX_TILE_BYTES = 16 << 20  # larger is not a web tile: refused rather than read into memory
RELATIVE_NOTE = (
    "The tile URL below is relative to this file, which TileJSON 3.0.0 does not allow and map "
    "libraries resolve against the page instead: serve the folder with `geopix serve FOLDER`, or "
    "rerun `geopix tiles ... --base-url https://HOST/PATH/` with the URL this folder will be hosted at."
)


def tile_path(root: str | Path, z: int, x: int, y: int, ext: str) -> Path:
    return Path(root) / str(z) / str(x) / f"{y}.{ext}"


def write_tile(root: str | Path, tile: Tile, ext: str) -> int:
    """Write one tile file (parents created); returns its size."""
    path = tile_path(root, tile.z, tile.x, tile.y, ext)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tile.data)
    return len(tile.data)


def iter_tiles(root: str | Path, zooms: Iterable[int], ext: str) -> Iterator[Tile]:
    """Every tile file under ``root`` in PMTiles tile-id order (zoom, then Hilbert), one file read at a time."""
    from pmtiles.tile import zxy_to_tileid

    for z in zooms:
        zdir = Path(root) / str(z)
        if not zdir.is_dir():
            continue
        entries = []
        for xdir in zdir.iterdir():
            for f in xdir.iterdir():
                if f.suffix == f".{ext}":
                    x, y = int(xdir.name), int(f.stem)
                    entries.append((zxy_to_tileid(z, x, y), x, y, f))
        entries.sort()
        for _, x, y, f in entries:
            yield Tile(z, x, y, f.read_bytes())


def write_tilejson(root: str | Path, tilejson: dict) -> None:
    """The folder's ``tilejson.json``; a relative tile URL gets a description saying how to host it."""
    doc = dict(tilejson)
    if not doc["tiles"][0].startswith(("http://", "https://")):
        doc["description"] = f"{doc.get('description', '')}. {RELATIVE_NOTE}".lstrip(". ")
    (Path(root) / TILEJSON_NAME).write_text(json.dumps(doc, indent=2))


def write(dst: str | Path, tiles: Iterable[Tile], tilejson: dict) -> None:
    """Write ``tiles`` and the TileJSON as a folder at ``dst``."""
    for tile in tiles:
        write_tile(dst, tile, tilejson["format"])
    write_tilejson(dst, tilejson)


class FolderTileSet(TileSet):
    """A folder written by ``geopix tiles`` (or ``write``); its ``tilejson.json`` is checked at open.

    A tile is read only if it is a regular file of at most :data:`MAX_TILE_BYTES`, opened without
    blocking: a named pipe or device at a tile's path is an error for that request, not a hang.
    """

    kind = "dir"

    def __init__(self, root: str | Path) -> None:
        self.path = Path(root)
        self.root = self.path.resolve()
        tj_path = self.root / TILEJSON_NAME
        if not tj_path.is_file():
            raise TilesetError(f"{root} has no {TILEJSON_NAME}; is it a folder written by `geopix tiles`?")
        try:
            tj = json.loads(tj_path.read_text())
        except (OSError, ValueError) as exc:
            raise TilesetError(f"{tj_path} is not JSON ({exc})") from exc
        if not isinstance(tj, dict) or "minzoom" not in tj or "maxzoom" not in tj:
            raise TilesetError(f"{tj_path} is not a TileJSON with minzoom and maxzoom")
        self.format = tj.get("format", "png")
        if self.format not in TILE_FORMATS:
            raise TilesetError(f"{tj_path} names tile format {self.format!r}; expected png, webp or jpg")
        where = str(tj_path)
        self.minzoom, self.maxzoom = parse_zooms(tj["minzoom"], tj["maxzoom"], where)
        self._about = About.from_meta(
            tj,
            where,
            name=str(tj.get("name", self.root.name)),
            bounds=parse_bounds(tj["bounds"], where) if "bounds" in tj else WORLD,
            description=str(tj.get("description", "")).split(". " + RELATIVE_NOTE)[0].removesuffix(RELATIVE_NOTE),
            center=parse_center(tj.get("center"), where),
        )

    def get(self, z: int, x: int, y: int) -> bytes | None:
        path = tile_path(self.root, z, x, y, self.format)
        # z, x, y are integers, so the path cannot leave the folder unless a tile is a symlink out.
        try:
            if not path.resolve().is_relative_to(self.root):
                return None
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once instead of waiting for a writer
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise TileReadError(f"{path} is not a regular file; a tile folder holds image files only")
            if st.st_size > MAX_TILE_BYTES:
                raise TileReadError(f"{path} has {st.st_size} bytes, over the {MAX_TILE_BYTES} a tile may have")
            return f.read(MAX_TILE_BYTES + 1)

    def snapshot(self) -> object:
        return self.identity_of(self.path)

    @classmethod
    def identity_of(cls, path: str | Path) -> object:
        """The folder's and its ``tilejson.json``'s identities: a folder renamed over the path, or a rewritten
        TileJSON, changes it; tile files written one by one do not (they are read afresh on each request)."""
        return (file_identity(path), file_identity(Path(path) / TILEJSON_NAME))

    def about(self) -> About:
        return self._about
