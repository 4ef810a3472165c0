"""A ``{z}/{x}/{y}.ext`` tile folder with its ``tilejson.json``: reader, writer and tile iterator."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from geopix.errors import TilesetError
from geopix.tilesets.base import WORLD, About, Tile, TileSet
from geopix.tilesets.codec import TILE_FORMATS

TILEJSON_NAME = "tilejson.json"
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
    """A folder written by ``geopix tiles`` (or ``write``)."""

    kind = "dir"
    inline_reads = True

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        tj_path = self.root / TILEJSON_NAME
        if not tj_path.is_file():
            raise TilesetError(f"{root} has no {TILEJSON_NAME}; is it a folder written by `geopix tiles`?")
        try:
            self._tj = json.loads(tj_path.read_text())
            self.format = self._tj.get("format", "png")
            self.minzoom, self.maxzoom = int(self._tj["minzoom"]), int(self._tj["maxzoom"])
        except (ValueError, KeyError, TypeError) as exc:
            raise TilesetError(f"{tj_path} is not a TileJSON with minzoom and maxzoom ({exc})") from exc
        if self.format not in TILE_FORMATS:
            raise TilesetError(f"{tj_path} names tile format {self.format!r}; expected png, webp or jpg")

    def get(self, z: int, x: int, y: int) -> bytes | None:
        path = tile_path(self.root, z, x, y, self.format)
        # z, x, y are integers, so the path cannot leave the folder unless a tile is a symlink out.
        try:
            if not path.resolve().is_relative_to(self.root):
                return None
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def about(self) -> About:
        tj = self._tj
        return About.from_meta(
            tj,
            name=tj.get("name", self.root.name),
            bounds=tuple(tj.get("bounds", WORLD)),
            description=tj.get("description", "").split(". " + RELATIVE_NOTE)[0].removesuffix(RELATIVE_NOTE),
            center=tuple(tj["center"]) if "center" in tj else None,
        )
