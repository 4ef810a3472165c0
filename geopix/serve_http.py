"""The HTTP rules ``geopix serve`` enforces around its routes, where Starlette and uvicorn fall short.

Why a module: each is a small protocol detail with an RFC behind it and a test of its own — the
``Host`` allow-list (IPv6 literals included, which Starlette cannot match), ``Range`` headers
(RFC 9110: an invalid one is ignored, not a 400), ``--cors`` origins (what a browser sends,
byte for byte, or it never matches) and a deadline for a request's headers (uvicorn closes idle
keep-alive connections, but waits forever on a new or slow one).
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from geopix.errors import OptionError

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


# ---- CORS origins ------------------------------------------------------------------------------
def normalise_origin(origin: str) -> str:
    """``origin`` as a browser's ``Origin`` header spells it (``https://app.example.org``), or ``*``.

    A trailing slash and a default port are dropped and the scheme and host lower-cased; a path,
    query, credentials, wildcard inside a name or a missing host can never match and are refused.
    """
    if origin == "*":
        return origin
    example = "an origin like https://app.example.org or http://localhost:3000, or * for any"
    try:
        u = urlsplit(origin.strip())
        port = u.port
    except ValueError:
        raise OptionError(f"--cors {origin!r} is not {example}") from None
    if u.scheme.lower() not in ("http", "https") or not u.hostname:
        raise OptionError(f"--cors {origin!r} is not {example}")
    if "*" in origin:
        raise OptionError(f"--cors {origin!r}: browsers send one exact origin, so wildcards never match; list each "
                          "origin (repeat --cors), or pass * for any")  # fmt: skip
    if u.username or u.password or u.path not in ("", "/") or u.query or u.fragment:
        raise OptionError(f"--cors {origin!r}: an origin is a scheme, host and port only; is {example}")
    scheme = u.scheme.lower()
    host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname.lower()
    default = {"http": 80, "https": 443}[scheme]
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


# ---- Host allow-list ---------------------------------------------------------------------------
def host_name(host: str) -> str:
    """The name in a ``Host`` header without its port: ``[::1]:8000`` → ``[::1]``, ``Tiles.LAN:80`` → ``tiles.lan``."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return normal_host(host[: end + 1]) if end > 0 else host
    return host.split(":", 1)[0].rstrip(".")


def normal_host(name: str) -> str:
    """An allowed host as ``host_name`` gives it: IPv6 addresses bracketed and compressed, names lower-cased."""
    bare = name.strip().lower().removeprefix("[").removesuffix("]")
    try:
        addr = ipaddress.ip_address(bare)
    except ValueError:
        return name.strip().lower().rstrip(".")
    return f"[{addr.compressed}]" if addr.version == 6 else addr.compressed


class HostCheck:
    """ASGI middleware: 400 unless the ``Host`` names one of ``names`` (``*`` any; ``*.example.org`` its subdomains)."""

    def __init__(self, app, names: list[str]) -> None:
        self.app = app
        self.any = "*" in names
        self.exact = {normal_host(n) for n in names if not n.startswith("*")}
        self.suffixes = tuple(n[1:].lower() for n in names if n.startswith("*."))

    def allows(self, host: str) -> bool:
        name = host_name(host)
        return self.any or name in self.exact or (bool(self.suffixes) and name.endswith(self.suffixes))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket") and not self.any:
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if not self.allows(host):
                from starlette.responses import PlainTextResponse

                await PlainTextResponse("Invalid host header", status_code=400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


# ---- Range ---------------------------------------------------------------------------------------
_SPEC = re.compile(r"(\d{1,18})-(\d{0,18})|-(\d{1,18})")


def parse_range(header: str) -> list[tuple[int | None, int | None]] | None:
    """RFC 9110 ``bytes=`` range specs as ``(first, last)`` (``(None, n)``: the last n bytes), or ``None``
    when the header is not a valid byte range set (then it must be ignored)."""
    unit, _, ranges = header.partition("=")
    if unit.strip().lower() != "bytes" or not ranges.strip():
        return None
    specs: list[tuple[int | None, int | None]] = []
    for part in ranges.split(","):
        part = part.strip(" \t")
        if not part:
            continue  # RFC 9110 #rule: empty list elements are allowed
        m = _SPEC.fullmatch(part)
        if m is None:
            return None
        first, last, suffix = m.groups()
        if suffix is not None:
            specs.append((None, int(suffix)))
        else:
            if last and int(last) < int(first):
                return None
            specs.append((int(first), int(last) if last else None))
    return specs or None


def resolve_range(spec: tuple[int | None, int | None], size: int) -> tuple[int, int] | None:
    """One spec as ``(start, stop)`` in a ``size``-byte body, or ``None`` if unsatisfiable."""
    first, last = spec
    if first is None:
        return (max(0, size - last), size) if last and size else None  # type: ignore[operator]
    if first >= size:
        return None
    return first, size if last is None else min(size, last + 1)


class IgnoreInvalidRange:
    """ASGI middleware: drops a ``Range`` header that is not a valid byte range set, so the answer is
    a 200 with the whole body (RFC 9110 §14.2) instead of Starlette's 400 (or a 500 for huge numbers)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            for k, v in headers:
                if k == b"range" and (scope["method"] != "GET" or parse_range(v.decode("latin-1")) is None):
                    scope = {**scope, "headers": [(k2, v2) for k2, v2 in headers if k2 != b"range"]}
                    break
        await self.app(scope, receive, send)


# ---- a deadline for request headers ---------------------------------------------------------------
def header_timeout_protocol(timeout_s: float) -> type:
    """uvicorn's HTTP protocol class (httptools, else h11) that closes a connection which has not sent a
    request's headers within ``timeout_s`` of connecting or of its last response (idle or slowloris)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # httptools not installed
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base

    class HeaderDeadline(Base):  # type: ignore[misc, valid-type]
        _deadline = None

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(timeout_s, self._expire)

        def _expire(self) -> None:
            self._deadline = None
            busy = self.cycle is not None and not self.cycle.response_complete
            if not busy and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc) -> None:  # type: ignore[override]
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            super().connection_lost(exc)

    return HeaderDeadline
