"""Write labelled training pairs (``A/``, ``B/``, ``M/`` and ``dataset.json``) that appear only whole.

Both label sources (vector layers, class rasters) end the same way: an aerial and its
:class:`~geopix.data.rasterize.Labels` on the model's work grid, cut into tiles.  Each tile
writes ``A/NAME.png`` (aerial), ``B/NAME.png`` (the style's drawing of the labels) and
``M/NAME.png`` (the allowed-class bit mask; 0 = unknown).  Tiles reaching past the raster are
reflect-padded (as render pads) and unknown there; a tile with no known pixel is skipped.
Everything goes to ``OUT.partial`` and is renamed to ``OUT`` at the end, so a failure or
Ctrl-C never leaves a half-written dataset under the final name.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from geopix import style
from geopix.data.rasterize import ALL_CLASSES, Labels
from geopix.errors import OutputExistsError
from geopix.output import hold_lock, refuse_foreign

MASK_DIR = "M"
MANIFEST = "dataset.json"


def tile_offsets(n: int, tile: int, stride: int) -> list[int]:
    """Tile origins covering 0..n: every ``stride``, the last one flush with the end."""
    if n <= tile:
        return [0]
    out = list(range(0, n - tile + 1, stride))
    if out[-1] != n - tile:
        out.append(n - tile)
    return out


def _pad(arr: np.ndarray, tile: int, mode: str) -> np.ndarray:
    ph, pw = tile - arr.shape[0], tile - arr.shape[1]
    if ph <= 0 and pw <= 0:
        return arr
    pads = [(0, max(ph, 0)), (0, max(pw, 0))] + [(0, 0)] * (arr.ndim - 2)
    if mode == "reflect" and min(arr.shape[:2]) > 1:
        return np.pad(arr, pads, mode="reflect")
    return np.pad(arr, pads, mode="edge" if mode == "reflect" else "constant")


class PairWriter:
    """Collects tiles into ``OUT.partial``; :meth:`publish` renames it to ``OUT``.

    Use as a context manager: leaving it by an exception removes the partial folder.
    """

    def __init__(self, out: str | Path, *, tile: int, stride: int, overwrite: bool) -> None:
        self.out = Path(out)
        refuse_foreign(self.out, _is_dataset, "a dataset", "folder")
        if self.out.exists() and not overwrite:
            raise OutputExistsError(f"{self.out} exists; pass --overwrite or choose another folder")
        self.tile, self.stride = tile, stride
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.pairs = 0
        self.known = 0
        self.total = 0
        self.counts = np.zeros(len(style.CLASSES), np.int64)
        self._stems: set[str] = set()
        self._held = contextlib.ExitStack()  # the output locks, from __enter__ to __exit__

    def __enter__(self) -> PairWriter:
        # the same lock as every command that writes: the folder that gets OUT and OUT.partial, and OUT
        with contextlib.ExitStack() as held:
            held.enter_context(hold_lock(self.out.parent, "folder"))
            if self.out.is_dir():
                held.enter_context(hold_lock(self.out, "folder"))
            refuse_foreign(self.out, _is_dataset, "a dataset", "folder")
            self._held = held.pop_all()
        shutil.rmtree(self.partial, ignore_errors=True)
        for d in ("A", "B", MASK_DIR):
            (self.partial / d).mkdir(parents=True)
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            shutil.rmtree(self.partial, ignore_errors=True)
        self._held.close()

    def stem_for(self, raster: str | Path) -> str:
        """A tile-name prefix unique in this dataset: the file's stem, or ``folder_stem`` on a clash."""
        path = Path(raster)
        stem = path.stem if path.stem not in self._stems else f"{path.parent.name}_{path.stem}"
        self._stems.add(stem)
        return stem

    def add_raster(self, stem: str, aerial: np.ndarray, labels: Labels) -> int:
        """Cut one aerial ``(H, W, 3)`` uint8 and its labels into tiles; returns the pairs written."""
        before = self.pairs
        for top in tile_offsets(aerial.shape[0], self.tile, self.stride):
            for left in tile_offsets(aerial.shape[1], self.tile, self.stride):
                self._add_tile(f"{stem}_{top:06d}_{left:06d}", aerial, labels, top, left)
        return self.pairs - before

    def _add_tile(self, name: str, a: np.ndarray, labels: Labels, top: int, left: int) -> None:
        tile = self.tile
        sl = (slice(top, top + tile), slice(left, left + tile))
        allowed = _pad(labels.allowed[sl], tile, "constant")
        n_known = int(((allowed != 0) & (allowed != ALL_CLASSES)).sum())
        if n_known == 0:
            return
        Image.fromarray(_pad(a[sl], tile, "reflect")).save(self.partial / "A" / f"{name}.png")
        Image.fromarray(style.paint(_pad(labels.top[sl], tile, "constant"))).save(self.partial / "B" / f"{name}.png")
        Image.fromarray(allowed).save(self.partial / MASK_DIR / f"{name}.png")
        self.pairs += 1
        self.known += n_known
        self.total += tile * tile
        self.counts += np.bincount(labels.top[sl][labels.known()[sl]], minlength=len(style.CLASSES))

    @property
    def known_share(self) -> float:
        return self.known / self.total if self.total else 0.0

    def class_pixels(self) -> dict[str, int]:
        return {c.name: int(n) for c, n in zip(style.CLASSES, self.counts, strict=True)}

    def publish(self, manifest: dict[str, object]) -> Path:
        """Write ``dataset.json`` and move the finished dataset to its final name."""
        (self.partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if self.out.exists():
            shutil.rmtree(self.out)
        self.partial.rename(self.out)
        return self.out


def _is_dataset(path: Path) -> bool:
    """A folder ``PairWriter`` wrote: its manifest is there."""
    return (path / MANIFEST).is_file()
