"""Real protocol servers on 127.0.0.1 for tests and benchmarks: HTTP with Range, and S3.

GDAL and fsspec talk to them exactly as to a cloud (``/vsicurl/`` over HTTP Range requests;
``/vsis3/`` and s3fs through an endpoint override), so remote reads and writes are tested
without a network.  The HTTP server counts the bytes it sends (the benchmark's figure) and can
misbehave on purpose (no Range support, fixed status codes, stalls).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from geopix.remote import storage_options

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class _Handler(SimpleHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as GDAL's curl expects of a real server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _fault(self) -> bool:
        for prefix, fault in self.server.faults.items():
            if self.path.startswith(prefix):
                status, _, past = fault.partition(">")  # "500>65536": only reads from byte 65536 on
                if past and self._range_start() < int(past):
                    return False
                self.server.count_fault()
                if status == "stall":
                    time.sleep(self.server.stall_s)
                    return True
                self.send_error(int(status))
                return True
        return False

    def _range_start(self) -> int:
        header = self.headers.get("Range") or "bytes=0-"
        try:
            return int(header.split("=", 1)[1].split("-", 1)[0])
        except (IndexError, ValueError):
            return 0

    def do_HEAD(self) -> None:
        if not self._fault():
            self._serve(head=True)

    def do_GET(self) -> None:
        if not self._fault():
            self._serve(head=False)

    def _serve(self, head: bool) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        header = self.headers.get("Range")
        m = _RANGE.match(header.strip()) if header and self.server.ranges else None
        if m is None:  # the whole file (also what a server without Range support does)
            start, stop, status = 0, size, 200
        else:
            a, b = m.groups()
            if a == "":  # the last b bytes
                start, stop = max(0, size - int(b)), size
            else:
                start, stop = int(a), min(size, int(b) + 1 if b else size)
            if start >= size:
                self.send_error(416)
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(stop - start))
        self.send_header("Last-Modified", self.date_time_string(int(path.stat().st_mtime)))
        if self.server.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        self.end_headers()
        if head:
            return
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(stop - start)
        self.server.count(len(data))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: str, ranges: bool, faults: dict[str, str], stall_s: float, counts) -> None:
        super().__init__(("127.0.0.1", 0), partial(_Handler, directory=root))
        self.ranges, self.faults, self.stall_s, self.counts = ranges, faults, stall_s, counts
        self.lock = threading.Lock()

    def count(self, n: int) -> None:
        with self.counts.get_lock():
            self.counts[0] += n
            self.counts[1] += 1

    def count_fault(self) -> None:
        with self.counts.get_lock():
            self.counts[2] += 1


def _serve(root: str, ranges: bool, faults: dict[str, str], stall_s: float, counts, port_queue) -> None:
    server = _Server(root, ranges, faults, stall_s, counts)
    port_queue.put(server.server_address[1])
    server.serve_forever()


class _ChildServer:
    """A server started by ``target(*args, counts, port_queue)`` in a child process on 127.0.0.1.

    A child, not a thread: GDAL holds the GIL in parts of an open, so a server thread in the
    reading process can deadlock with it (seen with /vsicurl/).  ``bytes_sent`` and
    ``requests`` count the response bodies the server sent, ``faults_hit`` the requests it
    stalled or failed on purpose.
    """

    def __init__(self, target, *args: object) -> None:
        ctx = mp.get_context("spawn")
        self._counts = ctx.Array("q", 3)
        port_queue = ctx.Queue()
        self._proc = ctx.Process(target=target, args=(*args, self._counts, port_queue), daemon=True)
        self._proc.start()
        self.port = port_queue.get(timeout=60)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def bytes_sent(self) -> int:
        return int(self._counts[0])

    @property
    def requests(self) -> int:
        return int(self._counts[1])

    @property
    def faults_hit(self) -> int:
        return int(self._counts[2])

    def reset_counts(self) -> None:
        with self._counts.get_lock():
            self._counts[0] = 0
            self._counts[1] = 0
            self._counts[2] = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self._proc.terminate()
        self._proc.join(10)


class RangeHTTPServer(_ChildServer):
    """Serves ``root`` on 127.0.0.1 (an ephemeral port), honouring ``Range: bytes=a-b``.

    ``ranges=False`` answers every request with the whole file (a server without Range
    support); ``faults`` maps a path prefix to a status code (``"403"``) or ``"stall"`` (no
    answer for ``stall_s`` seconds), for every request or, as ``"500>65536"``, only for reads
    from that byte on (the header is served, the pixels are not).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        ranges: bool = True,
        faults: dict[str, str] | None = None,
        stall_s: float = 30.0,
    ) -> None:
        super().__init__(_serve, str(root), ranges, dict(faults or {}), stall_s)


def _serve_s3(counts, port_queue) -> None:
    """moto's S3 app (as ``python -m moto.server`` runs it), counting the response bytes."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    app = DomainDispatcherApplication(create_backend_app)

    def counted(environ, start_response):
        def body():
            sent = 0
            try:
                for chunk in app(environ, start_response):
                    sent += len(chunk)
                    yield chunk
            finally:
                with counts.get_lock():
                    counts[0] += sent
                    counts[1] += 1

        return body()

    server = make_server("127.0.0.1", 0, counted, threaded=True, request_handler=MotoRequestHandler)
    port_queue.put(server.server_address[1])
    server.serve_forever()


class S3Server(_ChildServer):
    """An S3-compatible server (moto's server mode) on 127.0.0.1; ``url`` is its endpoint.

    moto installs from PyPI, speaks the real S3 REST protocol (Range GETs, multipart uploads,
    ListObjectsV2) and needs no binary or daemon.  It counts what it sends, as ``RangeHTTPServer``.
    """

    def __init__(self) -> None:
        super().__init__(_serve_s3)


#: Environment that points GDAL (``/vsis3/``) and botocore/s3fs at an S3-compatible endpoint.
def s3_env(endpoint: str, key: str = "testing", secret: str = "testing") -> dict[str, str]:
    host = endpoint.split("://", 1)[1]
    return {
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_S3_ENDPOINT": host,  # GDAL: host:port, no scheme
        "AWS_HTTPS": "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
        "AWS_ENDPOINT_URL": endpoint,  # botocore (s3fs)
        "AWS_NO_SIGN_REQUEST": "NO",
    }


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def moto_s3() -> Iterator[str]:
    """An ``S3Server`` for the duration; yields its endpoint URL."""
    with S3Server() as server:
        yield server.url


def upload_to_s3(path: str | Path, url: str) -> None:
    """Copy a local file to ``s3://bucket/key`` with s3fs (the endpoint from the environment)."""
    import fsspec

    fs, key = fsspec.core.url_to_fs(url, **storage_options(url))
    fs.put_file(str(path), key)


def environ_with(values: dict[str, str]) -> dict[str, str]:
    """``os.environ`` with ``values`` over it (for worker subprocesses)."""
    return {**os.environ, **values}
