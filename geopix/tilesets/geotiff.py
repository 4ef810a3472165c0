"""Any GeoTIFF/COG as a tile set, tiled on request by rio-tiler (PNG, the mask as alpha); read only.

``geopix render`` writes the GeoTIFF, so this format has no writer here.  The raster may be a
URL or ``/vsi…`` name: each tile then reads only its window (HTTP Range / ranged GETs).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from geopix.source import url_of
from geopix.tilesets.base import CACHE_DYNAMIC_S, About, TileSet, file_identity
from geopix.tilesets.tilejson import attribution_for
from geopix.zooms import auto_maxzoom, auto_minzoom, inspect_map


class GeoTIFFTileSet(TileSet):
    """Tiles at the zooms a pyramid of this raster would have, and nothing (``None``) outside them."""

    kind = "geotiff"
    cache_seconds = CACHE_DYNAMIC_S

    def __init__(self, path: str | Path, tile_size: int = 256) -> None:
        # Imported here, on the calling thread: first imports of rio_tiler racing in request threads fail.
        from rio_tiler.errors import TileOutsideBounds
        from rio_tiler.io import Reader

        self._reader, self._outside = Reader, TileOutsideBounds
        self.tile_size = tile_size
        self.format = "png"
        self.info = inspect_map(path)  # a URL becomes its GDAL name (/vsicurl/…, /vsis3/…) here
        self.path = self.info.path
        self.name = PurePosixPath(url_of(self.path).split("?", 1)[0]).name  # for labels: no credentials
        self.maxzoom = auto_maxzoom(self.info.ground_resolution_m, self.info.centre_lat, tile_size)
        self.minzoom = auto_minzoom(self.info, self.maxzoom, tile_size)

    def get(self, z: int, x: int, y: int) -> bytes | None:
        if not self.minzoom <= z <= self.maxzoom:
            return None
        with self._reader(self.path) as src:
            if not src.tile_exists(x, y, z):
                return None
            try:
                img = src.tile(
                    x,
                    y,
                    z,
                    tilesize=self.tile_size,
                    indexes=self.info.rgb,
                    resampling_method="bilinear",  # as the pyramid's max zoom
                    reproject_method="bilinear",
                )
            except self._outside:
                return None
        if not img.mask.any():
            return None
        return img.render(img_format="PNG", add_mask=True)

    @property
    def label(self) -> str:
        return self.name

    def snapshot(self) -> object:
        return file_identity(self.path) if Path(self.path).is_file() else None  # a /vsi… name: not watched

    @classmethod
    def identity_of(cls, path: str | Path) -> object:
        return file_identity(path) if Path(path).is_file() else None

    def about(self) -> About:
        return About(
            name=PurePosixPath(self.name).stem,
            bounds=self.info.bounds,
            attribution=attribution_for(self.info.tags, self.name),
            description=f"{self.name}, tiled on request",
            tile_size=self.tile_size,
        )
