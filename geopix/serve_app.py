"""The ASGI app behind ``geopix serve``: the routes that answer tile, TileJSON, archive and viewer requests.

Why a module apart from the process that runs it: these answers are what a client sees, tested
in-process without a socket, while :mod:`geopix.serve` only binds, starts and stops.

Routes: ``/tiles/{z}/{x}/{y}.{ext}``, ``/tilejson.json``, ``/tiles.pmtiles`` (the archive itself,
for the pmtiles JS protocol's range requests, when serving a ``.pmtiles``), ``/`` (viewer),
``/static/…``, ``/viewer.json``, and with ``source`` ``/source/{z}/{x}/{y}.png`` and
``/source/tilejson.json``.  A remote archive or COG (``https://``, ``s3://``…) is read with
ranged GETs as tiles are asked for; ``/tiles.pmtiles`` is then absent and the viewer reads the
archive's tiles through ``/tiles/…``.  Tile addresses are integers matched after
percent-decoding, so no request can name a file outside the tile set.  A tile address inside the world with no tile
answers ``204 No Content`` (map clients draw nothing and log nothing), cached briefly; anything
else unknown, however spelled, is ``404``.  Tiles carry a content ``ETag``, so ``If-None-Match``
answers ``304``.

A local tile set is served through :class:`~geopix.tilesets.live.LiveTileSet`: replaced or
changed on disk, it is reopened before the next request, for every route at once.  Bytes that are
not a whole tile are never sent as one: a damaged tile answers ``500``, a tile set whose file does
not open (being copied, cut short) or a read slower than ``read_timeout_s`` ``503`` with
``Retry-After``; neither is cached.  Reads run on daemon threads, off the event loop, so a slow
file cannot stall other requests nor keep Ctrl-C from stopping the server.

Only Host headers naming this machine (``localhost``, ``127.0.0.1``, ``[::1]``) are accepted unless
``allowed_hosts`` adds names: a web page cannot use DNS rebinding to read the tiles through
someone's browser.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import logging
import queue
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from importlib import resources
from pathlib import Path

from geopix.errors import TileReadError, TilesetChangedError, TilesetError
from geopix.serve_http import (
    LOOPBACK_HOSTS,
    HostCheck,
    IgnoreInvalidRange,
    normal_host,
    normalise_origin,
    parse_range,
    resolve_range,
)
from geopix.source import redact
from geopix.tilesets import GEOTIFF_SUFFIXES, TileSet, open_tileset
from geopix.tilesets.base import CACHE_EMPTY_S, in_world
from geopix.tilesets.live import Lease, LiveTileSet

log = logging.getLogger(__name__)

CACHE_NONE = "no-cache"  # TileJSON, viewer: always revalidated (cheap with the ETag)
CACHE_ERROR = "no-store"  # a 5xx: never kept by a browser or proxy
READ_THREADS = 32  # concurrent blocking reads; more requests wait their turn (within read_timeout_s)
ARCHIVE_CHUNK = 1 << 20  # bytes read per step when sending /tiles.pmtiles
_COORD = re.compile(r"[0-9]{1,10}")  # a tile coordinate: anything else is no address on the grid


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """What ``geopix serve`` serves and to whom, and how long it waits on files and clients."""

    path: Path | str  # a local path, or the URL of a .pmtiles archive or GeoTIFF/COG
    host: str = "127.0.0.1"
    port: int = 8000
    source: Path | str | None = None  # an aerial GeoTIFF (path or URL) shown under the map in the viewer
    cors: tuple[str, ...] = ()  # origins allowed to read the tiles from other pages ("*": any); normalised
    allowed_hosts: tuple[str, ...] = ()  # Host names accepted besides the loopback ones ("*": any)
    read_timeout_s: float = 30.0  # a tile read slower than this answers 503 (remote reads included)
    header_timeout_s: float = 10.0  # a connection that sends no request headers for this long is closed
    keep_alive_s: int = 5  # an idle keep-alive connection is closed after this
    max_connections: int = 1000  # open connections + requests in flight; above it, 503 at once

    def __post_init__(self) -> None:
        if self.source is not None and Path(str(self.source).split("?", 1)[0]).suffix.lower() not in GEOTIFF_SUFFIXES:
            raise TilesetError(
                f"--source {redact(str(self.source))} must be a GeoTIFF (the aerial imagery to compare against)"
            )
        object.__setattr__(self, "cors", tuple(dict.fromkeys(normalise_origin(o) for o in self.cors)))

    def host_names(self) -> list[str]:
        """The Host names the server answers: loopback, the bound address if specific, and the extra ones."""
        names = [*LOOPBACK_HOSTS, *self.allowed_hosts]
        if self.host not in ("0.0.0.0", "::", ""):
            names.append(normal_host(self.host))
        return list(dict.fromkeys(names))


class ReadPool:
    """Blocking reads on daemon threads, awaited with a deadline.

    Daemon threads because a read that never returns (a stalled network mount) must neither hold
    the event loop nor keep the process alive after SIGINT/SIGTERM (anyio's and the executor's
    worker threads are joined at exit).  A read past its deadline keeps its thread until it returns.
    """

    def __init__(self, threads: int = READ_THREADS) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = threads
        self._started = 0
        self._lock = threading.Lock()

    def _worker(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to the awaiting request
                future.set_exception(exc)

    def close(self) -> None:
        """Let idle threads end (a thread still in a read ends when the read returns)."""
        with self._lock:
            for _ in range(self._started):
                self._jobs.put(None)
            self._started = 0

    async def run(self, timeout_s: float, fn: Callable, *args: object):
        """``fn(*args)`` on a pool thread; ``TimeoutError`` after ``timeout_s``."""
        with self._lock:
            if self._started < self._threads:
                self._started += 1
                threading.Thread(target=self._worker, name="geopix-read", daemon=True).start()
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((future, fn, args))
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)


def _etag(data: bytes) -> str:
    return '"' + hashlib.blake2b(data, digest_size=12).hexdigest() + '"'


def _matches(request, etag: str) -> bool:
    match = request.headers.get("if-none-match", "")
    return bool(match) and (match.strip() == "*" or etag in [t.strip().removeprefix("W/") for t in match.split(",")])


def _bytes_response(request, data: bytes, media_type: str, cache: str):
    """200 with an ``ETag``, or 304 when the client already holds these bytes."""
    from starlette.responses import Response

    etag = _etag(data)
    headers = {"ETag": etag, "Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
    if _matches(request, etag):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)


def _json_response(request, doc: dict):
    return _bytes_response(request, json.dumps(doc).encode(), "application/json", CACHE_NONE)


def _not_found():
    from starlette.responses import PlainTextResponse

    return PlainTextResponse("not found\n", status_code=404, headers={"Cache-Control": CACHE_NONE})


def _failure(exc: BaseException, what: str):
    """The answer for a read that failed: 503 (retry soon) for a tile set being replaced or a slow read,
    500 for damaged bytes or anything unexpected; one log line, never cached, never a traceback."""
    from starlette.responses import PlainTextResponse

    if isinstance(exc, (TilesetChangedError, TimeoutError)):
        reason = str(exc) or f"reading {what} took too long"
        log.warning("503 for %s: %s", what, reason)
        return PlainTextResponse(
            "tile set unavailable, retry shortly\n",
            status_code=503,
            headers={"Cache-Control": CACHE_ERROR, "Retry-After": "1"},
        )
    log.error("500 for %s: %s", what, exc if isinstance(exc, TileReadError) else repr(exc))
    return PlainTextResponse("error\n", status_code=500, headers={"Cache-Control": CACHE_ERROR})


def _coord(value: str) -> int | None:
    return int(value) if _COORD.fullmatch(value) else None


def _read_tile(layer: LiveTileSet, z: int, x: int, y: int) -> tuple[TileSet, bytes | None]:
    """A whole tile (or ``None``) from one version of ``layer``.  A read that a change of the file overtook
    (a set read by path, such as MBTiles, renamed over; a write in place) is read again from the new
    version, once; overtaken again, it is a :class:`TilesetChangedError` (503)."""
    for _ in range(2):
        with layer.lease() as lease:
            data = lease.tileset.read(z, x, y)
            if lease.unchanged():
                return lease.tileset, data
    raise TilesetChangedError(f"{layer.path} kept changing while tile {z}/{x}/{y} was read")


def _tilejson(layer: LiveTileSet, url: str) -> dict:
    """The TileJSON of ``layer``'s current version, its tiles at ``url/{z}/{x}/{y}.FORMAT``."""
    with layer.lease() as lease:
        return lease.tileset.tilejson(f"{url}/{{z}}/{{x}}/{{y}}.{lease.tileset.format}")


def _archive_meta(lease: Lease) -> tuple[int, str, str]:
    """(size, ETag, Last-Modified) of the archive version a lease holds: the ETag changes with the file."""
    _, ino, size, mtime_ns = lease.identity  # type: ignore[misc]
    return size, f'"{ino:x}-{size:x}-{mtime_ns:x}"', formatdate(mtime_ns / 1e9, usegmt=True)


class _ArchiveBytes:
    """ASGI response: ``start..stop`` of one archive version, read in chunks off the loop; the lease is
    released when the body is sent or the client has gone."""

    def __init__(self, pool: ReadPool, timeout_s: float, lease: Lease, status: int, headers: dict, span) -> None:
        self.pool, self.timeout_s, self.lease = pool, timeout_s, lease
        self.status, self.headers, self.span = status, headers, span

    async def __call__(self, scope, receive, send) -> None:
        try:
            raw = [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]
            await send({"type": "http.response.start", "status": self.status, "headers": raw})
            pos, stop = self.span if scope["method"] != "HEAD" else (0, 0)
            while pos < stop:
                n = min(ARCHIVE_CHUNK, stop - pos)
                chunk = await self.pool.run(self.timeout_s, self.lease.tileset.source.read, pos, n)
                pos += n
                await send({"type": "http.response.body", "body": chunk, "more_body": pos < stop})
            if stop == 0:
                await send({"type": "http.response.body", "body": b""})
        except (TileReadError, TimeoutError, OSError) as exc:  # the headers are out: the body can only stop short
            log.error("/tiles.pmtiles cut off: %s", exc or "a read took too long")  # (uvicorn then closes it)
        finally:
            self.lease.release()


def make_app(config: ServeConfig, tiles: TileSet | None = None, source: TileSet | None = None):
    """The ASGI app for ``config`` (tile sets opened here unless given); closing them is the caller's
    (through the app's ``state.layers``, each a :class:`LiveTileSet`)."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware
    from starlette.responses import FileResponse, PlainTextResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    pool = ReadPool()
    timeout = config.read_timeout_s
    tiles_live = LiveTileSet(config.path, open_tileset, tiles)
    source_live = None
    if source is not None or config.source is not None:
        source_live = LiveTileSet(config.source if config.source is not None else source.label, open_tileset, source)
    layers = {"tiles": tiles_live, "source": source_live}
    # a local archive only: a remote one's tiles go through /tiles/… (the viewer falls back to them)
    local_archive = tiles_live.kind == "pmtiles" and tiles_live.watched
    static_dir = Path(str(resources.files("geopix").joinpath("serve_static")))

    def base(request) -> str:
        return str(request.base_url).rstrip("/")

    def tile_endpoint(name: str):
        layer = layers[name]

        async def tile(request):
            p = request.path_params
            z, x, y = _coord(p["z"]), _coord(p["x"]), _coord(p["y"])
            if layer is None or z is None or x is None or y is None or not in_world(z, x, y):
                return _not_found()
            try:
                ts, data = await pool.run(timeout, _read_tile, layer, z, x, y)
            except Exception as exc:  # a broken tile must not take the server down, nor print a traceback
                return _failure(exc, f"{request.url.path} ({layer.path})")
            if p["ext"] != ts.format:
                return _not_found()
            if data is None:
                return Response(status_code=204, headers={"Cache-Control": f"public, max-age={CACHE_EMPTY_S}"})
            return _bytes_response(request, data, ts.media_type, f"public, max-age={ts.cache_seconds}")

        return tile

    def tilejson_endpoint(name: str):
        layer = layers[name]

        async def tilejson(request):
            if layer is None:
                return _not_found()
            try:
                doc = await pool.run(timeout, _tilejson, layer, f"{base(request)}/{name}")
            except Exception as exc:
                return _failure(exc, f"{request.url.path} ({layer.path})")
            return _json_response(request, doc)

        return tilejson

    async def viewer_json(request):
        b = base(request)
        return _json_response(
            request,
            {
                "tilejson": f"{b}/tilejson.json",
                "pmtiles": f"{b}/tiles.pmtiles" if local_archive else None,
                "source": f"{b}/source/tilejson.json" if source_live is not None else None,
            },
        )

    async def pmtiles_file(request):
        """The archive's bytes, from the same version as the other routes: ETag, If-None-Match,
        If-Range, one ``Range`` (206 / 416); several ranges are answered with the whole archive."""
        if not local_archive:
            return _not_found()
        try:
            lease = await pool.run(timeout, tiles_live.lease)
        except Exception as exc:
            return _failure(exc, f"/tiles.pmtiles ({tiles_live.path})")
        size, etag, modified = _archive_meta(lease)
        headers = {
            "Content-Type": "application/vnd.pmtiles",
            "Cache-Control": CACHE_NONE,
            "ETag": etag,
            "Last-Modified": modified,
            "Accept-Ranges": "bytes",
        }
        if _matches(request, etag):
            lease.release()
            return Response(status_code=304, headers=headers)
        specs = parse_range(request.headers.get("range", "")) if "range" in request.headers else None
        if_range = request.headers.get("if-range")
        if if_range is not None and if_range.strip() not in (etag, modified):
            specs = None  # the client's copy is another version: send this one whole
        span, status = (0, size), 200
        if specs is not None and len(specs) == 1:
            resolved = resolve_range(specs[0], size)
            if resolved is None:
                lease.release()
                return PlainTextResponse(
                    "range not satisfiable\n", status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"}
                )
            span, status = resolved, 206
            headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{size}"
        headers["Content-Length"] = str(span[1] - span[0])
        return _ArchiveBytes(pool, timeout, lease, status, headers, span)

    async def index(request):
        return FileResponse(static_dir / "index.html", headers={"Cache-Control": CACHE_NONE})

    async def http_error(request, exc):
        if exc.status_code == 404:
            return _not_found()
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers.setdefault("Allow", "GET, HEAD")  # every route here answers GET and HEAD only
        return Response(status_code=exc.status_code, headers=headers)

    tile_route = "/{layer}/{z}/{x}/{y}.{ext}"
    routes = [
        Route("/", index),
        Route("/index.html", index),
        Route("/tilejson.json", tilejson_endpoint("tiles")),
        Route("/source/tilejson.json", tilejson_endpoint("source")),
        Route("/viewer.json", viewer_json),
        Route("/tiles.pmtiles", pmtiles_file),
        *(Route(tile_route.replace("{layer}", name), tile_endpoint(name)) for name in layers),
        Mount("/static", StaticFiles(directory=static_dir, follow_symlink=False), name="static"),
    ]
    middleware = [Middleware(HostCheck, names=config.host_names()), Middleware(IgnoreInvalidRange)]
    if config.cors:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(config.cors),
                allow_methods=["GET", "HEAD", "OPTIONS"],
                allow_headers=["*"],
                expose_headers=["ETag", "Content-Length", "Content-Range", "Accept-Ranges"],
                max_age=600,
            )
        )
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={404: http_error, 405: http_error})
    app.state.layers = [layer for layer in layers.values() if layer is not None]
    app.state.pool = pool
    return app


def close_app(app) -> None:
    """Close the tile sets ``make_app`` opened (every version still open) and end its read threads."""
    for layer in app.state.layers:
        layer.close()
    app.state.pool.close()
