"""Score a generator on a paired split with the protocol our acceptance numbers use.

For each pair the model's map is produced at the model's training scale (A is resized from
its stored size to ``round(W * source_resolution_m / spec.ground_resolution_m)`` px and run
through ``Predictor.predict_batch``), then the real map B and the generated map are both
resized to 256×256 with bilinear filtering and compared in 0..255:

* accuracy at δ (5, 10): share of pixels whose largest per-channel difference is below δ;
* RMSE: ``sqrt(Σ_pixels,channels diff² / 256²)`` per image (the maps literature's form);
* L1, PSNR and SSIM (Gaussian window σ=1.5, 11 taps, per channel) per image;
* IoU of three map classes (road, park, water; each pixel classified to the nearest style
  colour of ``geopix.style``) from intersections and unions summed over the whole split, so
  small classes on single tiles do not dominate.

All per-image numbers are averaged over images.  A constant-colour baseline is scored the
same way, so every number has an anchor.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from geopix import style
from geopix.config import DEFAULT_BASELINE_COLOR, EvalConfig, ProgressFn, resolve_config
from geopix.data.pairs import PairRef, default_source_resolution, find_pairs, read_pair
from geopix.errors import DatasetError
from geopix.infer import Predictor
from geopix.models.checkpoint import LoadedModel
from geopix.models.registry import load_model
from geopix.output import written_whole

EVAL_SIZE = 256
DELTAS = (5, 10)
CLASSES = ("road", "park", "water")
log = logging.getLogger(__name__)
REPORT = "report.json"
SAMPLES = "samples.png"


# ---- metric functions (uint8 HxWx3 arrays in, floats out) -------------------------------------
def resize_eval(img: np.ndarray, size: int = EVAL_SIZE) -> np.ndarray:
    """Bilinear resize to ``size``×``size``: the common grid every comparison happens on."""
    if img.shape[:2] == (size, size):
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


def _diff(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    if real.shape != fake.shape:
        raise ValueError(f"real {real.shape} and fake {fake.shape} must have the same shape")
    return real.astype(np.float64) - fake.astype(np.float64)


def pixel_accuracy(real: np.ndarray, fake: np.ndarray, delta: float) -> float:
    """Share of pixels whose largest |real − fake| over RGB is below ``delta`` (0..255)."""
    return float((np.abs(_diff(real, fake)).max(axis=-1) < delta).mean())


def rmse(real: np.ndarray, fake: np.ndarray) -> float:
    """``sqrt(Σ over pixels and channels of diff² / number of pixels)``."""
    d = _diff(real, fake)
    return float(math.sqrt((d**2).sum() / (d.shape[0] * d.shape[1])))


def l1(real: np.ndarray, fake: np.ndarray) -> float:
    """Mean absolute difference over pixels and channels, 0..255."""
    return float(np.abs(_diff(real, fake)).mean())


def psnr(real: np.ndarray, fake: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB (peak 255); ``inf`` for identical images."""
    mse = float((_diff(real, fake) ** 2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _gaussian_kernel(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(real: np.ndarray, fake: np.ndarray, *, size: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004) over channels, Gaussian window, valid region only.

    Images smaller than the window use the largest odd window that fits.
    """
    _diff(real, fake)  # shape check
    size = min(size, real.shape[0], real.shape[1])
    size -= 1 - size % 2
    k1, k2, peak = 0.01, 0.03, 255.0
    c1, c2 = (k1 * peak) ** 2, (k2 * peak) ** 2
    x = torch.from_numpy(real.astype(np.float64)).permute(2, 0, 1)[:, None]  # C,1,H,W
    y = torch.from_numpy(fake.astype(np.float64)).permute(2, 0, 1)[:, None]
    g = _gaussian_kernel(size, sigma)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable, 'valid' convolution
        t = torch.nn.functional.conv2d(t, g.view(1, 1, 1, -1))
        return torch.nn.functional.conv2d(t, g.view(1, 1, -1, 1))

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def class_masks(img: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks of the three map classes: each pixel's nearest style colour (``geopix.style``),
    the same classification the real-imagery evaluation and the palette head use; road is any road class."""
    classes = style.classify(img)
    return {c: np.isin(classes, [style.CLASS_NAMES.index(n) for n in style.METRIC_GROUPS[c]]) for c in CLASSES}


class MetricAccumulator:
    """Adds up per-image metrics and split-wide class intersections/unions."""

    def __init__(self) -> None:
        self.n = 0
        self._sums: dict[str, float] = {}
        self._inter = dict.fromkeys(CLASSES, 0)
        self._union = dict.fromkeys(CLASSES, 0)

    def add(self, real: np.ndarray, fake: np.ndarray) -> None:
        """Score one pair of HxWx3 uint8 maps already on the evaluation grid."""
        per_image = {f"acc_{d}": pixel_accuracy(real, fake, d) for d in DELTAS}
        per_image |= {"rmse": rmse(real, fake), "l1": l1(real, fake), "psnr": psnr(real, fake)}
        per_image["ssim"] = ssim(real, fake)
        for k, v in per_image.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        mr, mf = class_masks(real), class_masks(fake)
        for c in CLASSES:
            self._inter[c] += int((mr[c] & mf[c]).sum())
            self._union[c] += int((mr[c] | mf[c]).sum())
        self.n += 1

    def result(self) -> dict[str, float]:
        """Means over images; IoU is NaN for a class absent from both real and fake maps."""
        if self.n == 0:
            raise DatasetError("no images were scored")
        out = {k: v / self.n for k, v in self._sums.items()}
        ious = {c: self._inter[c] / self._union[c] if self._union[c] else math.nan for c in CLASSES}
        out |= {f"iou_{c}": v for c, v in ious.items()}
        defined = [v for v in ious.values() if not math.isnan(v)]
        out["miou"] = float(np.mean(defined)) if defined else math.nan
        return out


# ---- the report -------------------------------------------------------------------------------
def _finite(x: object) -> object:
    """NaN/inf → None so report.json is strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


@dataclass(frozen=True, slots=True)
class EvalReport:
    """Scores of one model on one split, and of the constant-colour baseline."""

    model: str
    data: str
    split: str
    direction: str
    n_images: int
    input_size: int  # A's side as fed to the model (its training scale)
    ground_resolution_m: float
    source_resolution_m: float
    bn_mode: str
    metrics: dict[str, float]
    baseline: dict[str, float]
    baseline_color: tuple[int, int, int] = DEFAULT_BASELINE_COLOR
    seconds: float = 0.0
    files: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        """Strict JSON (non-finite numbers become ``null``: PSNR of a perfect match, absent classes)."""
        return json.dumps(_finite(asdict(self)), indent=2, allow_nan=False)


# ---- evaluation -------------------------------------------------------------------------------
def _use_batch_stats(net: nn.Module) -> None:
    """Make ``net``'s BatchNorms normalise with per-batch statistics, leaving the running ones as they are."""
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()
            m.momentum = 0.0  # running = (1 - 0) * running: the stored statistics stay intact


def _input_size(shape: tuple[int, ...], source_resolution_m: float, ground_resolution_m: float) -> tuple[int, int]:
    f = source_resolution_m / ground_resolution_m
    return max(1, round(shape[0] * f)), max(1, round(shape[1] * f))


def _batches(
    pairs: Sequence[PairRef], direction: str, size_of, batch_size: int
) -> Iterator[list[tuple[np.ndarray, np.ndarray]]]:
    """Groups of (model input, real target) with equal input sizes, at most ``batch_size`` long."""
    batch: list[tuple[np.ndarray, np.ndarray]] = []
    for ref in pairs:
        a, b = read_pair(ref, direction)
        h, w = size_of(a.shape)
        a_in = a if a.shape[:2] == (h, w) else np.asarray(Image.fromarray(a).resize((w, h), Image.BICUBIC))
        if batch and (len(batch) == batch_size or batch[0][0].shape != a_in.shape):
            yield batch
            batch = []
        batch.append((a_in, b))
    if batch:
        yield batch


def evaluate(
    config: EvalConfig | None = None,
    /,
    *,
    loaded: LoadedModel | None = None,
    on_progress: ProgressFn | None = None,
    **kwargs,
) -> EvalReport:
    """Score ``config.model`` on ``config.data``/``split`` (see the module docstring); write files
    to ``config.out_dir``.

    Also callable as ``geopix.evaluate(model="sat2map", data="maps", limit=100)``.  Option values
    are checked when the config is built, before anything is loaded (``OptionError``);
    ``on_progress("eval", pairs done, pairs)`` is called after each batch.  ``loaded``: a model
    already in memory, scored as it is instead of loading ``config.model`` (which may then be
    left out: the report names its path)."""
    if loaded is not None and config is None and "model" not in kwargs:
        kwargs["model"] = loaded.path or "a loaded model"
    config = resolve_config(EvalConfig, config, kwargs, "evaluate")
    t0 = time.perf_counter()
    loaded = loaded if loaded is not None else load_model(config.model)
    spec = loaded.spec
    direction = config.direction or spec.direction
    pairs = find_pairs(config.data, config.split)
    if config.limit is not None:
        pairs = pairs[: config.limit]
    source_resolution_m = config.source_resolution_m
    if source_resolution_m is None:  # 0.9 m/px for the maps layout, else 1.0
        source_resolution_m = default_source_resolution(pairs[0])
    # A copy for train mode: the caller's model must come back exactly as it went in.
    net = copy.deepcopy(loaded.net) if config.bn_mode == "train" else loaded.net
    predictor = Predictor.from_loaded(LoadedModel(spec, net, loaded.path), config.device, precision=config.precision)
    if config.bn_mode == "train":
        _use_batch_stats(predictor.net)  # after Predictor's eval(): dropout stays off

    scores, base = MetricAccumulator(), MetricAccumulator()
    constant = np.empty((EVAL_SIZE, EVAL_SIZE, 3), np.uint8)
    constant[...] = np.asarray(config.baseline_color, np.uint8)
    samples: list[np.ndarray] = []
    input_size = 0

    def size_of(shape: tuple[int, ...]) -> tuple[int, int]:
        return _input_size(shape, source_resolution_m, spec.ground_resolution_m)

    log.info("scoring %d %s pairs of %s on %s", len(pairs), config.split, config.data, predictor.device)
    for batch in _batches(pairs, direction, size_of, config.batch_size):
        inputs = np.stack([a for a, _ in batch])
        input_size = max(input_size, *inputs.shape[1:3])
        fakes = predictor.predict_batch(inputs)
        for (a, b), fake in zip(batch, fakes, strict=True):
            real, fake256 = resize_eval(b), resize_eval(fake)
            scores.add(real, fake256)
            base.add(real, constant)
            if len(samples) < config.n_samples:
                samples.append(np.concatenate([resize_eval(a), fake256, real], axis=1))
        if on_progress is not None:
            on_progress("eval", scores.n, len(pairs))

    files: dict[str, str] = {}
    if config.out_dir is not None:
        out = Path(config.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with written_whole(out / SAMPLES) as tmp:
            Image.fromarray(np.concatenate(samples, axis=0)).save(tmp, format="PNG")
        files = {"report": str(out / REPORT), "samples": str(out / SAMPLES)}
    report = EvalReport(
        model=loaded.path or str(config.model),
        data=str(config.data),
        split=config.split,
        direction=direction,
        n_images=scores.n,
        input_size=input_size,
        ground_resolution_m=float(spec.ground_resolution_m),
        source_resolution_m=float(source_resolution_m),
        bn_mode=config.bn_mode,
        metrics=scores.result(),
        baseline=base.result(),
        baseline_color=tuple(int(c) for c in config.baseline_color),
        seconds=round(time.perf_counter() - t0, 2),
        files=files,
    )
    if config.out_dir is not None:
        with written_whole(Path(files["report"])) as tmp:
            tmp.write_text(report.to_json() + "\n")
    return report
