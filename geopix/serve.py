"""``geopix serve``: runs the tile server's app (:mod:`geopix.serve_app`) on uvicorn until stopped.

Why this stack: uvicorn is the reference ASGI server (keep-alive, a 2048-connection listen
backlog, graceful shutdown on SIGINT/SIGTERM, quiet client disconnects); Starlette is the small
toolkit under FastAPI without the request-validation layer we have no use for, and it brings the
HTTP pieces we would otherwise hand-write: CORS with preflight, a Host allow-list, and file
responses with ``Range``, ``ETag`` and ``Last-Modified``.  What each route answers is
:mod:`geopix.serve_app`'s; this module binds the socket, starts the server, and closes the tile
sets when it stops.  The library does not print; the CLI reports the URL through ``on_ready``.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable

from geopix.errors import OptionError, PortInUseError
from geopix.process import configure_gdal
from geopix.serve_app import ServeConfig, close_app, make_app
from geopix.serve_http import header_timeout_protocol, normal_host
from geopix.tilesets import open_tileset

__all__ = ["ServeConfig", "bind", "close_app", "make_app", "serve", "shown_url", "uvicorn_config"]

BACKLOG = 2048
SHUTDOWN_GRACE_S = 5


def uvicorn_config(app, config: ServeConfig):
    """uvicorn's settings for ``geopix serve``: quiet logs, timeouts for idle and slow clients, a connection cap."""
    import uvicorn

    return uvicorn.Config(
        app,
        http=header_timeout_protocol(config.header_timeout_s),
        log_level="warning",
        access_log=False,  # a map view makes hundreds of requests; errors still go to the log
        lifespan="off",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        timeout_keep_alive=config.keep_alive_s,
        limit_concurrency=config.max_connections,
        server_header=False,
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (``port=0``: any free port) with a deep backlog."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if not 0 <= port <= 65535:
        raise OptionError(f"--port {port} is not a TCP port; pass 1-65535, or 0 for any free one")
    try:
        return socket.create_server((host.strip("[]"), port), family=family, backlog=BACKLOG)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(f"port {port} on {host} is in use; pass another --port, or --port 0 for any") from exc
        raise PortInUseError(f"cannot listen on {host}:{port} ({exc.strerror}); check --host and --port") from exc


def shown_url(host: str, port: int) -> str:
    """The URL to print for a socket bound to ``host``: one this server's own Host check accepts."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"  # a socket on :: is IPv6 only (socket.create_server): 127.0.0.1 would not reach it
    return f"http://{normal_host(host) if ':' in host else host}:{port}/"


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

    configure_gdal()  # remote GeoTIFFs: GDAL's settings for reads over HTTP
    # rio-tiler warns on every tile of a GeoTIFF without overviews; the server's log is for errors.
    warnings.filterwarnings("ignore", message=".*has no Overviews.*")
    tiles = open_tileset(config.path)
    source = None
    app = None
    try:
        source = open_tileset(config.source) if config.source is not None else None
        app = make_app(config, tiles, source)
        sock = bind(config.host, config.port)
        host, port = sock.getsockname()[:2]
        server = _announcing_server(shown_url(host, port), on_ready, uvicorn_config(app, config))
        server.run(sockets=[sock])
    finally:
        if app is not None:
            close_app(app)
        else:
            tiles.close()
            if source is not None:
                source.close()
