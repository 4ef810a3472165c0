"""What the user typed as an input → one GDAL dataset name: globs expanded, STAC Items resolved
to their asset, several files mosaicked into an inline VRT.

``resolve_input`` is the top of the I/O layer (``source`` → ``remote`` → ``read`` → here): a
local or object-store glob (``s3://bucket/scenes/*.tif``, listed through fsspec) becomes its
files, a STAC Item its RGB asset (``stac``), several files an in-memory VRT (its XML *is* the
name, read from each file's header), so every Dask worker opens the source itself and no file
has to be shared.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from xml.sax.saxutils import escape

from rasterio.enums import MaskFlags

from geopix import remote
from geopix.errors import InputNotFoundError, MosaicError, StacError
from geopix.read import open_raster
from geopix.source import VRT_PREFIX, gdal_name, url_of
from geopix.stac import looks_like_stac, stac_asset_href

_GLOB_CHARS = re.compile(r"[*?\[]")
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
            out.extend(remote.glob(text))
        else:
            out.append(text)
    return out


def mosaic_vrt(names: Sequence[str]) -> str:
    """An inline VRT (XML text, itself a GDAL dataset name) mosaicking ``names``.

    All must share CRS, band count and type; the grid is the first file's pixel size over the
    union of extents.  Where files overlap, the later one wins (GDAL's source order), as with
    ``gdalbuildvrt``.  Only headers are read.
    """
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
        if looks_like_stac(text) and not text.startswith("/vsi"):
            names.append(gdal_name(stac_asset_href(text, asset)))
        else:
            names.append(gdal_name(text))
    if asset is not None and not any(looks_like_stac(t) for t in expanded):
        raise StacError(f"--asset {asset} applies to STAC Items only; the input is not a .json Item")
    if len(names) == 1:
        return names[0]
    return mosaic_vrt(names)
