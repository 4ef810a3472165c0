"""Map folders of plain images (PNG, JPEG, ...) with the render's tiling and blending.

No georeferencing, no Dask: each image is tiled on its own grid, predicted in batches and
blended exactly as a render block is, in this process.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from geopix.blend import Accumulator, to_uint8
from geopix.config import InferConfig, TileConfig
from geopix.data.pairs import IMAGE_SUFFIXES
from geopix.errors import InputNotFoundError, NotARasterError
from geopix.models.checkpoint import LoadedModel
from geopix.models.registry import load_model
from geopix.output import claim_output, refuse_input, written_whole
from geopix.plan import TileGrid, Window, check_tiling
from geopix.read import to_unit


def predict(
    in_dir: str | Path,
    out_dir: str | Path,
    model: str = "sat2map",
    tiles: TileConfig | None = None,
    infer: InferConfig | None = None,
    overwrite: bool = False,
    progress: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Map every image in ``in_dir`` with the render's tiling and blending; writes ``OUT/<stem>.png``."""
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    tiles = tiles or TileConfig()
    infer = infer or InferConfig()
    if not in_dir.is_dir():
        raise InputNotFoundError(f"input folder {in_dir} does not exist; pass a folder of PNG/JPEG images")
    files = sorted(p for p in in_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {in_dir}")
    loaded = load_model(model)
    check_tiling(tiles.tile_size, tiles.overlap, loaded.spec.multiple, loaded.spec.num_downs)
    refuse_input([out_dir / f"{p.stem}.png" for p in files], files, "OUT_DIR")
    with claim_output(out_dir, [f"{p.stem}.png" for p in files], overwrite, option="OUT_DIR"):
        return _predict_all(files, out_dir, loaded, tiles, infer, progress)


def _predict_all(
    files: list[Path],
    out_dir: Path,
    loaded: LoadedModel,
    tiles: TileConfig,
    infer: InferConfig,
    progress: Callable[[Path], None] | None,
) -> list[Path]:
    """Map each of ``files`` into ``out_dir`` (under the folder's lock)."""
    from PIL import Image, UnidentifiedImageError

    from geopix.infer import Predictor

    predictor = Predictor.from_loaded(loaded, infer.device, infer.channels_last, infer.precision)
    written = []
    for path in files:
        try:
            with Image.open(path) as im:
                img = np.asarray(im.convert("RGB"))
        except Image.DecompressionBombError as exc:
            raise NotARasterError(
                f"{path} has more pixels than is safe to decode ({exc}); it may be a decompression bomb: "
                "if the image is real, cut it into parts, or render it as a GeoTIFF with geopix render"
            ) from None
        except (UnidentifiedImageError, OSError) as exc:
            raise NotARasterError(f"{path} is not an image PIL can read ({exc})") from exc
        h, w = img.shape[:2]
        grid = TileGrid(h, w, tiles.tile_size, tiles.overlap)
        region = Window(0, 0, h, w)
        x = to_unit(img.transpose(2, 0, 1))
        read = grid.window(0, 0).union(grid.window(grid.rows - 1, grid.cols - 1))
        pads = ((0, 0), (-read.row, read.row_stop - h), (-read.col, read.col_stop - w))
        x = np.pad(x, pads, mode="reflect" if min(h, w) > 1 else "edge")
        acc = Accumulator(region, 3, tiles.tile_size, tiles.overlap)
        order = list(grid)
        bs = predictor.tiles_per_call(infer.batch_size)
        for k in range(0, len(order), bs):
            chunk = order[k : k + bs]
            batch = np.zeros((bs, 3, tiles.tile_size, tiles.tile_size), np.float32)
            for n, ij in enumerate(chunk):
                batch[n] = x[(slice(None), *grid.window(*ij).relative_to(read))]
            pred = predictor.predict(batch)
            for n, ij in enumerate(chunk):
                acc.add(grid.window(*ij), pred[n])
        values, _ = acc.result()
        dst = out_dir / f"{path.stem}.png"
        with written_whole(dst) as tmp:
            Image.fromarray(to_uint8(values).transpose(1, 2, 0)).save(tmp, format="PNG")
        written.append(dst)
        if progress:
            progress(dst)
    return written
