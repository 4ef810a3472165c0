"""``geopix serve``: tile sets and the MapLibre viewer over HTTP (Starlette on uvicorn).

Why this stack: uvicorn is the reference ASGI server (keep-alive, a 2048-connection listen
backlog, graceful shutdown on SIGINT/SIGTERM, quiet client disconnects); Starlette is the small
toolkit under FastAPI without the request-validation layer we have no use for, and it brings the
HTTP pieces we would otherwise hand-write: CORS with preflight, a Host allow-list, and file
responses with ``Range``, ``ETag`` and ``Last-Modified``.

Routes: ``/tiles/{z}/{x}/{y}.{ext}``, ``/tilejson.json``, ``/tiles.pmtiles`` (the archive itself,
for the pmtiles JS protocol's range requests, when serving a ``.pmtiles``), ``/`` (viewer),
``/static/…``, ``/viewer.json``, and with ``source`` ``/source/{z}/{x}/{y}.png`` and
``/source/tilejson.json``.  A remote archive or COG (``https://``, ``s3://``…) is read with
ranged GETs as tiles are asked for; ``/tiles.pmtiles`` is then absent and the viewer reads the
archive's tiles through ``/tiles/…``.  Tile addresses are integers matched after
percent-decoding, so no request can name a file outside the tile set.  A tile address inside the world with no tile
answers ``204 No Content`` (map clients draw nothing and log nothing), cached briefly; anything
else unknown is ``404``.  Tiles carry a content ``ETag``, so ``If-None-Match`` answers ``304``.

Only Host headers naming this machine (``localhost``, ``127.0.0.1``) are accepted unless
``allowed_hosts`` adds names: a web page cannot use DNS rebinding to read the tiles through
someone's browser.  The library does not print; the CLI reports the URL through ``on_ready``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from geopix.errors import PortInUseError, TilesetError
from geopix.process import configure_gdal
from geopix.source import redact
from geopix.tilesets import GEOTIFF_SUFFIXES, TileSet, open_tileset
from geopix.tilesets.base import CACHE_EMPTY_S, in_world

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("localhost", "127.0.0.1")  # Starlette cannot match a bracketed IPv6 Host
CACHE_NONE = "no-cache"  # TileJSON, viewer: always revalidated (cheap with the ETag)
BACKLOG = 2048
SHUTDOWN_GRACE_S = 5


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """What ``geopix serve`` serves and to whom."""

    path: Path | str  # a local path, or the URL of a .pmtiles archive or GeoTIFF/COG
    host: str = "127.0.0.1"
    port: int = 8000
    source: Path | str | None = None  # an aerial GeoTIFF (path or URL) shown under the map in the viewer
    cors: tuple[str, ...] = ()  # origins allowed to read the tiles from other pages ("*": any)
    allowed_hosts: tuple[str, ...] = ()  # Host names accepted besides the loopback ones ("*": any)

    def __post_init__(self) -> None:
        if self.source is not None and Path(str(self.source).split("?", 1)[0]).suffix.lower() not in GEOTIFF_SUFFIXES:
            raise TilesetError(
                f"--source {redact(str(self.source))} must be a GeoTIFF (the aerial imagery to compare against)"
            )
        for origin in self.cors:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise TilesetError(f"--cors {origin!r} must be an origin like https://example.org, or *")

    def host_names(self) -> list[str]:
        """The Host names the server answers: loopback, the bound address if specific, and the extra ones."""
        names = [*LOOPBACK_HOSTS, *self.allowed_hosts]
        if self.host not in ("0.0.0.0", "::", ""):
            names.append(self.host)
        return list(dict.fromkeys(names))


def _etag(data: bytes) -> str:
    return '"' + hashlib.blake2b(data, digest_size=12).hexdigest() + '"'


def _bytes_response(request, data: bytes, media_type: str, cache: str):
    """200 with an ``ETag``, or 304 when the client already holds these bytes."""
    from starlette.responses import Response

    etag = _etag(data)
    headers = {"ETag": etag, "Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
    match = request.headers.get("if-none-match", "")
    if match and (match.strip() == "*" or etag in [t.strip().removeprefix("W/") for t in match.split(",")]):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)


def _json_response(request, doc: dict):
    return _bytes_response(request, json.dumps(doc).encode(), "application/json", CACHE_NONE)


def _not_found():
    from starlette.responses import PlainTextResponse

    return PlainTextResponse("not found\n", status_code=404, headers={"Cache-Control": CACHE_NONE})


def make_app(config: ServeConfig, tiles: TileSet | None = None, source: TileSet | None = None):
    """The ASGI app for ``config`` (tile sets opened here unless given); closing them is the caller's."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.responses import FileResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    tiles = tiles if tiles is not None else open_tileset(config.path)
    if source is None and config.source is not None:
        source = open_tileset(config.source)
    layers = {"tiles": tiles, "source": source}
    # a local archive only: a remote one's tiles go through /tiles/… (the viewer falls back to them)
    archive = getattr(getattr(tiles, "source", None), "path", None) if tiles.kind == "pmtiles" else None
    static_dir = Path(str(resources.files("geopix").joinpath("serve_static")))

    def base(request) -> str:
        return str(request.base_url).rstrip("/")

    def tile_endpoint(layer: str):
        ts = layers[layer]

        async def tile(request):
            p = request.path_params
            z, x, y = p["z"], p["x"], p["y"]
            if ts is None or p["ext"] != ts.format or not in_world(z, x, y):
                return _not_found()
            try:
                data = ts.get(z, x, y) if ts.inline_reads else await run_in_threadpool(ts.get, z, x, y)
            except Exception as exc:  # a broken tile must not take the server down, nor print a traceback
                log.error("error reading tile %s/%d/%d/%d: %r", layer, z, x, y, exc)
                return Response("error\n", status_code=500, headers={"Cache-Control": CACHE_NONE})
            if data is None:
                return Response(status_code=204, headers={"Cache-Control": f"public, max-age={CACHE_EMPTY_S}"})
            return _bytes_response(request, data, ts.media_type, f"public, max-age={ts.cache_seconds}")

        return tile

    def tilejson_endpoint(layer: str):
        ts = layers[layer]

        async def tilejson(request):
            if ts is None:
                return _not_found()
            return _json_response(request, ts.tilejson(f"{base(request)}/{layer}/{{z}}/{{x}}/{{y}}.{ts.format}"))

        return tilejson

    async def viewer_json(request):
        b = base(request)
        return _json_response(
            request,
            {
                "tilejson": f"{b}/tilejson.json",
                "pmtiles": f"{b}/tiles.pmtiles" if archive else None,
                "source": f"{b}/source/tilejson.json" if source is not None else None,
            },
        )

    async def pmtiles_file(request):
        if archive is None:
            return _not_found()
        # Range, If-Range, ETag and Last-Modified come from Starlette's FileResponse.
        return FileResponse(archive, media_type="application/vnd.pmtiles", headers={"Cache-Control": CACHE_NONE})

    async def index(request):
        return FileResponse(static_dir / "index.html", headers={"Cache-Control": CACHE_NONE})

    async def not_found(request, exc):
        return _not_found() if exc.status_code == 404 else Response(status_code=exc.status_code)

    routes = [
        Route("/", index),
        Route("/index.html", index),
        Route("/tilejson.json", tilejson_endpoint("tiles")),
        Route("/source/tilejson.json", tilejson_endpoint("source")),
        Route("/viewer.json", viewer_json),
        Route("/tiles.pmtiles", pmtiles_file),
        *(Route(f"/{layer}/{{z:int}}/{{x:int}}/{{y:int}}.{{ext}}", tile_endpoint(layer)) for layer in layers),
        Mount("/static", StaticFiles(directory=static_dir, follow_symlink=False), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=config.host_names())]
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
    return Starlette(routes=routes, middleware=middleware, exception_handlers={404: not_found, 405: not_found})


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (``port=0``: any free port) with a deep backlog."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=BACKLOG)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(f"port {port} on {host} is in use; pass another --port, or --port 0 for any") from exc
        raise PortInUseError(f"cannot listen on {host}:{port} ({exc.strerror}); check --host and --port") from exc


def _announcing_server(url: str, on_ready: Callable[[str], None] | None, config) -> object:
    """A uvicorn server that calls ``on_ready(url)`` once it has started.

    Only then are its SIGINT/SIGTERM handlers installed: a "ready" line printed before
    ``run()`` let a Ctrl-C pressed right after it land before them and be lost.
    """
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if on_ready is not None and self.started:
                on_ready(url)

    return Server(config)


def serve(config: ServeConfig, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM (in-flight requests finish); ``on_ready(url)`` once the socket listens."""
    import warnings

    import uvicorn

    configure_gdal()  # remote GeoTIFFs: GDAL's settings for reads over HTTP
    # rio-tiler warns on every tile of a GeoTIFF without overviews; the server's log is for errors.
    warnings.filterwarnings("ignore", message=".*has no Overviews.*")
    tiles = open_tileset(config.path)
    source = None
    try:
        source = open_tileset(config.source) if config.source is not None else None
        app = make_app(config, tiles, source)
        sock = bind(config.host, config.port)
        host, port = sock.getsockname()[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else f"[{host}]" if ":" in host else host
        server = _announcing_server(
            f"http://{shown}:{port}/",
            on_ready,
            uvicorn.Config(
                app,
                log_level="warning",
                access_log=False,  # a map view makes hundreds of requests; errors still go to the log
                lifespan="off",
                timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
                server_header=False,
            ),
        )
        server.run(sockets=[sock])
    finally:
        tiles.close()
        if source is not None:
            source.close()
