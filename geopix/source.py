"""What the user typed as an input → one name GDAL can open, carried as a string.

Users name imagery as a path, a URL (``https://…``, ``s3://…``, ``gs://…``, ``az://…``), a
GDAL ``/vsi…`` path, a VRT, a STAC Item, or several files / a glob to mosaic (a local one, or
an object-store one such as ``s3://bucket/scenes/*.tif``, listed through fsspec).  ``resolve_input``
turns any of these into a single GDAL dataset name: remote schemes map onto GDAL's virtual
file systems (``/vsicurl/``, ``/vsis3/``, ``/vsigs/``, ``/vsiaz/``), a STAC Item onto its RGB
asset, and several files onto an in-memory VRT (its XML *is* the name), so every Dask worker
opens the source itself and no file has to be shared.  It is a ``str``, never a ``Path``: a
``Path`` squashes ``https://`` into ``https:/``.

``gdal_name``, ``is_remote`` and ``redact`` are pure; STAC Items and mosaics read metadata
(a JSON document; each file's header), never pixels.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from xml.sax.saxutils import escape

from geopix.errors import InputNotFoundError, MosaicError, StacError

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
_GLOB_CHARS = re.compile(r"[*?\[]")


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


# ---- STAC ------------------------------------------------------------------------------------
#: Asset keys that hold a true-colour image, in order of preference.
RGB_ASSET_KEYS = ("visual", "rgb", "image", "ortho", "orthophoto", "data")


def _read_text(href: str) -> str:
    """A small text document from a path or URL (a STAC Item); for remote ones through fsspec."""
    if "://" not in href:
        return Path(href).expanduser().read_text()
    scheme = href.split("://", 1)[0].lower()
    if scheme in ("http", "https"):
        import urllib.request

        with urllib.request.urlopen(href, timeout=float(os.environ.get("GDAL_HTTP_TIMEOUT", "30"))) as resp:
            return resp.read().decode()
    import fsspec

    from geopix.remote import storage_options

    with fsspec.open(href, "rt", **storage_options(href)) as f:
        return f.read()


def _looks_like_stac(text: str) -> bool:
    base = text.split("?", 1)[0].lower()
    return base.endswith(".json") or base.endswith(".geojson")


def stac_asset_href(item_href: str, asset: str | None = None) -> str:
    """The href of a STAC Item's RGB asset (``asset`` by key if given), made absolute."""
    import pystac

    where = redact(item_href)
    try:
        doc = json.loads(_read_text(item_href))
    except FileNotFoundError as exc:
        raise InputNotFoundError(f"STAC item {where} does not exist; check the path or URL") from exc
    except OSError as exc:
        raise InputNotFoundError(f"cannot read STAC item {where} ({redact(str(exc))}); check the URL") from exc
    except ValueError as exc:
        raise StacError(f"{where} is not JSON ({exc}); pass a STAC Item (.json) or a raster") from exc
    if doc.get("type") != "Feature" or "assets" not in doc:
        raise StacError(
            f"{where} is not a STAC Item (type {doc.get('type')!r}); pass one Item, not a Collection or Catalog"
        )
    try:
        item = pystac.Item.from_dict(doc, href=item_href, migrate=True)
    except Exception as exc:  # pystac raises several kinds for malformed items
        raise StacError(f"{where} is not a valid STAC Item ({exc})") from exc
    keys = list(item.assets)
    if asset is not None:
        if asset not in item.assets:
            raise StacError(f"STAC item {where} has no asset {asset!r}; its assets: {', '.join(keys) or 'none'}")
        chosen = item.assets[asset]
    else:
        chosen = _rgb_asset(item)
        if chosen is None:
            raise StacError(
                f"STAC item {where} has no RGB/visual asset (assets: {', '.join(keys) or 'none'}); "
                "pick one with --asset NAME"
            )
    href = chosen.get_absolute_href() or chosen.href
    return href


def _rgb_asset(item) -> object | None:
    for key in RGB_ASSET_KEYS:
        if key in item.assets:
            return item.assets[key]
    for a in item.assets.values():
        if "visual" in (a.roles or []):
            return a
    for a in item.assets.values():
        bands = a.extra_fields.get("eo:bands") or a.extra_fields.get("bands") or []
        names = {b.get("common_name") or b.get("eo:common_name") for b in bands if isinstance(b, dict)}
        if {"red", "green", "blue"} <= names:
            return a
    return None


# ---- mosaics ---------------------------------------------------------------------------------
#: Object stores whose globs are expanded by listing (fsspec).  Not http(s): a URL's ``?`` starts
#: its query, and a web server has no listing to expand a pattern against.
GLOB_SCHEMES = ("s3", "gs", "gcs", "az", "abfs")


def expand(inputs: Sequence[str]) -> list[str]:
    """Globs expanded, each sorted: local ones by the filesystem, object-store ones
    (``s3://bucket/scenes/*.tif``) by listing the bucket; everything else as typed."""
    out: list[str] = []
    for text in inputs:
        text = str(text)
        scheme = text.split("://", 1)[0].lower() if "://" in text else ""
        local_pattern = not scheme and not text.startswith("/vsi") and _GLOB_CHARS.search(text)
        if local_pattern and not os.path.exists(os.path.expanduser(text)):  # a file named "a[1].tif" is a file
            hits = sorted(glob.glob(os.path.expanduser(text)))
            if not hits:
                raise InputNotFoundError(f"input pattern {text} matches no file; check the pattern")
            out.extend(hits)
        elif scheme in GLOB_SCHEMES and _GLOB_CHARS.search(text.split("://", 1)[1]):
            out.extend(_remote_glob(text, scheme))
        else:
            out.append(text)
    return out


def _remote_glob(pattern: str, scheme: str) -> list[str]:
    """The objects matching ``pattern`` (``s3://bucket/a/*.tif``), sorted, as URLs."""
    from geopix.remote import filesystem, read_error

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


def mosaic_vrt(names: Sequence[str]) -> str:
    """An inline VRT (XML text, itself a GDAL dataset name) mosaicking ``names``.

    All must share CRS, band count and type; the grid is the first file's pixel size over the
    union of extents.  Where files overlap, the later one wins (GDAL's source order), as with
    ``gdalbuildvrt``.  Only headers are read.
    """
    from rasterio.enums import MaskFlags

    from geopix.read import open_raster

    metas = []
    for name in names:
        with open_raster(name, "mosaic input") as src:
            masked = MaskFlags.per_dataset in src.mask_flag_enums[0]
            metas.append(
                (
                    name,
                    src.crs,
                    src.transform,
                    src.width,
                    src.height,
                    src.count,
                    src.dtypes,
                    list(src.colorinterp),
                    src.nodata,
                    masked,
                )
            )
    first = metas[0]
    for name, crs, *_ in metas[1:]:
        if crs != first[1]:
            raise MosaicError(
                f"mosaic inputs are in different CRSs: {url_of(first[0])} is {first[1]}, {url_of(name)} is {crs}; "
                "reproject them to one CRS first (gdalwarp -t_srs EPSG:XXXX)"
            )
    for name, _, tr, _, _, count, dtypes, *_ in metas[1:]:
        if count != first[5] or dtypes != first[6]:
            raise MosaicError(
                f"mosaic inputs differ in bands: {url_of(first[0])} has {first[5]} × {first[6][0]}, "
                f"{url_of(name)} has {count} × {dtypes[0]}; give files of the same band layout"
            )
        if tr.b or tr.d:
            raise MosaicError(f"{url_of(name)} is rotated; mosaics need north-up rasters (gdalwarp it first)")
    res_x, res_y = first[2].a, first[2].e
    lefts = [m[2].c for m in metas]
    tops = [m[2].f for m in metas]
    rights = [m[2].c + m[2].a * m[3] for m in metas]
    bottoms = [m[2].f + m[2].e * m[4] for m in metas]
    left, top, right, bottom = min(lefts), max(tops), max(rights), min(bottoms)
    width, height = round((right - left) / res_x), round((bottom - top) / res_y)
    crs_wkt = first[1].to_wkt() if first[1] else ""
    lines = [
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
        f"<SRS>{escape(crs_wkt)}</SRS>" if crs_wkt else "",
        f"<GeoTransform>{left!r}, {res_x!r}, 0, {top!r}, 0, {res_y!r}</GeoTransform>",
    ]

    def sources(band: str) -> list[str]:
        out = []
        for name, _, tr, w, h, *_ in metas:
            x_off = (tr.c - left) / res_x
            y_off = (tr.f - top) / res_y
            x_size, y_size = w * tr.a / res_x, h * tr.e / res_y
            out.append(
                f'<SimpleSource><SourceFilename relativeToVRT="0">{escape(name)}</SourceFilename>'
                f"<SourceBand>{band}</SourceBand>"
                f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
                f'<DstRect xOff="{x_off!r}" yOff="{y_off!r}" xSize="{x_size!r}" ySize="{y_size!r}"/>'
                "</SimpleSource>"
            )
        return out

    dtype = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "float32": "Float32"}.get(first[6][0], "Byte")
    for b in range(1, first[5] + 1):
        interp = first[7][b - 1].name.capitalize()
        nodata = f"<NoDataValue>{first[8]!r}</NoDataValue>" if first[8] is not None else ""
        lines.append(
            f'<VRTRasterBand dataType="{dtype}" band="{b}"><ColorInterp>{interp}</ColorInterp>{nodata}'
            + "".join(sources(str(b)))
            + "</VRTRasterBand>"
        )
    if any(m[9] for m in metas):  # internal masks: mosaic them too, so gaps stay transparent
        lines.append(
            '<MaskBand><VRTRasterBand dataType="Byte">' + "".join(sources("mask,1")) + "</VRTRasterBand></MaskBand>"
        )
    lines.append("</VRTDataset>")
    return "".join(line for line in lines if line)


def resolve_input(inputs: str | Sequence[str], asset: str | None = None) -> str:
    """The one GDAL name for what the user typed: a path, URL, STAC Item, or several files/a glob."""
    items = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    if not items:
        raise InputNotFoundError("no input given; pass a raster path, URL, STAC Item or several files")
    items = [str(i) for i in items]
    expanded = expand(items) if len(items) == 1 and not items[0].startswith(VRT_PREFIX) else items
    names = []
    for text in expanded:
        if _looks_like_stac(text) and not text.startswith("/vsi"):
            names.append(gdal_name(stac_asset_href(text, asset)))
        else:
            names.append(gdal_name(text))
    if asset is not None and not any(_looks_like_stac(t) for t in expanded):
        raise StacError(f"--asset {asset} applies to STAC Items only; the input is not a .json Item")
    if len(names) == 1:
        return names[0]
    return mosaic_vrt(names)
