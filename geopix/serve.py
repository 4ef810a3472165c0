"""A small local tile server and offline viewer for geopix output.

Serves a tile folder, a ``.pmtiles``, an ``.mbtiles`` or a GeoTIFF/COG (tiled on the fly
with rio-tiler) with the standard library's ``ThreadingHTTPServer``: this is for looking at
results on a workstation or a LAN, not a production CDN, so no web framework is pulled in.

Routes: ``/tiles/{z}/{x}/{y}.{ext}``, ``/tilejson.json``, ``/`` (viewer), ``/static/…``
(viewer files, a fixed list), ``/viewer.json``, and, with ``source=``,
``/source/{z}/{x}/{y}.png`` and ``/source/tilejson.json``.  Requests are matched against
strict patterns *after* percent-decoding, and tile addresses are integers, so no request
can name a file outside the tileset.  A well-formed tile address with no tile (empty or
outside the data) answers ``204 No Content``, which map clients treat as blank without
logging errors; anything else unknown is ``404``.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import unquote, urlsplit

from geopix.errors import InputNotFoundError, TilesetError
from geopix.pyramid import TILE_FORMATS, make_tilejson, tile_file

TILE_ROUTE = re.compile(r"^/(tiles|source)/(\d{1,2})/(\d{1,8})/(\d{1,8})\.([a-z]{3,4})$")
STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
    "viewer.css": "text/css; charset=utf-8",
}
CACHE_TILES = "public, max-age=86400"
CACHE_DYNAMIC = "public, max-age=300"
CACHE_NONE = "no-cache"


# ---- tile sources ---------------------------------------------------------------------------
class TileSource:
    """One tileset: answers ``get(z, x, y)`` with bytes or ``None``; thread-safe."""

    ext: str = "png"
    cache_control: str = CACHE_TILES

    def get(self, z: int, x: int, y: int) -> bytes | None:
        raise NotImplementedError

    def tilejson(self, tiles_url: str) -> dict:
        raise NotImplementedError

    @property
    def content_type(self) -> str:
        return TILE_FORMATS[self.ext][1]

    def close(self) -> None:
        """Release files or connections; the default holds none."""


def _in_range(z: int, x: int, y: int) -> bool:
    return 0 <= z <= 30 and 0 <= x < (1 << z) and 0 <= y < (1 << z)


class DirectorySource(TileSource):
    """A ``{z}/{x}/{y}.ext`` folder written by ``geopix tiles`` (``tilejson.json`` inside)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        tj_path = self.root / "tilejson.json"
        if not tj_path.is_file():
            raise TilesetError(f"{root} has no tilejson.json; is it a folder written by `geopix tiles`?")
        self._tj = json.loads(tj_path.read_text())
        self.ext = self._tj.get("format", "png")
        if self.ext not in TILE_FORMATS:
            raise TilesetError(f"{tj_path} names tile format {self.ext!r}; expected one of {', '.join(TILE_FORMATS)}")

    def get(self, z: int, x: int, y: int) -> bytes | None:
        path = tile_file(self.root, z, x, y, self.ext).resolve()
        # z, x, y are integers, so this cannot leave the folder unless a tile is a symlink out.
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        return path.read_bytes()

    def tilejson(self, tiles_url: str) -> dict:
        return {**self._tj, "tiles": [tiles_url]}


class PMTilesSource(TileSource):
    """A PMTiles v3 archive, memory-mapped; directories are decoded once and cached.

    (``pmtiles.reader.Reader.get`` re-reads the header and re-inflates every directory on
    each call, which made tiles several times slower to serve.)
    """

    def __init__(self, path: Path) -> None:
        import mmap

        from pmtiles.reader import MmapSource, Reader
        from pmtiles.tile import TileType

        self._file = open(path, "rb")  # noqa: SIM115 - held for the server's lifetime
        try:
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
            reader = Reader(MmapSource(self._file))
            header = reader.header()
            self._meta = reader.metadata()
        except Exception as exc:
            self._file.close()
            raise TilesetError(f"{path} is not a readable PMTiles v3 archive ({exc})") from exc
        kinds = {TileType.PNG: "png", TileType.WEBP: "webp", TileType.JPEG: "jpg"}
        if header["tile_type"] not in kinds:
            self._file.close()
            raise TilesetError(f"{path} holds {header['tile_type'].name} tiles; geopix serves raster tiles only")
        self.ext = kinds[header["tile_type"]]
        self._header = header
        self._dirs: dict[tuple[int, int], list] = {}
        self._lock = threading.Lock()

    def _directory(self, offset: int, length: int) -> list:
        from pmtiles.tile import deserialize_directory

        key = (offset, length)
        entries = self._dirs.get(key)
        if entries is None:
            entries = deserialize_directory(self._map[offset : offset + length])
            with self._lock:
                if len(self._dirs) > 256:  # leaf directories of a huge archive: keep memory bounded
                    self._dirs.clear()
                self._dirs[key] = entries
        return entries

    def get(self, z: int, x: int, y: int) -> bytes | None:
        from pmtiles.tile import find_tile, zxy_to_tileid

        h = self._header
        if not h["min_zoom"] <= z <= h["max_zoom"]:
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
            start = h["tile_data_offset"] + entry.offset
            return self._map[start : start + entry.length]
        return None

    def tilejson(self, tiles_url: str) -> dict:
        h = self._header
        bounds = (h["min_lon_e7"] / 1e7, h["min_lat_e7"] / 1e7, h["max_lon_e7"] / 1e7, h["max_lat_e7"] / 1e7)
        tj = make_tilejson(
            name=self._meta.get("name", "geopix"),
            tiles_url=tiles_url,
            bounds=bounds,
            minzoom=h["min_zoom"],
            maxzoom=h["max_zoom"],
            attribution=self._meta.get("attribution", ""),
            tile_size=int(self._meta.get("tileSize", 256)),
            fmt=self.ext,
            description=self._meta.get("description", ""),
        )
        tj["center"] = [h["center_lon_e7"] / 1e7, h["center_lat_e7"] / 1e7, h["center_zoom"]]
        return tj

    def close(self) -> None:
        self._map.close()
        self._file.close()


class MBTilesSource(TileSource):
    def __init__(self, path: Path) -> None:
        self._uri = f"{path.resolve().as_uri()}?mode=ro"
        self._local = threading.local()
        try:
            meta = dict(self._db().execute("SELECT name, value FROM metadata").fetchall())
        except sqlite3.DatabaseError as exc:
            raise TilesetError(f"{path} is not an MBTiles file ({exc})") from exc
        self._meta = meta
        self.ext = {"jpeg": "jpg"}.get(meta.get("format", "png"), meta.get("format", "png"))
        if self.ext not in TILE_FORMATS:
            raise TilesetError(f"{path} holds {self.ext!r} tiles; geopix serves png, webp and jpg")

    def _db(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._local.con = sqlite3.connect(self._uri, uri=True)
        return con

    def get(self, z: int, x: int, y: int) -> bytes | None:
        row = (
            self._db()
            .execute(
                "SELECT tile_data FROM tiles WHERE zoom_level=? AND tile_column=? AND tile_row=?",
                (z, x, (1 << z) - 1 - y),
            )
            .fetchone()
        )
        return bytes(row[0]) if row else None

    def tilejson(self, tiles_url: str) -> dict:
        m = self._meta
        bounds = tuple(float(v) for v in m.get("bounds", "-180,-85.051129,180,85.051129").split(","))
        tj = make_tilejson(
            name=m.get("name", "geopix"),
            tiles_url=tiles_url,
            bounds=bounds,  # type: ignore[arg-type]
            minzoom=int(m.get("minzoom", 0)),
            maxzoom=int(m.get("maxzoom", 22)),
            attribution=m.get("attribution", ""),
            tile_size=int(m.get("tileSize", 256)),
            fmt=self.ext,
            description=m.get("description", ""),
        )
        if "center" in m:
            cx, cy, cz = m["center"].split(",")
            tj["center"] = [float(cx), float(cy), int(cz)]
        return tj


class GeoTIFFSource(TileSource):
    """Any GeoTIFF/COG, tiled on request by rio-tiler (PNG with the mask as alpha)."""

    cache_control = CACHE_DYNAMIC

    def __init__(self, path: Path, tile_size: int = 256) -> None:
        # Imported here, on the main thread: first imports of rio_tiler racing in request threads fail.
        from rio_tiler.errors import TileOutsideBounds
        from rio_tiler.io import Reader

        from geopix.pyramid import auto_maxzoom, auto_minzoom, inspect_map

        self._reader, self._outside = Reader, TileOutsideBounds
        self.path = path
        self.tile_size = tile_size
        self.ext = "png"
        self.info = inspect_map(path)
        self.maxzoom = auto_maxzoom(self.info.ground_resolution_m, self.info.centre_lat, tile_size)
        self.minzoom = auto_minzoom(self.info, self.maxzoom, tile_size)

    def get(self, z: int, x: int, y: int) -> bytes | None:
        if z > self.maxzoom + 3:
            return None
        with self._reader(str(self.path)) as src:
            if not src.tile_exists(x, y, z):
                return None
            try:
                img = src.tile(
                    x,
                    y,
                    z,
                    tilesize=self.tile_size,
                    indexes=self.info.rgb,
                    resampling_method="bilinear",  # as the pyramid's max zoom
                    reproject_method="bilinear",
                )
            except self._outside:
                return None
        if not img.mask.any():
            return None
        return img.render(img_format="PNG", add_mask=True)

    def tilejson(self, tiles_url: str) -> dict:
        from geopix.pyramid import attribution_for

        return make_tilejson(
            name=self.path.stem,
            tiles_url=tiles_url,
            bounds=self.info.bounds,
            minzoom=self.minzoom,
            maxzoom=self.maxzoom,
            attribution=attribution_for(self.info),
            tile_size=self.tile_size,
            fmt="png",
            description=f"{self.path.name}, tiled on request",
        )


def open_tileset(path: str | Path) -> TileSource:
    """Pick the source type from the path: folder, ``.pmtiles``, ``.mbtiles`` or GeoTIFF."""
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{path} does not exist; pass a tile folder, .pmtiles, .mbtiles or GeoTIFF")
    if path.is_dir():
        return DirectorySource(path)
    suffix = path.suffix.lower()
    if suffix == ".pmtiles":
        return PMTilesSource(path)
    if suffix == ".mbtiles":
        return MBTilesSource(path)
    if suffix in (".tif", ".tiff", ".vrt"):
        return GeoTIFFSource(path)
    raise TilesetError(f"cannot serve {path}: expected a tile folder, .pmtiles, .mbtiles, .tif or .tiff")


# ---- HTTP -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServeConfig:
    """What the request handler needs; the server is otherwise stateless."""

    tiles: TileSource
    source: TileSource | None = None
    cors: bool = False


def _static(name: str) -> bytes:
    return resources.files("geopix").joinpath("serve_static", name).read_bytes()


class TileHandler(BaseHTTPRequestHandler):
    server_version = "geopix-serve"
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, keep-alive clients wait ~40 ms for
    # the delayed ACK on every response.
    disable_nagle_algorithm = True
    config: ServeConfig  # set on a subclass by make_server

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """No access log: a map view makes hundreds of requests; errors still go to stderr."""

    def do_GET(self) -> None:
        self._handle(body=True)

    def do_HEAD(self) -> None:
        self._handle(body=False)

    def _handle(self, body: bool) -> None:
        try:
            status, ctype, cache, payload = self._route()
        except Exception as exc:  # a broken tile must not take the server down
            self.log_error("error serving %s: %r", self.path, exc)
            status, ctype, cache, payload = HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain", CACHE_NONE, b"error\n"
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        if self.config.cors:
            self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        if body and payload:
            self.wfile.write(payload)

    def _base_url(self) -> str:
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        return f"http://{host}"

    def _route(self) -> tuple[int, str, str, bytes]:
        path = unquote(urlsplit(self.path).path)
        cfg = self.config
        m = TILE_ROUTE.match(path)
        if m:
            layer, z, x, y, ext = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)), m.group(5)
            src = cfg.tiles if layer == "tiles" else cfg.source
            if src is None or ext != src.ext or not _in_range(z, x, y):
                return _not_found()
            data = src.get(z, x, y)
            if data is None:
                return HTTPStatus.NO_CONTENT, "", src.cache_control, b""
            return HTTPStatus.OK, src.content_type, src.cache_control, data
        if path == "/tilejson.json":
            return _json(cfg.tiles.tilejson(f"{self._base_url()}/tiles/{{z}}/{{x}}/{{y}}.{cfg.tiles.ext}"))
        if path == "/source/tilejson.json" and cfg.source is not None:
            return _json(cfg.source.tilejson(f"{self._base_url()}/source/{{z}}/{{x}}/{{y}}.png"))
        if path == "/viewer.json":
            return _json({"tilejson": "/tilejson.json", "source": "/source/tilejson.json" if cfg.source else None})
        if path in ("/", "/index.html"):
            return HTTPStatus.OK, STATIC_FILES["index.html"], CACHE_NONE, _static("index.html")
        if path.startswith("/static/") and path[len("/static/") :] in STATIC_FILES:
            name = path[len("/static/") :]
            return HTTPStatus.OK, STATIC_FILES[name], CACHE_NONE, _static(name)
        return _not_found()


def _json(doc: dict) -> tuple[int, str, str, bytes]:
    return HTTPStatus.OK, "application/json", CACHE_NONE, json.dumps(doc).encode()


def _not_found() -> tuple[int, str, str, bytes]:
    return HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", CACHE_NONE, b"not found\n"


def make_server(
    path: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    cors: bool = False,
    source: str | Path | None = None,
) -> ThreadingHTTPServer:
    """A bound, not yet running server (``port=0`` picks a free port); call ``serve_forever``."""
    tiles = open_tileset(path)
    if source is not None and Path(source).suffix.lower() not in (".tif", ".tiff", ".vrt"):
        raise TilesetError(f"--source {source} must be a GeoTIFF (the aerial imagery to compare against)")
    src = GeoTIFFSource(Path(source)) if source is not None else None
    handler = type("BoundTileHandler", (TileHandler,), {"config": ServeConfig(tiles, src, cors)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve(
    path: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    cors: bool = False,
    source: str | Path | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``path`` until interrupted; ``on_ready(url)`` is called once the socket is bound."""
    server = make_server(path, host, port, cors, source)
    bound_host, bound_port = server.server_address[:2]
    url = f"http://{bound_host}:{bound_port}/"
    if on_ready is not None:
        on_ready(url)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        server.RequestHandlerClass.config.tiles.close()
