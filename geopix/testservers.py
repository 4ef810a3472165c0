"""Real protocol servers on 127.0.0.1 for tests and benchmarks: HTTP with Range, and S3.

GDAL and fsspec talk to them exactly as to a cloud (``/vsicurl/`` over HTTP Range requests;
``/vsis3/`` and s3fs through an endpoint override), so remote reads and writes are tested
without a network.  The HTTP server counts the bytes it sends (the benchmark's figure) and can
misbehave on purpose (no Range support, fixed status codes, stalls).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class _Handler(SimpleHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as GDAL's curl expects of a real server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _fault(self) -> bool:
        for prefix, status in self.server.faults.items():
            if self.path.startswith(prefix):
                if status == "stall":
                    time.sleep(self.server.stall_s)
                    return True
                self.send_error(int(status))
                return True
        return False

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


def _serve(root: str, ranges: bool, faults: dict[str, str], stall_s: float, counts, port_queue) -> None:
    server = _Server(root, ranges, faults, stall_s, counts)
    port_queue.put(server.server_address[1])
    server.serve_forever()


class RangeHTTPServer:
    """Serves ``root`` on 127.0.0.1 (an ephemeral port), honouring ``Range: bytes=a-b``.

    It runs in a child process: GDAL holds the GIL in parts of an open, so a server thread in
    the reading process can deadlock with it (seen with /vsicurl/).  ``ranges=False`` answers
    every request with the whole file (a server without Range support); ``faults`` maps a path
    prefix to a status code (``"403"``) or ``"stall"`` (no answer for ``stall_s`` seconds).
    ``bytes_sent`` and ``requests`` count what the server sent.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        ranges: bool = True,
        faults: dict[str, str] | None = None,
        stall_s: float = 30.0,
    ) -> None:
        ctx = mp.get_context("spawn")
        self._counts = ctx.Array("q", 2)
        port_queue = ctx.Queue()
        self._proc = ctx.Process(
            target=_serve,
            args=(str(root), ranges, dict(faults or {}), stall_s, self._counts, port_queue),
            daemon=True,
        )
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

    def reset_counts(self) -> None:
        with self._counts.get_lock():
            self._counts[0] = 0
            self._counts[1] = 0

    def __enter__(self) -> RangeHTTPServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._proc.terminate()
        self._proc.join(10)


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
    """An S3-compatible server (moto's server mode) on 127.0.0.1; yields its endpoint URL.

    moto installs from PyPI, speaks the real S3 REST protocol (Range GETs, multipart uploads,
    ListObjectsV2) and needs no binary or daemon.  It runs as a child process for the reason
    given in ``RangeHTTPServer``.
    """
    import urllib.request

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start on port {port}") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)


def upload_to_s3(path: str | Path, url: str) -> None:
    """Copy a local file to ``s3://bucket/key`` with s3fs (the endpoint from the environment)."""
    import fsspec

    from geopix.remote import storage_options

    fs, key = fsspec.core.url_to_fs(url, **storage_options(url))
    fs.put_file(str(path), key)


def environ_with(values: dict[str, str]) -> dict[str, str]:
    """``os.environ`` with ``values`` over it (for worker subprocesses)."""
    return {**os.environ, **values}
