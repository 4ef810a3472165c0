"""Names for what the user typed: one input as the GDAL dataset name every worker opens (pure).

Users name imagery as a path, a URL (``https://…``, ``s3://…``, ``gs://…``, ``az://…``), a
GDAL ``/vsi…`` path or a VRT.  ``gdal_name`` maps remote schemes onto GDAL's virtual file
systems (``/vsicurl/``, ``/vsis3/``, ``/vsigs/``, ``/vsiaz/``), ``url_of`` maps them back for
messages and ``redact`` keeps credentials out of both.  A name is a ``str``, never a ``Path``:
a ``Path`` squashes ``https://`` into ``https:/``.  This is the bottom of the I/O layer:
``remote`` (where bytes live) → ``read`` (opening rasters) → ``stac`` / ``mosaic`` (STAC Items,
globs and several files resolved to one name) build on it; nothing here touches a file.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

from geopix.errors import InputNotFoundError

#: URL scheme → GDAL virtual file system.  Credentials and endpoints come from GDAL's usual
#: environment variables (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*).
SCHEMES = {
    "http": "/vsicurl/",
    "https": "/vsicurl/",
    "s3": "/vsis3/",
    "gs": "/vsigs/",
    "gcs": "/vsigs/",
    "az": "/vsiaz/",
    "azure": "/vsiaz/",
}
VRT_PREFIX = "<VRTDataset"


def gdal_name(text: str) -> str:
    """The GDAL dataset name for one user-typed input (pure: no file is touched).

    ``/vsi…`` paths and inline VRT XML pass unchanged; URLs map onto GDAL's virtual file
    systems (``https://h/a.tif`` → ``/vsicurl/https://h/a.tif``, ``s3://b/k`` → ``/vsis3/b/k``);
    anything else is a local path, made absolute so a worker in another folder opens the same file.
    """
    text = str(text).strip()
    if text.startswith("/vsi") or text.startswith(VRT_PREFIX):
        return text
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in ("http", "https"):
        return SCHEMES[scheme] + text
    if scheme in SCHEMES:
        return SCHEMES[scheme] + text.split("://", 1)[1]
    if scheme:
        raise InputNotFoundError(
            f"input {redact(text)}: unknown URL scheme {scheme!r}; use a path, http(s)://, s3://, gs://, az:// "
            "or a GDAL /vsi… name"
        )
    return os.path.abspath(os.path.expanduser(text))


def is_remote(name: str) -> bool:
    """True for names GDAL reads over the network (also a VRT that mosaics remote files)."""
    if name.startswith(VRT_PREFIX):
        return any(prefix in name for prefix in set(SCHEMES.values()))
    return name.startswith(tuple(set(SCHEMES.values()))) or "://" in name


def url_of(name: str) -> str:
    """The URL a user would recognise for a GDAL name (``/vsis3/b/k`` → ``s3://b/k``), redacted."""
    if name.startswith("/vsicurl/"):
        return redact(name[len("/vsicurl/") :])
    for scheme in ("s3", "gs", "az"):
        prefix = SCHEMES[scheme]
        if name.startswith(prefix):
            return f"{scheme}://{name[len(prefix) :]}"
    if name.startswith(VRT_PREFIX):
        return "a mosaic VRT"
    return redact(name)


_SECRET_QUERY = re.compile(r"(?i)(signature|credential|token|key|sig|secret|password|sas)")


def redact(text: str) -> str:
    """``text`` with URL user-info and secret-looking query values replaced by ``***``.

    Messages and logs must never show credentials (``https://user:pw@host``, a pre-signed
    ``?X-Amz-Signature=…``, an Azure SAS ``?sig=…``).
    """

    def one(match: re.Match) -> str:
        url = match.group(0)
        try:
            parts = urlsplit(url)
        except ValueError:
            return url
        netloc = parts.netloc
        query = "&".join(
            f"{k}=***" if _SECRET_QUERY.search(k) else f"{k}={v}" if sep else k
            for k, sep, v in (q.partition("=") for q in parts.query.split("&") if q)
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))

    # user-info first, up to the last "@" (a password may hold an unescaped "/" or ":")
    text = re.sub(r"(://)[^\s@'\"<>]*@", r"\1***@", text)
    text = re.sub(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+", one, text)
    return re.sub(r"(?i)(<AWSAccessKeyId>)[^<]*(<)", r"\1***\2", text)
