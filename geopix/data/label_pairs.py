"""Cut aerial images and their class rasters (a segmentation data set) into map-style training pairs.

A *code table* says what each label value means in the map style: a style class
(``building``), a metric group (``road``: any road class) or ``unknown`` (ignored by the
loss).  Labels are resampled onto the model's work grid by majority (``mode``), the aerial
as render reads it (average resampling, the model's colour matching), so a pair shows the
model exactly what a render will — the same contract as ``geopix dataset vectors``.

What a pixel *may* be follows :mod:`geopix.data.rasterize`: a set that labels only some
classes (``covers``) says of its background pixels only "none of these" (a building-only
set's 0 may still be a road).  ``incomplete=True`` is for sets whose covered classes are
themselves only partly traced (Xiamen's footprints miss whole blocks): there the background
code means *unknown*, so a missed building is never taught as "not a building".

Images without georeferencing (many segmentation sets) get a local metric grid of the
``source_resolution_m`` given; georeferenced images keep theirs, and their label must be on
the same grid.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.io import MemoryFile
from rasterio.transform import Affine
from rasterio.warp import reproject

from geopix import style
from geopix.config import LabelPairsConfig, resolve_config
from geopix.data.pair_writer import PairWriter
from geopix.data.rasterize import Labels, allowed_lut
from geopix.data.vector_pairs import read_work
from geopix.errors import DatasetError
from geopix.read import colour_match, inspect_raster, work_grid

UNKNOWN = "unknown"
#: A transverse Mercator with scale 1 at its origin: a non-georeferenced image placed there has
#: exactly its declared metres per pixel on the ground.
LOCAL_CRS = CRS.from_proj4("+proj=tmerc +lat_0=0 +lon_0=0 +k=1 +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs")


@dataclass(frozen=True)
class CodeTable:
    """Label value → style class name, metric group or ``unknown``; which classes the set covers."""

    codes: Mapping[int, tuple[str, ...]]
    covers: frozenset[str]
    incomplete: bool = False

    @classmethod
    def parse(
        cls,
        codes: Mapping[str | int, str | Sequence[str]],
        covers: Sequence[str] | None = None,
        incomplete: bool = False,
    ) -> CodeTable:
        """Check every entry; ``covers`` defaults to the classes the codes name (groups expanded).

        A value may list several classes (``["park", "background"]``: vegetation that is a park or
        a garden); the pixel may be any of them, and the first is drawn."""
        table: dict[int, tuple[str, ...]] = {}
        names = {*style.CLASS_NAMES, *style.METRIC_GROUPS, UNKNOWN}
        for raw, value in codes.items():
            try:
                code = int(raw)
            except (TypeError, ValueError):
                raise DatasetError(f"code table: {raw!r} is not a label value; use integers 0..255") from None
            if not 0 <= code <= 255:
                raise DatasetError(f"code table: {code} is outside 0..255 (labels are 8-bit)")
            entry = (value,) if isinstance(value, str) else tuple(value)
            bad = [n for n in entry if n not in names]
            if bad or not entry or (UNKNOWN in entry and len(entry) > 1):
                raise DatasetError(
                    f"code table: {code} → {value!r} is not a style class, group or 'unknown'; "
                    f"use one of {', '.join(sorted(names))} (or a list of classes)"
                )
            table[code] = entry
        named = {m for entry in table.values() for n in entry if n != UNKNOWN for m in style.METRIC_GROUPS.get(n, (n,))}
        if covers is None:
            cover_set = named
        else:
            cover_set = {m for n in covers for m in style.METRIC_GROUPS.get(n, (n,))}
            unknown = cover_set - set(style.CLASS_NAMES)
            if unknown:
                raise DatasetError(f"--covers {', '.join(sorted(unknown))}: not a style class or group")
        if not cover_set - {"background"}:
            raise DatasetError("the code table names no style class but background; a label set must cover one")
        return cls(table, frozenset(cover_set), incomplete)

    @classmethod
    def resolve(
        cls, codes: str | Path | Mapping[str | int, str | Sequence[str]], covers: Sequence[str] | None, incomplete: bool
    ) -> CodeTable:
        """The table of ``codes`` (a dict, or a JSON file: ``{"codes": {"0": "background", "1": "building",
        "255": "unknown"}}``, optionally with ``"covers": [...]`` and ``"incomplete": true``); ``covers``
        given here replaces the file's, ``incomplete`` adds to it."""
        if not isinstance(codes, str | Path):
            return cls.parse(codes, covers, incomplete)
        try:
            doc = json.loads(Path(codes).read_text())
            entries, file_covers, file_incomplete = doc["codes"], doc.get("covers"), bool(doc.get("incomplete"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DatasetError(
                f"cannot read code table {codes} ({exc}); expected JSON "
                '{"codes": {"0": "background", "1": "building", "255": "unknown"}}'
            ) from exc
        return cls.parse(entries, covers if covers is not None else file_covers, incomplete or file_incomplete)

    def luts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """256-entry tables: drawn class index, allowed bit mask, and whether the code is in the table."""
        by_top = allowed_lut(self.covers)
        top = np.zeros(256, np.uint8)
        allowed = np.zeros(256, np.uint8)
        mapped = np.zeros(256, bool)
        for code, entry in self.codes.items():
            mapped[code] = True
            if entry == (UNKNOWN,):
                continue
            members = [style.CLASS_NAMES.index(m) for n in entry for m in style.METRIC_GROUPS.get(n, (n,))]
            top[code] = members[0]
            bits = 0
            for m in members:
                bits |= int(by_top[m])
            if entry == ("background",) and self.incomplete:
                bits = 0  # the covered classes were only partly traced: their absence proves nothing
            allowed[code] = bits
        return top, allowed, mapped


@dataclass
class LabelPairsResult:
    out: Path
    pairs: int
    resolution_m: float
    known_share: float
    class_pixels: dict[str, int]
    covers: list[str]
    incomplete: bool
    images: list[str] = field(default_factory=list)


def match_labels(images: Sequence[str | Path], labels: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """Pair each image with its label: label files and folders, matched by file stem."""
    by_stem: dict[str, Path] = {}
    for item in map(Path, labels):
        files = sorted(p for p in item.iterdir() if p.is_file()) if item.is_dir() else [item]
        for f in files:
            by_stem.setdefault(f.stem, f)
    out = []
    for image in map(Path, images):
        if image.stem not in by_stem:
            raise DatasetError(f"no label for {image} (looked for {image.stem}.* among --labels); name them alike")
        out.append((image, by_stem[image.stem]))
    if not out:
        raise DatasetError("no images given; pass aerial image files")
    return out


def _local_transform(res_m: float, height: int) -> Affine:
    """North-up pixels of ``res_m`` whose lower-left corner is the origin (never GDAL's "no transform")."""
    return Affine(res_m, 0, 0, 0, -res_m, height * res_m)


def _on_local_grid(data: np.ndarray, res_m: float, stack: ExitStack) -> str:
    """An in-memory GeoTIFF of ``data`` (bands, h, w) on :data:`LOCAL_CRS` at ``res_m``: a path GDAL opens
    until ``stack`` closes."""
    mem = stack.enter_context(MemoryFile())
    with mem.open(
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs=LOCAL_CRS,
        transform=_local_transform(res_m, data.shape[1]),
    ) as dst:
        dst.write(data)
    return mem.name


def _open_pair(
    image: Path, label: Path, source_res: float | None, stack: ExitStack
) -> tuple[str, np.ndarray, Affine, CRS]:
    """The image as a georeferenced path, and its label codes with their grid; sizes and CRS checked."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(image) as src:
                img_crs, img_tf, img_shape = src.crs, src.transform, (src.height, src.width)
                img_data = src.read() if src.crs is None else None
            with rasterio.open(label) as lab:
                lab_crs, lab_tf, codes = lab.crs, lab.transform, lab.read(1)
    except rasterio.errors.RasterioIOError as exc:
        raise DatasetError(f"cannot read {exc}; check the image and label paths") from exc
    if codes.shape != img_shape:
        raise DatasetError(
            f"{label} is {codes.shape[1]}×{codes.shape[0]} px but {image} is {img_shape[1]}×{img_shape[0]}; "
            "a label raster must cover its image pixel for pixel"
        )
    if codes.dtype != np.uint8:
        if codes.min() < 0 or codes.max() > 255:
            raise DatasetError(f"{label} holds values outside 0..255; class labels must be 8-bit codes")
        codes = codes.astype(np.uint8)
    if img_crs is None:
        if source_res is None:
            raise DatasetError(
                f"{image} has no georeferencing, so its ground resolution is unknown; pass --source-resolution "
                "(metres per pixel)"
            )
        if lab_crs is not None:
            raise DatasetError(f"{label} is georeferenced ({lab_crs}) but {image} is not; give both or neither a CRS")
        path = _on_local_grid(img_data, source_res, stack)
        return path, codes, _local_transform(source_res, img_shape[0]), LOCAL_CRS
    if lab_crs is not None and lab_crs != img_crs:
        raise DatasetError(
            f"{label} is in {lab_crs} but {image} in {img_crs}; warp the label onto the image's grid "
            f"(gdalwarp -r near -t_srs {img_crs} -te ... -ts {img_shape[1]} {img_shape[0]})"
        )
    if lab_crs is not None and not lab_tf.almost_equals(img_tf, precision=abs(img_tf.a) * 1e-3):
        raise DatasetError(f"{label} is not on {image}'s grid ({tuple(lab_tf)[:6]} vs {tuple(img_tf)[:6]})")
    return str(image), codes, img_tf, img_crs


def codes_on_grid(codes: np.ndarray, src_tf: Affine, crs: CRS, dst_tf: Affine, shape: tuple[int, int]) -> np.ndarray:
    """Label codes resampled onto the work grid: the most common code under each work pixel."""
    out = np.zeros(shape, np.uint8)
    reproject(
        codes,
        out,
        src_transform=src_tf,
        src_crs=crs,
        dst_transform=dst_tf,
        dst_crs=crs,
        resampling=Resampling.mode if abs(dst_tf.a) > abs(src_tf.a) else Resampling.nearest,
    )
    return out


def make_label_pairs(config: LabelPairsConfig | None = None, /, **kwargs) -> LabelPairsResult:
    """Write ``out_dir/{A,B,M}/NAME.png`` pairs for every image and its class raster (module docstring).

    Also callable as ``make_label_pairs(images=[...], labels=["labels/"], codes={...}, out_dir="pairs")``."""
    from geopix.models.registry import load_model

    config = resolve_config(LabelPairsConfig, config, kwargs, "make_label_pairs")
    table = CodeTable.resolve(config.codes, config.covers, config.incomplete)
    pairs = match_labels(config.images, config.labels)
    top_lut, allowed_lut_, mapped = table.luts()
    spec = load_model(config.model).spec
    res = spec.ground_resolution_m if config.resolution_m is None else config.resolution_m
    writer = PairWriter(config.out_dir, tile=config.tile, stride=config.step, overwrite=config.overwrite)
    with writer:
        for image, label in pairs:
            with ExitStack() as stack:
                path, codes, src_tf, crs = _open_pair(image, label, config.source_resolution_m, stack)
                stray = np.unique(codes[~mapped[codes]])
                if stray.size:
                    raise DatasetError(
                        f"{label} holds label value(s) {', '.join(map(str, stray[:8]))} that the code table does "
                        f'not name; add them (e.g. "{stray[0]}": "unknown")'
                    )
                info = inspect_raster(path)
                grid = work_grid(info, res, resample=True)
                if config.match_colors and spec.input_stats:
                    info = colour_match(info, spec.input_stats)
                a, valid = read_work(info, grid)
            work_codes = codes_on_grid(codes, src_tf, crs, grid.transform(info), (grid.height, grid.width))
            allowed = allowed_lut_[work_codes]
            allowed[~valid] = 0
            writer.add_raster(writer.stem_for(image), a, Labels(top_lut[work_codes], allowed))
        if writer.pairs == 0:
            raise DatasetError("no tile has a known label pixel; check the code table (every code 'unknown'?)")
        result = LabelPairsResult(
            out=writer.out,
            pairs=writer.pairs,
            resolution_m=float(res),
            known_share=writer.known_share,
            class_pixels=writer.class_pixels(),
            covers=sorted(table.covers),
            incomplete=table.incomplete,
            images=[str(i) for i, _ in pairs],
        )
        writer.publish(
            {
                **asdict(result),
                "out": str(writer.out),
                "codes": {str(k): list(v) for k, v in sorted(table.codes.items())},
                "source_resolution_m": config.source_resolution_m,
                "model": str(config.model),
            }
        )
    return result
