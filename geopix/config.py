"""Frozen, typed settings for each stage.

The CLI builds one of these from its options and hands it to one library function;
nothing patches a config after it is built (``dataclasses.replace`` makes a new one).
A config holds plain values only (paths, names, numbers, tuples, dicts): the library
function it is handed loads the model, reads the sets and parses the layers it names, so
this module imports nothing from geopix but ``errors``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from geopix.errors import DatasetError, GeopixError, OptionError, TilingError

Precision = Literal["auto", "fp32", "bf16", "fp16", "int8"]
OutputResolution = Literal["source", "model"]
Direction = Literal["AtoB", "BtoA"]  # AtoB: aerial → map
Norm = Literal["batch", "instance", "none"]
Head = Literal["tanh", "palette"]  # tanh: RGB regression; palette: classify into palette colours
GanMode = Literal["vanilla", "lsgan", "none"]
BnMode = Literal["eval", "train"]  # evaluation's BatchNorm statistics: running (as render) or per batch
#: Side of a tile every shipped U-Net accepts (8 down-samplings); what messages suggest.
MODEL_MULTIPLE = 256
#: How the library reports progress: ``(stage, done, total)``, called from the client's thread.
#: The CLI draws it as a bar (``geopix.cli.progress``); library callers pass their own or none.
ProgressFn = Callable[[str, int, int], None]


def check_choice(option: str, value: object, kind: object) -> None:
    """Refuse ``value`` unless it is one of the ``Literal`` type ``kind``'s, naming them."""
    allowed = get_args(kind)
    if value not in allowed:
        raise OptionError(f"{option} {value!r} must be one of {', '.join(map(str, allowed))}")


C = TypeVar("C")


def resolve_config(cls: type[C], config: C | None, kwargs: dict[str, Any], caller: str) -> C:
    """The config a library function was handed, or one built from its keyword arguments.

    Lets ``geopix.render(input=..., output_dir=...)`` and ``render(RenderConfig(...))`` be the same
    call, checked by the same ``__post_init__``; passing both is refused rather than half ignored.
    """
    if config is not None:
        if kwargs:
            raise TypeError(
                f"{caller}() takes a config ({cls.__name__}) or keyword arguments, not both: {', '.join(kwargs)}"
            )
        return config
    missing = [
        f"{f.name}="
        for f in fields(cls)
        if f.default is MISSING and f.default_factory is MISSING and f.name not in kwargs
    ]
    if missing:
        raise GeopixError(f"{caller}() needs {' and '.join(missing)}, or a config ({cls.__name__})")
    return cls(**kwargs)


@dataclass(frozen=True, slots=True)
class TileConfig:
    """How the raster is cut: model windows of ``tile_size`` overlapping by ``overlap``.

    Overlap 32 is the smallest whose seams cannot be told from 64's on the shared rasters
    (``benchmarks/bench_overlap.py``; 16 and 24 leave straight fades where neighbours disagree),
    and it computes each pixel 1.31 times instead of 1.78.
    """

    tile_size: int = 256
    overlap: int = 32
    chunk_size: int = 1024  # output block (Dask task / zarr chunk) side in pixels

    def __post_init__(self) -> None:
        if self.tile_size <= 0:
            raise TilingError(f"--tile-size {self.tile_size} must be positive")
        if self.overlap < 0 or 2 * self.overlap >= self.tile_size:
            # Name a pair that works: geopix's U-Nets take multiples of 256 (plan.check_tiling).
            tile = max(MODEL_MULTIPLE, -(-self.tile_size // MODEL_MULTIPLE) * MODEL_MULTIPLE)
            overlap = max(0, min(self.overlap, tile // 4))
            raise TilingError(
                f"--overlap {self.overlap} must be >= 0 and less than half of --tile-size {self.tile_size}; "
                f"try --tile-size {tile} --overlap {overlap}"
            )
        if self.chunk_size < self.tile_size - 2 * self.overlap or self.chunk_size <= 0:
            raise TilingError(
                f"--chunk-size {self.chunk_size} must be at least the tile stride "
                f"({self.tile_size - 2 * self.overlap}); try --chunk-size 1024"
            )


@dataclass(frozen=True, slots=True)
class InferConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_size: int = 8
    threads: int | None = None  # torch intra-op threads per worker; None: cores / workers
    channels_last: bool = True
    #: ``auto``: int8 (OpenVINO, ``geopix[int8]``) on a CPU with AVX2/VNNI/AMX when the model's int8
    #: passes its quality gate, else bf16 where the hardware runs it natively (CUDA, or a CPU with
    #: AVX512-BF16/AMX), else fp32.  ``auto`` is resolved once per render, for every worker.
    precision: Precision = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise OptionError(f"--batch-size {self.batch_size} must be at least 1; try --batch-size 8")
        check_choice("--precision", self.precision, Precision)
        device = self.device
        if not (device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
            raise OptionError(f"--device {device!r} must be auto, cpu, cuda or cuda:N (N a GPU number, e.g. cuda:0)")
        if self.threads is not None and self.threads < 1:
            raise OptionError(f"--threads {self.threads} must be at least 1; leave it out for cores / workers")


@dataclass(frozen=True, slots=True)
class RenderConfig:
    """Everything ``geopix render`` needs; see ``geopix.pipeline.render``."""

    #: A path, URL, ``/vsi…`` name, VRT, STAC Item or glob (``geopix.source.resolve_input``).
    input: str | Path | tuple[str, ...]
    #: A local folder, or an object-store URL (``s3://bucket/run``).
    output_dir: str | Path
    model: str = "sat2map"
    tiles: TileConfig = field(default_factory=TileConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    bands: tuple[int, ...] | None = None  # 1-based, as in GDAL
    aoi: Path | None = None
    resample: bool = True
    output_resolution: OutputResolution = "source"
    workers: int | None = None  # local worker processes; None: one in-process worker, a thread per core
    scheduler: str | None = None  # address, scheduler file, or "sync"; None: $DASK_SCHEDULER_ADDRESS or local
    scheduler_file: Path | None = None  # written by `dask scheduler --scheduler-file`
    dashboard: bool = False  # the local cluster serves the Dask dashboard (loopback) and says where
    allow_no_crs: bool = False
    overwrite: bool = False
    keep_zarr: bool = False
    force: bool = False  # discard an unfinished block store of a different job
    #: Match the raster's band means/stds to the model's training inputs (when it declares them).
    match_colors: bool = True
    cog: bool = True
    #: Also write XYZ web tiles here (a folder, ``.pmtiles`` or ``.mbtiles``); relative to ``output_dir``.
    xyz: Path | None = None
    #: Bytes the render may use on this machine; ``None``: most of the memory available at the
    #: start (``budget.auto_budget``).  Every plan is checked against it before anything runs.
    memory_budget: int | None = None

    def __post_init__(self) -> None:
        check_choice("--output-resolution", self.output_resolution, OutputResolution)
        if self.workers is not None and not 1 <= self.workers <= MAX_WORKERS:
            raise OptionError(
                f"--workers {self.workers} must be within 1..{MAX_WORKERS}; "
                "leave it out for one in-process worker with a thread per core"
            )
        if self.memory_budget is not None and self.memory_budget < 1 << 20:
            raise OptionError(f"--memory-budget {self.memory_budget} bytes is too small; try --memory-budget 4G")


#: More local worker processes than this is a typo, not a machine.
MAX_WORKERS = 1024


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """A training run.  Defaults are the authors' pix2pix recipe (``preset='pix2pix'``)."""

    data: Path
    run_dir: Path = Path("runs/train")
    direction: Direction = "AtoB"
    # network
    ngf: int = 64
    ndf: int = 64
    num_downs: int = 8
    norm: Norm = "batch"
    use_dropout: bool = True
    head: Head = "tanh"
    palette_size: int = 10
    # losses
    gan_mode: GanMode = "vanilla"
    lambda_gan: float = 1.0
    lambda_l1: float = 100.0
    lambda_ce: float = 1.0
    # optimisation
    batch_size: int = 1
    lr: float = 2e-4
    beta1: float = 0.5
    epochs: int = 100  # at constant lr
    epochs_decay: int = 100  # linear decay to 0
    # data
    load_size: int = 286
    load_size_max: int | None = None  # scale jitter: each sample's load size in [load_size, this]
    crop_size: int = 256
    colour_jitter: float = 0.0  # brightness/contrast/saturation/gain jitter of the input photo
    sharpness_jitter: float = 0.0  # random unsharp mask / blur of the input photo
    flip: bool = True
    rotate: bool = False
    #: Ground resolution of the dataset's images as stored; None: 0.9 for the maps layout, else 1.0.
    source_resolution_m: float | None = None
    replay: Path | None = None  # a second dataset (e.g. the maps) mixed into every epoch
    replay_ratio: float = 0.5  # share of each epoch's samples drawn from ``replay``
    #: A folder of places (geopix.data.pairs.find_places): samples drawn from each place per epoch;
    #: None: the pairs' count divided among the places.
    place_samples: int | None = None
    # run
    seed: int = 0
    init_from: str | None = None  # start from these weights (a registry name or checkpoint path)
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    workers: int = 0
    threads: int | None = None
    save_every: int = 1
    sample_every: int = 1
    bn_recal_batches: int = 25  # batches used to recompute BatchNorm statistics before each save
    max_images: int | None = None  # use only the first N training pairs (quick runs, tests)
    resume: bool = False
    overwrite: bool = False  # replace an existing run in run_dir (else refused unless resume)
    recipe: str | None = None  # the named recipe and stage this run belongs to (geopix/recipes.py)
    command: str | None = None  # the command line that made it, recorded in the checkpoint

    def __post_init__(self) -> None:
        if self.resume and self.overwrite:
            raise OptionError("--resume continues the run in --run-dir and --overwrite replaces it: pass one")
        check_choice("--direction", self.direction, Direction)
        check_choice("--norm", self.norm, Norm)
        check_choice("--head", self.head, Head)
        check_choice("--gan-mode", self.gan_mode, GanMode)
        if self.crop_size % (2**self.num_downs):
            raise OptionError(
                f"--crop-size {self.crop_size} must be a multiple of {2**self.num_downs} for a U-Net with "
                f"{self.num_downs} down-samplings"
            )
        if not 0.0 <= self.replay_ratio < 1.0:
            raise OptionError(f"--replay-ratio {self.replay_ratio} must be in [0, 1), e.g. 0.5 (half of each epoch)")
        if self.place_samples is not None and self.place_samples < 1:
            raise OptionError(f"--place-samples {self.place_samples} must be at least 1")
        if self.batch_size < 1 or self.epochs + self.epochs_decay < 1:
            raise OptionError("--batch-size and --epochs + --epochs-decay must be at least 1")
        if self.lr != self.lr:  # NaN
            raise OptionError("--lr must be a number, e.g. --lr 2e-4")

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.epochs_decay

    @property
    def use_gan(self) -> bool:
        return self.gan_mode != "none" and self.lambda_gan > 0


#: ``geopix train --preset NAME`` fills these over the defaults.
PRESETS: dict[str, dict[str, object]] = {
    "pix2pix": {},
    # Ours: classify each pixel into the map's palette; no GAN (texture costs pixel accuracy),
    # a smaller net and batch 8 so BatchNorm running statistics make eval mode good.
    "palette": {
        "head": "palette",
        "gan_mode": "none",
        "ngf": 32,
        "batch_size": 8,
        "lr": 5e-4,
        "use_dropout": False,
        "rotate": True,
        "epochs": 20,
        "epochs_decay": 20,
    },
}


#: The maps' beige background: the constant image every evaluation score is anchored to.
DEFAULT_BASELINE_COLOR = (232, 229, 222)


@dataclass(frozen=True, slots=True)
class EvalConfig:
    """Scoring on a paired split (``geopix eval MODEL DATA``); see ``geopix.evaluate.evaluate``."""

    #: A registry name or checkpoint path (``evaluate(..., loaded=...)`` scores a model already loaded).
    model: str | Path
    data: str | Path  # a dataset folder: the maps layout, or A/ and B/
    split: str = "val"
    direction: Direction | None = None  # None: the checkpoint's
    limit: int | None = None  # score only the first N pairs
    device: str = "auto"
    out_dir: str | Path | None = None  # where report.json and samples.png go; None: write nothing
    batch_size: int = 8
    source_resolution_m: float | None = None  # of the stored images; None: 0.9 for the maps layout, else 1.0
    baseline_color: tuple[int, int, int] = DEFAULT_BASELINE_COLOR
    bn_mode: BnMode = "eval"
    n_samples: int = 4  # rows of samples.png
    #: fp32 unless asked: scores compare models, so they must not move with the device.
    precision: Precision = "fp32"

    def __post_init__(self) -> None:
        check_choice("--precision", self.precision, Precision)
        if self.batch_size < 1:
            raise OptionError(f"--batch-size {self.batch_size} must be at least 1; try --batch-size 8")
        if self.limit is not None and self.limit < 1:
            raise OptionError(f"--limit {self.limit} must be at least 1")
        if len(self.baseline_color) != 3 or not all(0 <= int(c) <= 255 for c in self.baseline_color):
            raise OptionError(f"--baseline-color {self.baseline_color} must be three values in 0..255")
        if self.source_resolution_m is not None and self.source_resolution_m <= 0:
            raise OptionError(f"--source-resolution {self.source_resolution_m} must be positive")
        if self.direction is not None:
            check_choice("--direction", self.direction, Direction)
        check_choice("--bn-mode", self.bn_mode, BnMode)


@dataclass(frozen=True, slots=True)
class RealEvalConfig:
    """Scoring renders of labelled real imagery (``geopix eval --raster`` or a sets .json); see
    ``geopix.fidelity.evaluate_sets``."""

    model: str | Path
    #: A sets .json file, or its ``"sets"`` list: ``{"name", "rasters", "layers", "map", "covers"}``
    #: each (``geopix.fidelity.read_sets``; paths as given, a file's relative to it).
    sets: str | Path | Sequence[Mapping[str, Any]]
    out_dir: str | Path
    device: str = "auto"
    overlap: int = 64  # of the render's tiles
    #: fp32 unless asked: scores compare models, so they must not move with the device.
    precision: Precision = "fp32"

    def __post_init__(self) -> None:
        # The renders check these too, but only once the first one starts, after out_dir is made.
        self.tile_config()
        self.infer_config()

    def tile_config(self) -> TileConfig:
        return TileConfig(overlap=self.overlap)

    def infer_config(self) -> InferConfig:
        """``precision`` (fp32 by default, never ``auto``'s choice of the device)."""
        return InferConfig(device=self.device, precision=self.precision)


def _check_cutting(tile: int, stride: int, resolution_m: float | None) -> None:
    """The checks both dataset builders make of how they cut tiles."""
    if tile < 1 or stride < 1:
        raise TilingError(f"--tile {tile} and --stride {stride} must be positive")
    if resolution_m is not None and resolution_m <= 0:
        raise DatasetError(f"--resolution {resolution_m} must be a positive number of metres per pixel")


@dataclass(frozen=True, slots=True)
class CutConfig:
    """Pairs cut from co-registered aerial and map rasters (``geopix dataset make``); see
    ``geopix.data.cut.make_pairs``."""

    source: str | Path  # the aerial: its grid is the one pairs are cut on
    target: str | Path  # the map, in any CRS
    out_dir: str | Path
    tile: int = 256
    stride: int = 256
    resolution_m: float | None = None  # resample the aerial to this first; None: its own pixels

    def __post_init__(self) -> None:
        _check_cutting(self.tile, self.stride, self.resolution_m)


@dataclass(frozen=True, slots=True)
class LabelPairsConfig:
    """Pairs from aerial images and class rasters (``geopix dataset labels``); see
    ``geopix.data.label_pairs.make_label_pairs``."""

    images: Sequence[str | Path]
    labels: Sequence[str | Path]  # label files or folders, matched to images by file stem
    codes: str | Path | Mapping[str, str]  # a code-table JSON file, or label value → style class/group/unknown
    out_dir: str | Path
    covers: tuple[str, ...] | None = None  # classes the labels cover; None: those the code table names
    incomplete: bool = False  # the background code means unknown (covered classes only partly traced)
    source_resolution_m: float | None = None  # metres per pixel of images without georeferencing
    model: str = "sat2map"  # whose ground resolution and colour statistics the pairs take
    resolution_m: float | None = None  # None: the model's
    tile: int = 256
    stride: int | None = None  # None: half a tile
    match_colors: bool = True
    overwrite: bool = False

    def __post_init__(self) -> None:
        _check_cutting(self.tile, self.step, self.resolution_m)
        if self.source_resolution_m is not None and not self.source_resolution_m > 0:
            raise DatasetError(
                f"--source-resolution {self.source_resolution_m} must be a positive number of metres per pixel"
            )

    @property
    def step(self) -> int:
        """Pixels between tile origins: ``stride``, or half a tile."""
        return self.tile // 2 if self.stride is None else self.stride


@dataclass(frozen=True, slots=True)
class VectorPairsConfig:
    """Pairs from aerials and vector labels (``geopix dataset vectors``); see
    ``geopix.data.vector_pairs.make_vector_pairs``."""

    rasters: Sequence[str | Path]
    #: ``PATH`` (classes from known tags), ``PATH=CLASS`` or ``PATH:FIELD`` each (``data.vectors.LayerSpec``).
    layers: Sequence[str | Path]
    out_dir: str | Path
    model: str = "sat2map"  # whose ground resolution and colour statistics the pairs take
    resolution_m: float | None = None  # None: the model's
    tile: int = 256
    stride: int | None = None  # None: half a tile
    value_map: dict[str, str] | None = None  # attribute value → style class
    covers: frozenset[str] | None = None  # classes the layers label completely; None: those they contain
    match_colors: bool = True
    bands: tuple[int, ...] | None = None  # 1-based, as in GDAL
    overwrite: bool = False

    def __post_init__(self) -> None:
        _check_cutting(self.tile, self.step, self.resolution_m)

    @property
    def step(self) -> int:
        """Pixels between tile origins: ``stride``, or half a tile."""
        return self.tile // 2 if self.stride is None else self.stride
