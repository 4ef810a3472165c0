"""Getting the checkpoint to Dask workers that share no folder with the client.

A registry name (``sat2map``) resolves inside each worker's own install of geopix, and the
worker checks that its file has the client's SHA-256 (other weights would change pixels).
A checkpoint path, or a URL (fetched once by the client into a local cache), is read once
by the client and sent to every worker as a worker plugin (also to workers that join
later); each worker verifies the checksum and keeps the file in its own cache folder
(``$GEOPIX_MODEL_CACHE``, else ``<tmp>/geopix-models``).  A local cluster skips the copy:
its workers see the client's file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

from geopix.errors import CheckpointError
from geopix.remote import storage_options
from geopix.source import redact

CACHE_ENV = "GEOPIX_MODEL_CACHE"
PLUGIN_PREFIX = "geopix-model-"

_SHA: dict[tuple[str, int, int], str] = {}
_SHA_LOCK = threading.Lock()


def sha256_file(path: str | Path) -> str:
    """The file's SHA-256, computed once per process for a given (path, size, mtime)."""
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _SHA_LOCK:
        if key in _SHA:
            return _SHA[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    with _SHA_LOCK:
        _SHA[key] = h.hexdigest()
    return _SHA[key]


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "geopix-models")


def cached_path(sha256: str, suffix: str) -> Path:
    return cache_dir() / f"{sha256}{suffix}"


def install(data: bytes, sha256: str, suffix: str) -> Path:
    """Write checkpoint bytes into this process's cache, after checking them against ``sha256``."""
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise CheckpointError(f"the checkpoint sent to this worker has SHA-256 {got[:12]}…, expected {sha256[:12]}…")
    dst = cached_path(sha256, suffix)
    if dst.exists() and sha256_file(dst) == sha256:
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_bytes(data)
    tmp.replace(dst)
    return dst


class ModelInstall:
    """A Dask worker plugin carrying one checkpoint's bytes; ``setup`` installs them on the worker."""

    def __init__(self, data: bytes, sha256: str, suffix: str) -> None:
        self.data, self.sha256, self.suffix = data, sha256, suffix
        self.name = PLUGIN_PREFIX + sha256[:16]

    def setup(self, worker=None) -> None:
        install(self.data, self.sha256, self.suffix)

    def teardown(self, worker=None) -> None:
        pass


def send_to_workers(client, path: str | Path, sha256: str) -> None:
    """Read the checkpoint once and install it on every worker of ``client`` (and later ones)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    data = Path(path).read_bytes()
    plugin = type("GeopixModelInstall", (ModelInstall, WorkerPlugin), {})(data, sha256, Path(path).suffix)
    client.register_plugin(plugin, name=plugin.name)


def worker_checkpoint(model_path: str, sha256: str, registry_name: str | None) -> str:
    """The local file a worker loads: its own install's registry file, the copy sent to it, or
    the client's path when this worker can see it (a local cluster); checksums checked."""
    if registry_name:
        from geopix.models.registry import resolve_model

        path = str(resolve_model(registry_name))
        if sha256 and sha256_file(path) != sha256:
            raise CheckpointError(
                f"this worker's {registry_name!r} weights ({path}) differ from the client's (SHA-256); "
                "install the same geopix version on the workers"
            )
        return path
    if sha256:
        copy = cached_path(sha256, Path(model_path).suffix)
        if copy.exists():
            return str(copy)
    if os.path.exists(model_path) and (not sha256 or sha256_file(model_path) == sha256):
        return model_path
    raise CheckpointError(
        f"this worker has no copy of checkpoint {Path(model_path).name} (SHA-256 {sha256[:12]}…) and cannot see "
        f"{model_path}; the client sends it to remote workers, so check that the worker plugin was accepted"
    )


def fetch_checkpoint(url: str) -> Path:
    """A checkpoint URL (http(s)://, s3://, …) downloaded once into the local cache."""
    import fsspec

    name = hashlib.sha256(url.encode()).hexdigest()[:16] + "-" + url.split("?", 1)[0].rsplit("/", 1)[-1]
    dst = cache_dir() / "by-url" / name
    if dst.exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}")
    try:
        with fsspec.open(url, "rb", **storage_options(url)) as src:
            tmp.write_bytes(src.read())
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot download --model {redact(url)} ({type(exc).__name__}); check the URL") from exc
    tmp.replace(dst)
    return dst
