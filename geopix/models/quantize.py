"""Int8 models: post-training static quantization of a checkpoint, made once and cached.

NNCF's post-training quantization (OpenVINO's tool: int8 weights and activations, its default
preset) is calibrated on real tiles: maps-train photos and the real sets where the developers'
data is found (``$GEOPIX_CALIBRATION_DATA``, else ``../shared/data`` beside the geopix checkout),
else the bundled Nairobi demo raster and synthetic scenes (deterministic).  Maps-train tiles, or
else the demo raster's and the synthetic ones, are split: every other one calibrates, the rest
check.  The share of check pixels whose palette class matches fp32's is the model's own quality
gate, which ``--precision auto`` reads before it picks int8.

Where this machine has not the developers' data, the models geopix ships for its own checkpoints
(``weights/int8``, made from that data by ``--ship``: one for AVX2, checked on an AVX2 CPU, one
for VNNI and AMX, checked with the exact int8 sums they compute) come first: checked against
the developers' data, and no build (NNCF, ~15 s) on first use.  A model made here lives in the user's
cache (``$GEOPIX_CACHE_DIR``, else ``$XDG_CACHE_HOME/geopix``, else ``~/.cache/geopix``) under a
key of the checkpoint's bytes, the OpenVINO and NNCF versions, the calibration source and the
CPU's int8 instruction class (``runtime.int8_isa``: a home shared by unlike nodes keeps one
checked model per class), written atomically; files that do not load are rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geopix.errors import OptionError
from geopix.models.checkpoint import ModelSpec
from geopix.models.decode import prescale
from geopix.models.distribute import sha256_file
from geopix.models.onnx_export import network_graph
from geopix.runtime import int8_isa, openvino

#: Bump when the quantization recipe changes: old cache entries are then not reused.
RECIPE = "nncf-ptq-mixed-minmax-nooverflowfix-prescaled-avx2phases-f32out-fallbackfirst-5"
#: Int8 models made from the developers' data for geopix's own checkpoints, one per CPU class.
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "weights" / "int8"
#: Class agreement with fp32 that int8 must reach on the check tiles for ``auto`` to pick it.
MIN_AGREEMENT = 0.99
TILES = 48  # half calibrate, half check
TILE = 256

# One build at a time in a process: several renders on threads (workflows/render_many) may ask
# for the same model (the first builds, the others wait and load its result), and neither torch's
# ONNX exporter nor NNCF (its progress display) can run twice at once in one process.
_BUILDING = threading.Lock()


def cache_dir() -> Path:
    root = (
        os.environ.get("GEOPIX_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "geopix"
    )
    return Path(root) / "int8"


def calibration_data() -> Path | None:
    """The developers' data folder (``maps/``, ``real/``) if this machine has it."""
    env = os.environ.get("GEOPIX_CALIBRATION_DATA")
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parents[3] / "shared" / "data"
    return beside if beside.is_dir() else None


# ---- calibration tiles ------------------------------------------------------------------------
def _maps_tiles(folder: Path, spec: ModelSpec, count: int) -> list[np.ndarray]:
    """Tiles of maps-train pairs as training feeds them: the input half, 600 → 286 px, centre 256."""
    from PIL import Image

    files = sorted(folder.glob("*.jpg"), key=lambda p: (len(p.stem), p.stem))
    if not files:
        return []
    step = max(1, len(files) // count)
    out = []
    for path in files[::step][:count]:
        with Image.open(path) as im:
            w, h = im.size
            half = (0, 0, w // 2, h) if spec.direction == "AtoB" else (w // 2, 0, w, h)
            img = im.convert("RGB").crop(half).resize((286, 286), Image.BICUBIC)
        a = np.asarray(img, np.float32)[15 : 15 + TILE, 15 : 15 + TILE].transpose(2, 0, 1)
        out.append(a / 127.5 - 1.0)
    return out


def _raster_tiles(paths: list[Path], spec: ModelSpec, count: int, resample: bool) -> list[np.ndarray]:
    """Full tiles of aerial rasters read as render reads them (colour matched, at the model's resolution)."""
    from geopix.plan import Window
    from geopix.read import WorkReader, colour_match, inspect_raster, work_grid

    out: list[np.ndarray] = []
    for path in paths:
        info = inspect_raster(path)
        info = colour_match(info, spec.input_stats) if spec.input_stats else info
        grid = work_grid(info, spec.ground_resolution_m, resample)
        with WorkReader(info, grid) as reader:
            data, valid = reader.read(Window(0, 0, grid.height, grid.width))
        for r in range(0, grid.height - TILE + 1, TILE // 2):
            for c in range(0, grid.width - TILE + 1, TILE // 2):
                if valid[r : r + TILE, c : c + TILE].mean() > 0.9:
                    out.append(data[:, r : r + TILE, c : c + TILE].astype(np.float32))
    step = max(1, len(out) // count)
    return out[::step][:count]


def _synthetic_tiles(spec: ModelSpec, count: int) -> list[np.ndarray]:
    from geopix.testing import _scene

    out = []
    for i in range(count):
        aerial, mapimg = _scene((TILE, TILE), 7000 + i)
        img = aerial if spec.direction == "AtoB" else mapimg
        out.append(img.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0)
    return out


def calibration_source(spec: ModelSpec, data: Path | None = None) -> tuple[Path | None, str]:
    """The data folder the tiles come from (None: the fallback) and its name in the cache key."""
    data = data if data is not None else calibration_data()
    if data is None or not (data / "maps" / "train").is_dir():
        return None, "fallback: demo raster + synthetic scenes"
    n_real = TILES // 4 if spec.direction == "AtoB" and any((data / "real").glob("*/*.tif")) else 0
    return data, f"{data.resolve()}: maps/train {TILES - n_real}, real {n_real}"


def calibration_tiles(spec: ModelSpec, data: Path | None = None, count: int = TILES) -> tuple[np.ndarray, np.ndarray]:
    """``(calibrate, check)`` tiles in [-1, 1] of ``spec``'s input side (see :func:`calibration_source`):
    ``count`` in all, the check ones (half the maps tiles; without the developers' data, half the
    demo raster's and half the synthetic ones) never calibrate."""
    data, _ = calibration_source(spec, data)
    if data is not None:
        real = sorted((data / "real").glob("*/*.tif")) if spec.direction == "AtoB" else []
        n_real = count // 4 if real else 0
        domain = _maps_tiles(data / "maps" / "train", spec, count - n_real)
        other = _raster_tiles(real, spec, n_real, resample=True) if n_real else []
        calibrate = np.stack(domain[0::2] + other).astype(np.float32)
        return calibrate, np.stack(domain[1::2]).astype(np.float32)
    # The fallback: real aerial tiles of the demo raster beside synthetic scenes, each split, so
    # the check has real imagery it did not calibrate on (synthetic scenes alone flattered it).
    demo: list[np.ndarray] = []
    if spec.direction == "AtoB":
        path = Path(__file__).resolve().parents[1] / "demo_data" / "nairobi_oam.tif"
        demo = _raster_tiles([path], spec, count // 2, resample=False)
    synthetic = _synthetic_tiles(spec, count - len(demo))
    calibrate = np.stack(synthetic[0::2] + demo[0::2]).astype(np.float32)
    return calibrate, np.stack(synthetic[1::2] + demo[1::2]).astype(np.float32)


# ---- the cached model -------------------------------------------------------------------------
@dataclass(frozen=True)
class Int8Model:
    """A quantized network on disk and how well it agreed with fp32 on its check tiles."""

    path: Path
    agreement: float
    check_tiles: int
    calibration: str
    #: Its logits come out as ``decode.prescale`` leaves them (decode with ``prescaled=True``).
    prescaled: bool = False

    @property
    def passes(self) -> bool:
        return self.agreement >= MIN_AGREEMENT


def cache_key(checkpoint: str | Path, source: str) -> str:
    parts = [sha256_file(checkpoint), openvino().__version__, nncf_version(), RECIPE, source, str(int8_isa())]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def nncf_version() -> str:
    """NNCF's version from its installed metadata: importing NNCF (only building a model needs
    it) took 0.42 s of every int8 render's start, for its version string alone."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nncf")
    except PackageNotFoundError:  # installed without metadata, or absent (then ImportError, as before)
        import nncf

        return nncf.__version__


def _load_cached(xml: Path, meta_path: Path) -> Int8Model | None:
    """The cached model, or None when a file is missing or does not load (then it is rebuilt)."""
    try:
        meta = json.loads(meta_path.read_text())
        openvino().Core().read_model(str(xml))  # parses the graph and checks its weights file
        return Int8Model(
            xml, float(meta["agreement"]), int(meta["check_tiles"]), str(meta["calibration"]), bool(meta["prescaled"])
        )
    except Exception:  # missing, truncated or corrupt: any of OpenVINO's or json's errors
        return None


def class_agreement(spec: ModelSpec, ref: torch.Tensor, other: torch.Tensor, prescaled: bool = False) -> float:
    """Share of pixels whose palette class (style class of the decoded colour) is the same;
    ``prescaled``: ``other`` comes from a prescaled graph (``ref`` never does)."""
    from geopix.models.decode import PaletteDecoder
    from geopix.style import classify

    if spec.head == "palette":
        a, b = PaletteDecoder.for_spec(spec)(ref), PaletteDecoder.for_spec(spec, prescaled)(other)
    else:
        a, b = (ref.clamp(-1, 1) + 1) * 127.5, (other.clamp(-1, 1) + 1) * 127.5
    ca = classify(a.permute(0, 2, 3, 1).numpy())
    cb = classify(b.permute(0, 2, 3, 1).numpy())
    return float((ca == cb).mean())


def quantize_options(nncf, model, first_fp32: bool = False) -> dict:
    """NNCF's options, chosen on sat2map (class agreement on 18 maps-train check tiles / 64 maps-val
    tiles).  Asymmetric activations (MIXED) fit the LeakyReLU/ReLU outputs; plain min/max ranges;
    no overflow fix: on a Zen 4 with VNNI, default → these 98.94 / 99.05 % → 99.16 / 99.24 %.
    The network's output stays f32: the ops after the last convolution (its bias, the decoder's
    ``prescale``) are left out, else NNCF rounds the logits of the AVX2 graph's last phase
    convolutions to 8 bits before the pixel shuffle (99.09 / 99.03 % → 99.30 / 99.30 % on a Zen 3,
    for 27.9 → 29.6 ms per tile: the last layer's bias, the phases' concatenation and the pixel
    shuffle now move f32; the VNNI graph's weights and quantizers come out byte-identical).
    ``first_fp32``: the convolution that reads the image stays fp32 (1.5 % of sat2map's
    multiply-adds), where its int8 input range is not to be trusted: on AVX2 (whose int8
    multiply-adds saturate pairs of products at 16 bits, and the image spans the whole 8-bit range;
    on a Zen 3, 98.87 / 98.92 % → 99.29 / 99.29 % with the transposed convolutions kept,
    98.88 / 98.92 → 99.30 / 99.30 % with the phase graph, where NNCF's overflow fix gave 98.81 %,
    the last layer fp32 instead 98.90 / 98.95 %, full bias correction no change), and where the
    fallback tiles calibrate, whose colours are not the user's (VNNI, exact sums: 64 maps-val tiles
    98.60 → 99.40 %, though its own check said 99.32 %)."""
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    ops = list(model.get_ordered_ops())  # in graph order
    convs = [i for i, op in enumerate(ops) if op.get_type_name() in ("Convolution", "ConvolutionBackpropData")]
    tail = [op.get_friendly_name() for op in ops[convs[-1] :] if op.get_type_name() in ("Add", "Multiply")]
    first = [ops[convs[0]].get_friendly_name()] if first_fp32 else []  # the one that reads the image
    return {
        "preset": nncf.QuantizationPreset.MIXED,
        "advanced_parameters": AdvancedQuantizationParameters(
            overflow_fix=OverflowFix.DISABLE, activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX
        ),
        "ignored_scope": nncf.IgnoredScope(names=first + tail),
    }


def build_int8(
    spec: ModelSpec,
    net: torch.nn.Module,
    calibrate: np.ndarray,
    check: np.ndarray,
    xml: Path,
    prescaled: bool,
    avx2: bool = False,
    first_fp32: bool = False,
) -> float:
    """Quantize ``net`` calibrated on ``calibrate`` into ``xml`` (+ its ``.bin``); return the class
    agreement with fp32 on ``check``.  ``prescaled``: the graph ends in ``decode.prescale``'s step;
    ``avx2``: for a CPU whose int8 class is AVX2 (``runtime.int8_isa``): the transposed convolutions
    as plain ones (``onnx_export.PhaseTransposed``); ``first_fp32``: the first layer fp32
    (:func:`quantize_options`)."""
    ov = openvino()  # first: NNCF's telemetry then follows its decision (runtime._decline_openvino_telemetry)
    import nncf

    with tempfile.TemporaryDirectory(dir=xml.parent) as tmp:
        model = ov.Core().read_model(str(network_graph(spec, net, Path(tmp) / "fp32.onnx", prescaled, phases=avx2)))
        batches = [calibrate[i : i + 8] for i in range(0, len(calibrate), 8)]
        nncf_log = logging.getLogger("nncf")  # its INFO lines name graph nodes: not the user's business
        level = nncf_log.level
        nncf_log.setLevel(max(level, logging.WARNING))
        try:  # subset_size counts the dataset's items, batches of 8 here (all of them are used)
            quantized = nncf.quantize(
                model, nncf.Dataset(batches), subset_size=len(batches), **quantize_options(nncf, model, first_fp32)
            )
        finally:
            nncf_log.setLevel(level)
        ov.save_model(quantized, str(xml), compress_to_fp16=False)
    return measure_agreement(spec, net, xml, check, prescaled)


def measure_agreement(spec: ModelSpec, net: torch.nn.Module, xml: Path, check: np.ndarray, prescaled: bool) -> float:
    """The int8 model ``xml``'s class agreement with ``net`` in fp32 on the ``check`` tiles, as this
    process runs int8 (this CPU's class, or ``runtime.exact_int8``'s)."""
    from geopix.runtime import OpenVinoNetwork

    with torch.inference_mode():
        ref = torch.cat([net.float()(torch.from_numpy(check[i : i + 8])).float() for i in range(0, len(check), 8)])
    q = OpenVinoNetwork(xml)
    got = torch.cat([q(check[i : i + 8]) for i in range(0, len(check), 8)])
    return class_agreement(spec, ref, got, prescaled)


def shipped_int8(checkpoint: str | Path, isa: str | None = None) -> Int8Model | None:
    """The int8 model geopix ships for ``checkpoint`` (its bytes), this recipe and this CPU's int8
    class (or ``isa``), or None.  Made from the developers' data (:func:`ship_int8`), so checked
    on maps tiles; a model made from the fallback tiles (the demo raster and synthetic scenes) can
    check only on those (sat2map on AVX2, before the logits stayed f32, failed the gate on maps
    val, 98.78 %, and its own check, 98.73 %; now 99.41 and 99.38 %)."""
    isa = isa or int8_isa()
    if isa is None or not SHIPPED_DIR.is_dir():
        return None
    digest = None
    for meta_path in sorted(SHIPPED_DIR.glob("*.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        if meta.get("recipe") != RECIPE or isa not in meta.get("int8_isas", ()):
            continue
        digest = digest or sha256_file(checkpoint)
        if meta.get("checkpoint_sha256") == digest:
            return _load_cached(meta_path.with_suffix(".xml"), meta_path)
    return None


def ship_int8(checkpoint: str | Path, data: Path | None = None, isas: tuple[str, ...] = ()) -> Path:
    """Make ``checkpoint``'s int8 model for the int8 classes ``isas`` (default: this CPU's) from the
    developers' data into :data:`SHIPPED_DIR` (``python -m geopix.models.quantize --ship sat2map
    [--isa vnni,amx]``); returns its graph.  Classes other than this CPU's, or several in one
    model, must be ones whose int8 arithmetic is exact (``runtime.EXACT_INT8_ISAS``: one graph,
    one recipe, the same sums): the model is then made and checked as such a CPU computes it
    (``runtime.exact_int8``), and its record says so."""
    from geopix.models.checkpoint import load_checkpoint
    from geopix.runtime import EXACT_INT8_ISAS, exact_int8

    here = int8_isa()
    isas = tuple(isas) or ((here,) if here else ())
    loaded = load_checkpoint(checkpoint)
    data, source = calibration_source(loaded.spec, data)
    if data is None or not isas:
        raise OptionError(
            "shipping an int8 model needs the developers' data (maps/train: set $GEOPIX_CALIBRATION_DATA "
            "or --data) and a CPU with int8 instructions (or --isa of an exact class: "
            f"{', '.join(EXACT_INT8_ISAS)})"
        )
    emulate = isas != (here,)
    if emulate and not set(isas) <= set(EXACT_INT8_ISAS):
        raise OptionError(
            f"--isa {','.join(isas)}: this CPU ({here or 'no int8'}) can make models only for its own "
            f"class ({here}) or for classes whose int8 sums are exact ({', '.join(EXACT_INT8_ISAS)}); "
            "make the others on a CPU of that class"
        )
    SHIPPED_DIR.mkdir(parents=True, exist_ok=True)
    xml = SHIPPED_DIR / f"{Path(checkpoint).stem}.{'-'.join(isas)}.xml"
    extra = {
        "checkpoint": Path(checkpoint).name,
        "checkpoint_sha256": sha256_file(checkpoint),
        "calibration": "developers' data: " + source.split(": ", 1)[1],
        "openvino": openvino().__version__,
        "nncf": nncf_version(),
        "int8_isas": list(isas),
        "checked": (
            f"exact int8 arithmetic (runtime.exact_int8) on a CPU of class {here}"
            if emulate
            else f"natively, on a CPU of class {here}"
        ),
    }
    with _BUILDING, exact_int8(isas[0]) if emulate else contextlib.nullcontext():
        _build_and_cache(loaded.spec, loaded.net, data, source, checkpoint, xml, xml.with_suffix(".json"), extra)
    return xml


def int8_model(checkpoint: str | Path, spec: ModelSpec, net: torch.nn.Module, data: Path | None = None) -> Int8Model:
    """The int8 model of ``checkpoint``: the shipped one (:func:`shipped_int8`) where this machine
    has not the developers' data, else the cached one (built and checked once when missing or
    unreadable)."""
    data, source = calibration_source(spec, data)
    if data is None:
        shipped = shipped_int8(checkpoint)
        if shipped is not None:
            return shipped
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    key = cache_key(checkpoint, source)
    xml, meta_path = folder / f"{key}.xml", folder / f"{key}.json"
    cached = _load_cached(xml, meta_path)
    if cached is not None:
        return cached
    with _BUILDING:
        cached = _load_cached(xml, meta_path)  # built by another thread while this one waited
        if cached is not None:
            return cached
        return _build_and_cache(spec, net, data, source, checkpoint, xml, meta_path)


def _build_and_cache(
    spec: ModelSpec,
    net: torch.nn.Module,
    data: Path | None,
    source: str,
    checkpoint: str | Path,
    xml: Path,
    meta_path: Path,
    extra: dict | None = None,
) -> Int8Model:
    folder, key = xml.parent, xml.stem
    with tempfile.TemporaryDirectory(dir=folder, prefix=f".{key}.") as tmp:
        calibrate, check = calibration_tiles(spec, data)
        tmp_xml = Path(tmp) / f"{key}.xml"
        prescaled = prescale(spec) is not None
        isa = int8_isa()
        avx2 = isa == "avx2"
        agreement = build_int8(spec, net, calibrate, check, tmp_xml, prescaled, avx2, avx2 or data is None)
        meta = {
            "checkpoint": str(checkpoint),
            "agreement": agreement,
            "check_tiles": len(check),
            "calibration": source,
            "recipe": RECIPE,
            "prescaled": prescaled,
            "int8_isa": isa,
        } | (extra or {})
        (Path(tmp) / "meta.json").write_text(json.dumps(meta, indent=1))
        # The weights first, then the graph that names them, then the record: a reader that finds
        # the record finds a whole model; one that finds no record rebuilds.
        os.replace(tmp_xml.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(tmp_xml, xml)
        os.replace(Path(tmp) / "meta.json", meta_path)
    return Int8Model(xml, agreement, len(check), meta["calibration"], prescaled)


def main(argv: list[str] | None = None) -> None:
    import argparse

    from geopix.models.registry import resolve_model

    ap = argparse.ArgumentParser(description="Make a shipped model's int8 model for a CPU int8 class.")
    ap.add_argument("--ship", required=True, help="a registry name (sat2map) or a checkpoint path")
    ap.add_argument("--data", type=Path, default=None, help="the developers' data folder (maps/, real/)")
    ap.add_argument(
        "--isa",
        default="",
        help="the int8 classes the model serves, comma-separated (default: this CPU's); others than this "
        "CPU's only where their int8 sums are exact (vnni, amx), made and checked as those CPUs compute",
    )
    args = ap.parse_args(argv)
    isas = tuple(i for i in args.isa.split(",") if i)
    xml = ship_int8(resolve_model(args.ship), args.data, isas)  # ship_int8 loads it
    print(xml.with_suffix(".json").read_text())


if __name__ == "__main__":
    main()
