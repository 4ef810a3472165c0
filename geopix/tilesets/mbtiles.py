"""MBTiles 1.3 (SQLite, TMS rows: row 0 at the south): reader and writer."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from geopix.errors import TilesetError
from geopix.tilesets.base import WORLD, About, Tile, TileSet, file_identity, parse_bounds, parse_center, parse_zooms
from geopix.tilesets.codec import TILE_FORMATS

BATCH = 500


def tms_row(z: int, y: int) -> int:
    """XYZ row ↔ TMS row (the flip is its own inverse)."""
    return (1 << z) - 1 - y


def write(dst: str | Path, tiles: Iterable[Tile], tilejson: dict) -> None:
    """An MBTiles file at ``dst`` (which must not exist) holding ``tiles`` and the TileJSON's metadata."""
    tj = tilejson
    con = sqlite3.connect(dst)
    try:
        con.executescript(
            "CREATE TABLE metadata (name TEXT, value TEXT);"
            "CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB);"
        )
        meta = {
            "name": tj["name"],
            "format": tj["format"],
            "bounds": ",".join(map(str, tj["bounds"])),
            "center": ",".join(map(str, tj["center"])),
            "minzoom": str(tj["minzoom"]),
            "maxzoom": str(tj["maxzoom"]),
            "attribution": tj["attribution"],
            "description": tj["description"],
            "type": "overlay",
            "version": tj["version"],
            "tileSize": str(tj["tileSize"]),
        }
        con.executemany("INSERT INTO metadata VALUES (?, ?)", list(meta.items()))
        batch = []
        for t in tiles:
            batch.append((t.z, t.x, tms_row(t.z, t.y), t.data))
            if len(batch) >= BATCH:
                con.executemany("INSERT INTO tiles VALUES (?, ?, ?, ?)", batch)
                batch = []
        con.executemany("INSERT INTO tiles VALUES (?, ?, ?, ?)", batch)
        con.execute("CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row)")
        con.execute("CREATE UNIQUE INDEX name ON metadata (name)")
        con.commit()
    finally:
        con.close()


class MBTilesTileSet(TileSet):
    """Read-only; one SQLite connection per thread.  The metadata is checked at open (zooms, bounds,
    center, format, tile size), so a bad row is refused with the file named instead of failing later."""

    kind = "mbtiles"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._uri = f"{self.path.resolve().as_uri()}?mode=ro"
        self._local = threading.local()
        self._cons: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            meta = dict(self._db().execute("SELECT name, value FROM metadata").fetchall())
        except sqlite3.DatabaseError as exc:
            self.close()
            raise TilesetError(f"{path} is not an MBTiles file ({exc})") from exc
        try:
            self._about = self._read_meta(meta)
        except TilesetError:
            self.close()
            raise

    def _read_meta(self, m: dict) -> About:
        where = f"{self.path} metadata"
        fmt = m.get("format", "png")
        self.format = {"jpeg": "jpg"}.get(fmt, fmt)
        if self.format not in TILE_FORMATS:
            raise TilesetError(f"{self.path} holds {self.format!r} tiles; geopix serves png, webp and jpg")
        self.minzoom, self.maxzoom = parse_zooms(m.get("minzoom", 0), m.get("maxzoom", 22), where)
        bounds = parse_bounds(m["bounds"], where) if "bounds" in m else WORLD
        center = parse_center(m.get("center"), where)
        return About.from_meta(m, where, name=str(m.get("name", self.path.stem)), bounds=bounds, center=center)

    def _db(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._local.con = sqlite3.connect(self._uri, uri=True, check_same_thread=False)
            with self._lock:
                self._cons.append(con)
        return con

    def get(self, z: int, x: int, y: int) -> bytes | None:
        row = (
            self._db()
            .execute(
                "SELECT tile_data FROM tiles WHERE zoom_level=? AND tile_column=? AND tile_row=?",
                (z, x, tms_row(z, y)),
            )
            .fetchone()
        )
        return bytes(row[0]) if row and row[0] is not None else (b"" if row else None)

    def snapshot(self) -> object:
        return file_identity(self.path)

    def about(self) -> About:
        return self._about

    def close(self) -> None:
        with self._lock:
            for con in self._cons:
                con.close()
            self._cons.clear()
