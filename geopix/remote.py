"""Object-store and HTTP locations through fsspec (``s3://``, ``gs://``, ``az://``, ``http(s)://``).

One set of environment variables configures both GDAL and fsspec: the standard credential
variables, GDAL's endpoint override ``AWS_S3_ENDPOINT`` / ``AWS_HTTPS`` which this module turns
into s3fs's ``endpoint_url`` (botocore's own ``AWS_ENDPOINT_URL`` wins when set), and GDAL's
HTTP timeouts.  fsspec writes outputs, lists remote globs (``glob``) and makes the ranged reads
of a remote PMTiles archive.  Failures map onto one error each: ``remote_error`` reads GDAL's
message for a failed remote open, ``read_error`` maps an fsspec read failure onto the same error
(and exit code), ``explain`` a failed write.  Finished files are built
locally and uploaded with ``upload_atomic``: an object store makes an object visible only when
its upload completes (a single PUT, or a multipart upload's final *complete* call), so nothing
partial ever appears under the final key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from geopix.errors import (
    GeopixError,
    InputNotFoundError,
    NotARasterError,
    OutputExistsError,
    OutputNotWritableError,
    RemoteAccessError,
    RemoteProtocolError,
    RemoteUnreachableError,
)
from geopix.source import gdal_name, redact, url_of

REMOTE_OUTPUT_SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "memory")
#: What fsspec may read from besides the object stores (ranged GETs through aiohttp).
HTTP_SCHEMES = ("http", "https")


def is_url(location: str | os.PathLike) -> bool:
    """True for an fsspec URL such as ``s3://bucket/run`` (a local path otherwise)."""
    text = str(location)
    return "://" in text and text.split("://", 1)[0].lower() in REMOTE_OUTPUT_SCHEMES


def storage_options(url: str) -> dict:
    """fsspec options for ``url`` from the environment (S3 endpoint from GDAL's variables too)."""
    scheme = str(url).split("://", 1)[0].lower()
    if scheme in HTTP_SCHEMES:  # GDAL's timeouts (geopix.process sets them), so both fail alike
        import aiohttp

        connect = float(os.environ.get("GDAL_HTTP_CONNECTTIMEOUT", "10"))
        total = float(os.environ.get("GDAL_HTTP_TIMEOUT", "60"))
        return {"client_kwargs": {"timeout": aiohttp.ClientTimeout(total=total, connect=connect)}}
    if scheme != "s3":
        return {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint and os.environ.get("AWS_S3_ENDPOINT"):
        https = os.environ.get("AWS_HTTPS", "YES").upper() not in ("NO", "FALSE", "0", "OFF")
        host = os.environ["AWS_S3_ENDPOINT"]
        endpoint = host if "://" in host else f"{'https' if https else 'http'}://{host}"
    opts: dict = {}
    if endpoint:
        opts["endpoint_url"] = endpoint
    if os.environ.get("AWS_NO_SIGN_REQUEST", "").upper() in ("YES", "TRUE", "1"):
        opts["anon"] = True
    return opts


def filesystem(url: str):
    """``(fs, path)`` for an fsspec URL; fresh instances are cheap and safe in worker processes."""
    import fsspec

    return fsspec.core.url_to_fs(url, **storage_options(url))


def join(base: str, *parts: str) -> str:
    """Join URL path parts with ``/`` (``os.path.join`` would break ``s3://``)."""
    return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])


def explain(exc: BaseException, url: str) -> Exception:
    """A ``GeopixError`` naming ``url`` (redacted) and the fix for an fsspec/botocore failure."""
    where = redact(url)
    text = f"{type(exc).__name__} {exc}"
    if isinstance(exc, PermissionError) or any(s in text for s in ("AccessDenied", "403", "InvalidAccessKeyId")):
        return RemoteAccessError(
            f"access to {where} was denied; check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*) and the bucket policy"
        )
    if "NoSuchBucket" in text or ("bucket" in text.lower() and "not" in text.lower() and "exist" in text.lower()):
        return OutputNotWritableError(f"bucket of {where} does not exist; create it or choose another -o")
    if isinstance(exc, ConnectionError | TimeoutError) or any(
        s in text for s in ("Could not connect", "EndpointConnectionError", "timed out", "Connect timeout")
    ):
        return RemoteUnreachableError(
            f"cannot reach {where} ({type(exc).__name__}); check the endpoint (AWS_S3_ENDPOINT / "
            "AWS_ENDPOINT_URL) and the network"
        )
    detail = redact(str(exc)).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return OutputNotWritableError(f"cannot write to {where} ({detail}); choose another -o")


def read_error(exc: BaseException, url: str, role: str) -> Exception:
    """A ``GeopixError`` for a failed remote *read* (fsspec, aiohttp, botocore), with the message and
    exit code GDAL's same failure gets (``remote_error``): 404 and a missing bucket 3,
    403 45, no answer 46, no Range support 47."""
    text = f"{type(exc).__name__}: {exc}"
    status = getattr(exc, "status", None)  # aiohttp.ClientResponseError
    if isinstance(exc, PermissionError) or status in (401, 403):
        text = "HTTP 403"
    elif "NoSuchBucket" in text or "bucket does not exist" in text.lower():
        text = "NoSuchBucket"
    elif isinstance(exc, FileNotFoundError) or status == 404:
        text = "HTTP 404"
    elif isinstance(status, int) and 500 <= status < 600:
        text = f"HTTP response code: {status}"
    elif isinstance(exc, TimeoutError):
        text = "timed out"
    elif isinstance(exc, OSError) or "EndpointConnectionError" in text:
        text = "Could not connect"
    return remote_error(RuntimeError(text), gdal_name(url), role)


def remote_error(exc: Exception, name: str, role: str = "input raster") -> GeopixError:
    """Map GDAL's message for a failed remote open onto the error class and fix it stands for."""
    text = str(exc)
    url = url_of(name)
    if re.search(r"\b(401|403)\b|AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|Forbidden", text):
        return RemoteAccessError(
            f"{role} {url}: access denied (HTTP 403); set or fix the credentials (AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*; AWS_NO_SIGN_REQUEST=YES "
            "for public buckets)"
        )
    if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
        return InputNotFoundError(f"{role} {url}: the bucket does not exist; check the bucket name")
    if re.search(r"Range downloading not supported|does not support range|Range.*not supported", text, re.I):
        return RemoteProtocolError(
            f"{role} {url}: the server does not support HTTP Range requests, so the raster cannot be read in "
            "parts; serve it from a server that does (any object store, nginx, Apache) or download it first"
        )
    if re.search(r"timed out|Timeout was reached|Operation too slow", text, re.I):
        return RemoteUnreachableError(
            f"{role} {url}: the server did not answer in time; check the server, or raise GDAL_HTTP_TIMEOUT "
            f"(now {os.environ.get('GDAL_HTTP_TIMEOUT', 'unset')} s)"
        )
    server = re.search(r"HTTP response code: (5\d\d)", text)
    if server:
        return RemoteUnreachableError(
            f"{role} {url}: the server failed (HTTP {server.group(1)}), which is not damage to the file; "
            "try again later or ask whoever runs the server"
        )
    if re.search(r"Couldn't connect|Could not connect|Connection refused|resolve host|Failed to connect", text, re.I):
        return RemoteUnreachableError(
            f"{role} {url}: cannot connect to the server; check the host and port (and AWS_S3_ENDPOINT / "
            "AWS_HTTPS for an S3-compatible store)"
        )
    if re.search(r"\b404\b|No such file|does not exist|NoSuchKey|not recognized as being in a supported", text):
        if "not recognized as being in a supported" in text:
            return NotARasterError(f"{role} {url} is not a raster GDAL can read; pass a GeoTIFF, COG or VRT")
        return InputNotFoundError(f"{role} {url} does not exist (HTTP 404); check the URL")
    return NotARasterError(f"{role} {url} cannot be read ({redact(text.splitlines()[0])[:200]})")


def probe_read(name: str, role: str = "input raster") -> GeopixError | None:
    """After a failed pixel read of a remote raster (GDAL says only "Read failed, got 0 bytes"):
    read its last byte once.  The error that read raises (a timeout, HTTP 5xx, 403, ...) is the
    diagnosis; ``None`` when the server answers, so the file itself is damaged or truncated."""
    url = url_of(name)
    try:
        fs, path = filesystem(url)
        size = fs.size(path)
        if size:
            fs.cat_file(path, start=size - 1, end=size)
    except Exception as exc:  # every failure of the probe is the answer sought
        return read_error(exc, url, role)
    return None


def glob(pattern: str) -> list[str]:
    """The objects matching ``pattern`` (``s3://bucket/a/*.tif``), sorted, as URLs."""
    scheme = pattern.split("://", 1)[0].lower()
    try:
        fs, path = filesystem(pattern)
        hits = sorted(fs.glob(path))
    except ImportError as exc:  # s3fs, gcsfs or adlfs is not installed
        raise InputNotFoundError(
            f"listing {redact(pattern)} needs {exc.name or 'an fsspec backend'}: pip install 'geopix[cloud]'"
        ) from exc
    except Exception as exc:
        raise read_error(exc, pattern, "input pattern") from exc
    if not hits:
        raise InputNotFoundError(f"input pattern {redact(pattern)} matches no object; check the pattern")
    return [f"{scheme}://{hit}" for hit in hits]


def check_writable(url: str) -> None:
    """Fail early (before any work) when ``url``'s bucket is missing, unreachable or read-only."""
    fs, path = filesystem(url)
    probe = join(path, ".geopix-write-test")
    try:
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except Exception as exc:
        raise explain(exc, url) from exc


def check_remote_output(url: str, names: list[str], overwrite: bool) -> None:
    """``geopix.output.check_output`` for a bucket: writable, and ``names`` not there unless ``overwrite``."""
    check_writable(url)
    existing = [n for n in names if exists(join(url, n))]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{redact(join(url, existing[0]))} already exists; pass --overwrite to replace it or choose another -o"
        )


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    try:
        return bool(fs.exists(path))
    except Exception as exc:
        raise explain(exc, url) from exc


def read_bytes(url: str) -> bytes:
    """A small object's bytes (``FileNotFoundError`` when there is none)."""
    fs, path = filesystem(url)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise explain(exc, url) from exc


def write_bytes(url: str, data: bytes) -> None:
    """A small object at ``url``."""
    fs, path = filesystem(url)
    try:
        fs.pipe_file(path, data)
    except Exception as exc:
        raise explain(exc, url) from exc


def remove(url: str) -> None:
    """Delete the object at ``url`` (none there: nothing to do)."""
    fs, path = filesystem(url)
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        pass
    except Exception as exc:
        raise explain(exc, url) from exc


def download(url: str, local: Path) -> None:
    """Copy the object at ``url`` to the local file ``local``."""
    fs, path = filesystem(url)
    try:
        fs.get_file(path, str(local))
    except Exception as exc:
        raise explain(exc, url) from exc


def upload_tree(local: Path, url: str, last: str) -> None:
    """Upload the folder ``local`` under ``url``, replacing what is there; the file named ``last``
    goes up after all others (a folder cannot appear at once: ``last`` marks it complete)."""
    fs, root = filesystem(url)
    files = sorted(p for p in local.rglob("*") if p.is_file() and p.name != last)
    try:
        if fs.exists(root):
            fs.rm(root, recursive=True)
        fs.put([str(p) for p in files], [join(root, p.relative_to(local).as_posix()) for p in files])
        if (local / last).exists():
            fs.put([str(local / last)], [join(root, last)])
    except Exception as exc:
        raise explain(exc, url) from exc


def upload_atomic(local: Path, url: str) -> None:
    """Upload a finished local file to ``url``; the object appears only once complete."""
    fs, path = filesystem(url)
    try:
        fs.put_file(str(local), path)
    except Exception as exc:
        raise explain(exc, url) from exc


def remove_tree(url: str) -> None:
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)
