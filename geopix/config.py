"""Frozen, typed settings for each stage.

The CLI builds one of these from its options and hands it to one library function;
nothing patches a config after it is built (``dataclasses.replace`` makes a new one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from geopix.errors import GeopixError, TilingError


@dataclass(frozen=True, slots=True)
class TileConfig:
    """How the raster is cut: model windows of ``tile_size`` overlapping by ``overlap``."""

    tile_size: int = 256
    overlap: int = 64
    chunk_size: int = 1024  # output block (Dask task / zarr chunk) side in pixels

    def __post_init__(self) -> None:
        if self.tile_size <= 0:
            raise TilingError(f"--tile-size {self.tile_size} must be positive")
        if self.overlap < 0 or 2 * self.overlap >= self.tile_size:
            raise TilingError(
                f"--overlap {self.overlap} must be >= 0 and less than half of --tile-size {self.tile_size}; "
                f"try --overlap {self.tile_size // 4}"
            )
        if self.chunk_size < self.tile_size - 2 * self.overlap or self.chunk_size <= 0:
            raise TilingError(
                f"--chunk-size {self.chunk_size} must be at least the tile stride "
                f"({self.tile_size - 2 * self.overlap}); try --chunk-size 1024"
            )

    @property
    def stride(self) -> int:
        return self.tile_size - self.overlap


@dataclass(frozen=True, slots=True)
class InferConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_size: int = 8
    threads: int | None = None  # torch intra-op threads per worker; None: cores / workers
    channels_last: bool = True
    #: fp32 | bf16 | fp16 | auto (bf16 where the hardware runs it natively: CUDA, or a CPU
    #: with AVX512-BF16/AMX; fp32 elsewhere).  Resolved once per render, for every worker.
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise GeopixError(f"--batch-size {self.batch_size} must be >= 1")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise GeopixError(f"--precision {self.precision!r} must be auto, fp32, bf16 or fp16")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise GeopixError(f"--device {self.device!r} must be auto, cpu, cuda or cuda:N")


@dataclass(frozen=True, slots=True)
class RenderConfig:
    """Everything ``geopix render`` needs; see ``geopix.pipeline.render``."""

    input: Path
    output_dir: Path
    model: str = "sat2map"
    tiles: TileConfig = field(default_factory=TileConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    bands: tuple[int, ...] | None = None  # 1-based, as in GDAL
    aoi: Path | None = None
    resample: bool = True
    output_resolution: str = "source"  # source | model
    workers: int | None = None
    scheduler: str | None = None  # address, scheduler file, or "sync"; None: $DASK_SCHEDULER_ADDRESS or local
    scheduler_file: Path | None = None  # written by `dask scheduler --scheduler-file`
    allow_no_crs: bool = False
    overwrite: bool = False
    keep_zarr: bool = False
    force: bool = False  # discard an unfinished block store of a different job
    #: Match the raster's band means/stds to the model's training inputs (when it declares them).
    match_colors: bool = True
    cog: bool = True
    progress: bool = True
    #: Also write XYZ web tiles here (a folder, ``.pmtiles`` or ``.mbtiles``); relative to ``output_dir``.
    xyz: Path | None = None


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """A training run.  Defaults are the authors' pix2pix recipe (``preset='pix2pix'``)."""

    data: Path
    run_dir: Path = Path("runs/train")
    direction: str = "AtoB"
    # network
    ngf: int = 64
    ndf: int = 64
    num_downs: int = 8
    norm: str = "batch"
    use_dropout: bool = True
    head: str = "tanh"  # tanh: RGB regression; palette: classify into palette colours
    palette_size: int = 10
    # losses
    gan_mode: str = "vanilla"  # vanilla | lsgan | none
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
    source_resolution_m: float = 1.0  # ground resolution of the dataset's images as stored
    replay: Path | None = None  # a second dataset (e.g. the maps) mixed into every epoch
    replay_ratio: float = 0.5  # share of each epoch's samples drawn from ``replay``
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
    progress: bool = True

    def __post_init__(self) -> None:
        if self.direction not in ("AtoB", "BtoA"):
            raise GeopixError(f"--direction {self.direction!r} must be AtoB or BtoA")
        if self.gan_mode not in ("vanilla", "lsgan", "none"):
            raise GeopixError(f"--gan-mode {self.gan_mode!r} must be vanilla, lsgan or none")
        if self.crop_size % (2**self.num_downs):
            raise GeopixError(
                f"--crop-size {self.crop_size} must be a multiple of {2**self.num_downs} for a U-Net with "
                f"{self.num_downs} down-samplings"
            )
        if not 0.0 <= self.replay_ratio < 1.0:
            raise GeopixError(f"--replay-ratio {self.replay_ratio} must be in [0, 1), e.g. 0.5 (half of each epoch)")
        if self.batch_size < 1 or self.epochs + self.epochs_decay < 1:
            raise GeopixError("--batch-size and --epochs + --epochs-decay must be at least 1")

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
