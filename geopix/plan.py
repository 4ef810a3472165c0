"""Pure planning: tile grid, blend windows, output blocks.  No I/O, torch or Dask.

Three pixel grids meet here:

* the **source** grid of the input raster;
* the **work** grid the model runs on: the same extent at the model's ground resolution
  (identical to the source grid when resampling is off);
* the **output** grid, which is the source grid (default) or the work grid.

Tiles are laid on the *whole* work grid once, from its origin, so every output block
sees exactly the same tiles, in the same order, whatever the block size.  That is what
makes the result independent of chunk size, worker count and task order.  Tiles that
reach past the raster edge read reflected pixels, so edges are never dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from geopix.errors import TilingError


@dataclass(frozen=True, slots=True, order=True)
class Window:
    """A half-open pixel rectangle ``[row, row+height) × [col, col+width)``; may extend past the raster."""

    row: int
    col: int
    height: int
    width: int

    @property
    def row_stop(self) -> int:
        return self.row + self.height

    @property
    def col_stop(self) -> int:
        return self.col + self.width

    @property
    def size(self) -> int:
        return self.height * self.width

    def intersection(self, other: Window) -> Window | None:
        r0, c0 = max(self.row, other.row), max(self.col, other.col)
        r1, c1 = min(self.row_stop, other.row_stop), min(self.col_stop, other.col_stop)
        if r1 <= r0 or c1 <= c0:
            return None
        return Window(r0, c0, r1 - r0, c1 - c0)

    def union(self, other: Window) -> Window:
        r0, c0 = min(self.row, other.row), min(self.col, other.col)
        r1, c1 = max(self.row_stop, other.row_stop), max(self.col_stop, other.col_stop)
        return Window(r0, c0, r1 - r0, c1 - c0)

    def relative_to(self, outer: Window) -> tuple[slice, slice]:
        """Slices selecting this window inside an array that covers ``outer``."""
        return (
            slice(self.row - outer.row, self.row_stop - outer.row),
            slice(self.col - outer.col, self.col_stop - outer.col),
        )


def _axis_tiles(length: int, tile: int, overlap: int) -> int:
    """Number of tiles along an axis: enough cores (width ``stride``) to cover ``length``."""
    return max(1, math.ceil(length / (tile - overlap)))


@dataclass(frozen=True, slots=True)
class TileGrid:
    """Model windows over a ``height × width`` grid.

    Tile ``(i, j)`` owns the core ``[i*s, (i+1)*s)`` (``s = tile - overlap``) and reads the
    window that starts ``overlap // 2`` before it, so neighbours overlap by ``overlap``.
    """

    height: int
    width: int
    tile: int = 256
    overlap: int = 32

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise TilingError(f"cannot tile an empty {self.height}×{self.width} raster")
        if self.tile < 1 or self.overlap < 0 or 2 * self.overlap >= self.tile:
            raise TilingError(
                f"tile {self.tile} with overlap {self.overlap} cannot work: overlap must be >= 0 and < tile/2"
            )

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    @property
    def lead(self) -> int:
        """Pixels a window reaches before its core."""
        return self.overlap // 2

    @property
    def rows(self) -> int:
        return _axis_tiles(self.height, self.tile, self.overlap)

    @property
    def cols(self) -> int:
        return _axis_tiles(self.width, self.tile, self.overlap)

    def __len__(self) -> int:
        return self.rows * self.cols

    def window(self, i: int, j: int) -> Window:
        return Window(i * self.stride - self.lead, j * self.stride - self.lead, self.tile, self.tile)

    def core(self, i: int, j: int) -> Window:
        return Window(i * self.stride, j * self.stride, self.stride, self.stride)

    def _axis_range(self, start: int, stop: int, n: int) -> range:
        # Window k spans [k*s - lead, k*s - lead + tile): it meets [start, stop) when
        # k*s - lead < stop and k*s - lead + tile > start.
        s = self.stride
        lo = max(0, math.floor((start + self.lead - self.tile) / s) + 1)
        hi = min(n - 1, math.ceil((stop + self.lead) / s) - 1)
        return range(lo, hi + 1)

    def rows_cols(self, region: Window) -> tuple[range, range]:
        """Tile rows and columns whose windows meet ``region``."""
        return (
            self._axis_range(region.row, region.row_stop, self.rows),
            self._axis_range(region.col, region.col_stop, self.cols),
        )

    def tiles_for(self, region: Window) -> tuple[tuple[int, int], ...]:
        """Tiles whose windows meet ``region``, in the one global (row-major) order."""
        rows, cols = self.rows_cols(region)
        return tuple((i, j) for i in rows for j in cols)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((i, j) for i in range(self.rows) for j in range(self.cols))


def ramp(length: int, overlap: int) -> np.ndarray:
    """1-D blend weights: a raised-cosine rise over ``overlap`` px at each end, flat in between.

    Strictly positive everywhere, so any pixel covered by a tile has weight; the smooth
    rise makes neighbouring tiles hand over gradually instead of at a hard line.
    """
    w = np.ones(length, dtype=np.float64)
    if overlap > 0:
        t = (np.arange(overlap, dtype=np.float64) + 0.5) / overlap  # (0, 1)
        rise = 0.5 - 0.5 * np.cos(np.pi * t)
        w[:overlap] = rise
        w[length - overlap :] = rise[::-1]
    return w


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """2-D weights (float32) for one tile: the outer product of two ramps."""
    r = ramp(tile, overlap)
    return np.outer(r, r).astype(np.float32)


@dataclass(frozen=True, slots=True)
class Resampling:
    """How the work grid relates to the output grid (pure arithmetic, pixel centres)."""

    out_height: int
    out_width: int
    work_height: int
    work_width: int

    @property
    def identity(self) -> bool:
        return self.out_height == self.work_height and self.out_width == self.work_width

    def work_coords(self, start: int, stop: int, axis: int) -> np.ndarray:
        """Work-grid coordinates (float) of output pixel centres ``start..stop`` on ``axis``."""
        n_out, n_work = (self.out_height, self.work_height) if axis == 0 else (self.out_width, self.work_width)
        idx = np.arange(start, stop, dtype=np.float64)
        return np.clip((idx + 0.5) * (n_work / n_out) - 0.5, 0.0, n_work - 1.0)

    def work_region(self, out: Window) -> Window:
        """Work pixels that bilinear interpolation of ``out`` reads."""
        if self.identity:
            return out
        rows = self.work_coords(out.row, out.row_stop, 0)
        cols = self.work_coords(out.col, out.col_stop, 1)
        r0, c0 = int(np.floor(rows[0])), int(np.floor(cols[0]))
        r1 = min(self.work_height, int(np.floor(rows[-1])) + 2)
        c1 = min(self.work_width, int(np.floor(cols[-1])) + 2)
        return Window(r0, c0, r1 - r0, c1 - c0)


@dataclass(frozen=True, slots=True)
class Block:
    """One unit of work: an output block, and the tiles and input pixels it needs."""

    index: tuple[int, int]
    out: Window  # on the output grid; exactly one zarr chunk
    work: Window  # work-grid pixels the output needs
    tiles: tuple[tuple[int, int], ...]
    read: Window  # work-grid window covering every tile (may reach past the edges)


@dataclass(frozen=True)
class RenderPlan:
    """The whole job, computed without touching a file."""

    out_height: int
    out_width: int
    work_height: int
    work_width: int
    tile: int = 256
    overlap: int = 32
    chunk: int = 1024
    #: Part of the output grid to produce (AOI); ``None``: all of it.
    region: Window | None = None

    def __post_init__(self) -> None:
        if min(self.out_height, self.out_width, self.work_height, self.work_width) < 1:
            raise TilingError(
                f"empty raster: output {self.out_height}×{self.out_width}, work {self.work_height}×{self.work_width}"
            )
        if self.chunk < 1:
            raise TilingError(f"--chunk-size {self.chunk} must be positive")

    @cached_property
    def grid(self) -> TileGrid:
        return TileGrid(self.work_height, self.work_width, self.tile, self.overlap)

    @cached_property
    def resampling(self) -> Resampling:
        return Resampling(self.out_height, self.out_width, self.work_height, self.work_width)

    @property
    def extent(self) -> Window:
        return self.region or Window(0, 0, self.out_height, self.out_width)

    def footprint(self, bi: int, bj: int) -> tuple[Window, Window, Window, int]:
        """Block ``(bi, bj)``'s output, work and read windows and its tile count, without listing
        its tiles (a coarse raster upsampled to the model's grid can give a block millions)."""
        ext = self.extent
        r0, c0 = ext.row + bi * self.chunk, ext.col + bj * self.chunk
        out = Window(r0, c0, min(self.chunk, ext.row_stop - r0), min(self.chunk, ext.col_stop - c0))
        work = self.resampling.work_region(out)
        rows, cols = self.grid.rows_cols(work)
        read = self.grid.window(rows[0], cols[0]).union(self.grid.window(rows[-1], cols[-1]))
        return out, work, read, len(rows) * len(cols)

    def block(self, bi: int, bj: int) -> Block:
        out, work, read, _ = self.footprint(bi, bj)
        return Block((bi, bj), out, work, self.grid.tiles_for(work), read)

    @property
    def block_shape(self) -> tuple[int, int]:
        ext = self.extent
        return math.ceil(ext.height / self.chunk), math.ceil(ext.width / self.chunk)

    def blocks(self) -> Iterator[Block]:
        nb, mb = self.block_shape
        for bi in range(nb):
            for bj in range(mb):
                yield self.block(bi, bj)

    @property
    def n_tiles(self) -> int:
        """Distinct model windows the job needs (each block may recompute its border tiles)."""
        rows, cols = self.grid.rows_cols(self.resampling.work_region(self.extent))
        return len(rows) * len(cols)


def cache_friendly_order(blocks: list[Block]) -> list[Block]:
    """Checkerboard order: blocks of one colour first, so the others find every shared border
    tile already predicted (``execute.TileCache``)."""
    return sorted(blocks, key=lambda b: ((b.index[0] + b.index[1]) % 2, b.index))


def check_tiling(tile_size: int, overlap: int, multiple: int, num_downs: int) -> None:
    """Tile size against the model: a U-Net with ``num_downs`` down-samplings takes multiples of
    ``multiple``.  The message names one setting that works, so one more try is enough."""
    if tile_size % multiple:
        good = max(multiple, -(-tile_size // multiple) * multiple)
        raise TilingError(
            f"--tile-size {tile_size} must be a multiple of {multiple} for this model "
            f"(a U-Net with {num_downs} down-samplings); try --tile-size {good} --overlap {min(overlap, good // 4)}"
        )
