"""Tile sets: one module per on-disk format, each reading and writing it behind one interface.

* ``folder``  — ``{z}/{x}/{y}.ext`` files beside a ``tilejson.json``;
* ``pmtiles`` — a PMTiles v3 archive, read through byte ranges (:class:`ByteSource`);
* ``mbtiles`` — an MBTiles 1.3 SQLite file (TMS rows);
* ``geotiff`` — any GeoTIFF/COG, tiled on request (read only: ``geopix render`` writes it);

plus ``tilejson`` (the one TileJSON 3.0.0 builder) and ``codec`` (tile image bytes).
A ``.pmtiles`` archive or a GeoTIFF may also be a URL (``https://``, ``s3://``, ``gs://``, ``az://``).
Readers are :class:`TileSet` objects; writers are each module's ``write(dst, tiles, tilejson)``
taking tiles in PMTiles order (:func:`geopix.tilesets.folder.iter_tiles` yields them).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from geopix.errors import InputNotFoundError, TilesetError
from geopix.source import gdal_name, redact
from geopix.tilesets.base import ByteSource, FileByteSource, Tile, TileSet, URLByteSource
from geopix.tilesets.folder import FolderTileSet
from geopix.tilesets.mbtiles import MBTilesTileSet
from geopix.tilesets.pmtiles import PMTilesTileSet

GEOTIFF_SUFFIXES = (".tif", ".tiff", ".vrt")


def output_kind(path: Path) -> str:
    """Which format a pyramid output path asks for: ``dir``, ``pmtiles`` or ``mbtiles``."""
    return {".pmtiles": "pmtiles", ".mbtiles": "mbtiles"}.get(Path(path).suffix.lower(), "dir")


def open_tileset(path: str | Path) -> TileSet:
    """The reader for ``path``, chosen from it: folder, ``.pmtiles``, ``.mbtiles`` or GeoTIFF
    (a ``.pmtiles`` or GeoTIFF may be a URL or a GDAL ``/vsi…`` name)."""
    if isinstance(path, str) and ("://" in path or path.startswith("/vsi")):
        return _open_remote(path)
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{path} does not exist; pass a tile folder, .pmtiles, .mbtiles or GeoTIFF")
    if path.is_dir():
        return FolderTileSet(path)
    suffix = path.suffix.lower()
    if suffix == ".pmtiles":
        return PMTilesTileSet(FileByteSource(path))
    if suffix == ".mbtiles":
        return MBTilesTileSet(path)
    if suffix in GEOTIFF_SUFFIXES:
        from geopix.tilesets.geotiff import GeoTIFFTileSet

        return GeoTIFFTileSet(path)
    raise TilesetError(f"cannot read {path} as tiles: expected a tile folder, .pmtiles, .mbtiles, .tif or .tiff")


def _open_remote(url: str) -> TileSet:
    name = gdal_name(url)  # refuses unknown schemes
    suffix = PurePosixPath(url.split("?", 1)[0]).suffix.lower()
    if suffix == ".pmtiles" and not url.startswith("/vsi"):
        return PMTilesTileSet(URLByteSource(url), name=redact(url))
    if suffix in GEOTIFF_SUFFIXES or url.startswith("/vsi"):
        from geopix.tilesets.geotiff import GeoTIFFTileSet

        return GeoTIFFTileSet(name)
    if suffix == ".mbtiles":
        raise TilesetError(
            f"{redact(url)}: an MBTiles file is an SQLite database and cannot be read over the network; "
            "download it first, or publish a .pmtiles archive"
        )
    raise TilesetError(
        f"cannot serve {redact(url)}: over the network geopix reads .pmtiles archives and GeoTIFFs/COGs "
        "(a remote tile folder is served as it is by any web server)"
    )


__all__ = ["ByteSource", "FileByteSource", "Tile", "TileSet", "URLByteSource", "open_tileset", "output_kind"]
