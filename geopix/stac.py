"""A STAC Item the user typed → the href of its RGB asset (reads one JSON document, never pixels)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from geopix.errors import InputNotFoundError, StacError
from geopix.remote import storage_options
from geopix.source import redact

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

    with fsspec.open(href, "rt", **storage_options(href)) as f:
        return f.read()


def looks_like_stac(text: str) -> bool:
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
