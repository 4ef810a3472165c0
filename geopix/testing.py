"""Tiny synthetic GeoTIFFs, map pairs and checkpoints, for tests, benchmarks and the demo.

Everything is deterministic from a seed, so tests that use these are repeatable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _scene(size: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An aerial-like RGB scene and its map (same layout): fields, a road grid, roofs, a pond."""
    h, w = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    aerial = np.empty((h, w, 3), np.float32)
    mapimg = np.empty((h, w, 3), np.float32)
    # vegetation and soil, with smooth noise
    noise = sum(
        np.sin(xx / s + rng.uniform(0, 6)) * np.cos(yy / (s * 1.3) + rng.uniform(0, 6)) for s in (7.0, 23.0, 61.0)
    )
    veg = noise > 0.3
    aerial[...] = np.where(veg[..., None], [70, 100, 55], [125, 115, 95])
    mapimg[...] = np.where(veg[..., None], [202, 223, 170], [232, 229, 222])
    # buildings
    for _ in range(max(1, h * w // 6000)):
        r, c = rng.integers(0, h), rng.integers(0, w)
        bh, bw = rng.integers(6, 20, size=2)
        aerial[r : r + bh, c : c + bw] = [150, 140, 135]
        mapimg[r : r + bh, c : c + bw] = [242, 240, 234]
    # a pond
    cy, cx, rad = rng.integers(0, h), rng.integers(0, w), max(4, min(h, w) // 8)
    pond = (yy - cy) ** 2 + (xx - cx) ** 2 < rad**2
    aerial[pond] = [40, 60, 75]
    mapimg[pond] = [176, 207, 254]
    # a road grid
    step = max(24, min(h, w) // 5)
    roads = ((yy % step) < 4) | ((xx % step) < 4)
    aerial[roads] = [95, 95, 100]
    mapimg[roads] = [255, 255, 255]
    aerial += rng.normal(0, 6, aerial.shape)
    return np.clip(aerial, 0, 255).astype(np.uint8), mapimg.astype(np.uint8)


def synthetic_aerial(
    path: str | Path,
    size: int | tuple[int, int] = 512,
    *,
    crs: str | None = "EPSG:32633",
    res: float = 2.0,
    origin: tuple[float, float] = (500000.0, 5300000.0),
    dtype: str = "uint8",
    nodata: int | None = None,
    alpha: bool = False,
    nodata_corner: bool = False,
    seed: int = 0,
    count: int | None = None,
) -> Path:
    """Write a georeferenced aerial-like GeoTIFF and return its path.

    ``nodata_corner`` fills the top-left quarter with ``nodata`` (or transparent alpha).
    """
    import rasterio
    from rasterio.transform import from_origin

    h, w = (size, size) if isinstance(size, int) else size
    rgb, _ = _scene((h, w), seed)
    data = rgb.transpose(2, 0, 1)
    if dtype == "uint16":
        data = data.astype(np.uint16) * 40 + 300
    elif dtype != "uint8":
        data = data.astype(dtype)
    bands = [data[0], data[1], data[2]]
    if nodata_corner and not alpha and nodata is not None:
        for b in bands:
            b[: h // 2, : w // 2] = nodata
    if alpha:
        a = np.full((h, w), 255 if dtype == "uint8" else 65535, dtype=data.dtype)
        if nodata_corner:
            a[: h // 2, : w // 2] = 0
        bands.append(a)
    if count is not None:
        while len(bands) < count:
            bands.append(bands[0])
        bands = bands[:count]
    path = Path(path)
    profile = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "count": len(bands),
        "dtype": str(data.dtype),
        "crs": crs,
        "transform": from_origin(origin[0], origin[1], res, res),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "nodata": nodata,
    }
    if h < 256 or w < 256:
        profile.pop("blockxsize"), profile.pop("blockysize")
        profile["tiled"] = False
    if alpha:
        profile |= {"photometric": "RGB", "alpha": "YES"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.stack(bands))
    return path


def synthetic_maps_dataset(root: str | Path, n_train: int = 8, n_val: int = 4, size: int = 256, seed: int = 0) -> Path:
    """A Berkeley-maps-shaped dataset: ``root/{train,val}/N.jpg`` holding aerial|map side by side."""
    from PIL import Image

    root = Path(root)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(1, n + 1):
            a, b = _scene((size, size), seed * 1000 + i + (500 if split == "val" else 0))
            Image.fromarray(np.concatenate([a, b], axis=1)).save(root / split / f"{i}.jpg", quality=95)
    return root


def random_checkpoint(
    path: str | Path,
    *,
    ngf: int = 4,
    norm: str = "batch",
    head: str = "tanh",
    ground_resolution_m: float = 2.0,
    official: bool = False,
    seed: int = 0,
    input_stats: tuple[tuple[float, float], ...] = (),
) -> Path:
    """A randomly initialised unet_256 checkpoint: ours (safetensors) or the authors' ``.pth`` layout."""
    import torch

    from geopix.models.checkpoint import ModelSpec, save_checkpoint
    from geopix.models.generator import init_weights

    torch.manual_seed(seed)
    palette = ((232, 229, 222), (255, 255, 255), (202, 223, 170), (176, 207, 254)) if head == "palette" else ()
    spec = ModelSpec(
        ngf=ngf,
        norm=norm,
        head=head,
        palette=palette,
        output_nc=len(palette) or 3,
        ground_resolution_m=ground_resolution_m,
        input_stats=input_stats,
    )
    net = spec.build()
    init_weights(net)
    # Non-trivial running statistics, as a trained BatchNorm would have.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = Path(path)
    if official:
        state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
        torch.save(state, path)
        return path
    return save_checkpoint(net, spec, path)


#: Where ``versioned_tileset`` puts its tiles (a few km² in Austria), and at which zooms.
VERSIONED_BOUNDS = (15.0, 47.84, 15.02, 47.86)
VERSIONED_ZOOMS = (14, 16)


def versioned_tileset(dst: str | Path, kind: str, version: int) -> dict[tuple[int, int, int], bytes]:
    """A tile set of ``kind`` (``dir``, ``pmtiles``, ``mbtiles``) at ``dst`` (which must not exist) named
    ``v{version}``, each tile's pixels drawn from its address and the version; returns ``{(z, x, y): bytes}``.

    Two versions share no tile bytes, so whoever reads one can tell which version answered.
    """
    import mercantile

    from geopix.tilesets import Tile, folder, mbtiles, pmtiles
    from geopix.tilesets.codec import encode_tile
    from geopix.tilesets.tilejson import make_tilejson

    tiles = []
    for t in mercantile.tiles(*VERSIONED_BOUNDS, list(range(VERSIONED_ZOOMS[0], VERSIONED_ZOOMS[1] + 1))):
        # noise (~16 KB a tile: an archive spans many memory pages), seeded by the address and version
        rgba = np.random.default_rng((version, t.z, t.x, t.y)).integers(0, 256, (4, 64, 64), dtype=np.uint8)
        rgba[3] = 255
        rgba[3, 0, 0] = version % 255  # not opaque: the PNG keeps its alpha
        tiles.append(Tile(t.z, t.x, t.y, encode_tile(rgba, "png")))
    from pmtiles.tile import zxy_to_tileid

    tiles.sort(key=lambda t: zxy_to_tileid(t.z, t.x, t.y))
    tj = make_tilejson(
        name=f"v{version}",
        tiles_url="{z}/{x}/{y}.png",
        bounds=VERSIONED_BOUNDS,
        minzoom=VERSIONED_ZOOMS[0],
        maxzoom=VERSIONED_ZOOMS[1],
        attribution=f"version {version}",
    )
    {"dir": folder, "pmtiles": pmtiles, "mbtiles": mbtiles}[kind].write(dst, iter(tiles), tj)
    return {(t.z, t.x, t.y): t.data for t in tiles}
