"""Which runtime runs the generator fastest on this CPU: torch, ONNX Runtime, OpenVINO; fp32, bf16, int8.

Per 256² tile at batch 8 (batch 1 for the reference loop's row), the network alone and with the
palette decoding after it, plus the decoding alone (``generator.palette_to_rgb`` as geopix had it,
and ``decode.PaletteDecoder``).  Every candidate runs once per round, the rounds interleaved, and
the minimum over rounds is printed: wall time and this process's CPU time (on a shared machine
the CPU time is the steadier of the two; compare ratios within one run, never across runs).
The class agreement with torch fp32 on the same tiles is printed beside each.

    python benchmarks/bench_runtimes.py [--model sat2map] [--threads 1] [--rounds 5]
                                        [--geotiffs DIR] [--json out.json]

ONNX Runtime int8 is its static QDQ quantization (uint8 activations, per-channel int8 weights,
min/max) on the same calibration tiles as geopix's OpenVINO int8 (``geopix.models.quantize``).
Runtimes that are not installed are skipped (``pip install onnxruntime openvino nncf``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "geotiffs"
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "asimddp")


def installed_mib(dist: str) -> float | None:
    """Installed size of a distribution (its files on disk), MiB."""
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    return round(sum((f.size or 0) for f in files) / 2**20, 1)


def test_tiles(spec, folder: Path, n: int = 8) -> tuple[np.ndarray, str]:
    from bench_precision import real_tiles

    if folder.is_dir():
        tiles = real_tiles(spec.ground_resolution_m, spec, folder=folder)
        if len(tiles) >= n:
            return tiles[:: max(1, len(tiles) // n)][:n], f"{n} real tiles from {folder}"
    from geopix.models.quantize import _synthetic_tiles

    return np.stack(_synthetic_tiles(spec, n)), f"{n} synthetic scenes ({folder} absent)"


def candidates(loaded, tiles: np.ndarray, threads: int, tmp: Path) -> dict[str, Callable[[np.ndarray], torch.Tensor]]:
    """name → function of a (N, 3, 256, 256) batch returning the network's fp32 output."""
    from geopix.models.onnx_export import network_graph

    net = loaded.net.eval()
    net_cl = __import__("copy").deepcopy(net).to(memory_format=torch.channels_last)
    out: dict[str, Callable] = {}

    def torch_run(model, cl: bool, dtype=None):
        def run(x: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(x)
            t = t.contiguous(memory_format=torch.channels_last) if cl else t
            with torch.inference_mode():
                if dtype is None:
                    return model(t).float()
                with torch.autocast("cpu", dtype=dtype):
                    return model(t).float()

        return run

    out["torch fp32 batch 1 (reference loop)"] = torch_run(net, False)
    out["torch fp32 channels_last"] = torch_run(net_cl, True)
    out["torch bf16 autocast"] = torch_run(net_cl, True, torch.bfloat16)
    fp32_onnx = network_graph(loaded.spec, net, tmp / "fp32.onnx")
    from geopix.models.quantize import calibration_tiles

    calibrate, _ = calibration_tiles(loaded.spec)
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        class Reader:
            def __init__(self) -> None:
                self.it = iter([calibrate[i : i + 8] for i in range(0, len(calibrate), 8)])

            def get_next(self):
                b = next(self.it, None)
                return None if b is None else {"image": b}

        q = tmp / "ort_int8.onnx"
        quantize_static(
            str(fp32_onnx), str(q), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, per_channel=True, calibrate_method=CalibrationMethod.MinMax,
        )  # fmt: skip
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        for name, path in (("ONNX Runtime fp32", fp32_onnx), ("ONNX Runtime int8 (QDQ)", q)):
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            out[name] = lambda x, s=sess: torch.from_numpy(s.run(None, {"image": x})[0])
    except ImportError:
        print("onnxruntime not installed: its rows are skipped")
    try:
        import openvino as ov

        from geopix.models.quantize import int8_model
        from geopix.runtime import OpenVinoNetwork

        core = ov.Core()
        cfg = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        f32 = core.compile_model(str(fp32_onnx), "CPU", cfg)
        out["OpenVINO f32"] = lambda x: torch.from_numpy(f32(x)[0].copy())
        q = int8_model(loaded.path, loaded.spec, net)
        int8 = OpenVinoNetwork(q.path, threads)
        int8.prescaled = q.prescaled  # its logits need the prescaled decoder (decode.prescale)
        out["OpenVINO int8 (geopix --precision int8)"] = int8
    except ImportError:
        print("openvino/nncf not installed: their rows are skipped")
    return out


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sat2map")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--geotiffs", type=Path, default=SHARED)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    from geopix.process import configure_process

    # As a render's processes run: glibc keeps freed multi-MB buffers (decoded maps, logits) on
    # the heap instead of unmapping and page-faulting them again at every call.
    configure_process(args.threads)

    from geopix.models.decode import PaletteDecoder
    from geopix.models.generator import palette_to_rgb
    from geopix.models.quantize import class_agreement
    from geopix.models.registry import load_model
    from geopix.runtime import cpu_flags
    from geopix.style import COLOURS

    loaded = load_model(args.model)
    spec = loaded.spec
    tiles, what = test_tiles(spec, args.geotiffs)
    flags = sorted(cpu_flags() & set(FLAGS))
    env = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "flags": flags,
        "threads": args.threads,
        "torch": torch.__version__,
        "installed_mib": {d: installed_mib(d) for d in ("torch", "onnxruntime", "onnx", "openvino", "nncf")},
    }
    with contextlib.suppress(OSError, StopIteration):
        env["cpu"] = next(
            ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln
        )
    print(json.dumps(env))
    print(f"tiles: {what}; model {args.model}; {args.threads} thread(s); min of {args.rounds} interleaved rounds")

    decoder = PaletteDecoder.for_spec(spec) if spec.head == "palette" else None
    pal = torch.tensor(spec.palette, dtype=torch.float32)
    cc = torch.as_tensor(COLOURS) if spec.palette_keep_class else None

    def old_decode(y: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return palette_to_rgb(y, pal, spec.palette_sharpness, spec.palette_bias, cc,
                                  bias_decides=spec.palette_bias_decides)  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        runs = candidates(loaded, tiles, args.threads, Path(tmp))
        ref = runs["torch fp32 channels_last"](tiles)
        best: dict[str, dict[str, float]] = {name: {} for name in runs}
        decoders = {
            name: PaletteDecoder.for_spec(spec, True) for name, run in runs.items() if getattr(run, "prescaled", False)
        }
        int8_logits = next((run(tiles) for name, run in runs.items() if name in decoders), None)
        alone = {"decode: palette_to_rgb (before)": (old_decode, ref), "decode: PaletteDecoder": (decoder, ref)}
        if int8_logits is not None:
            alone["decode: PaletteDecoder, prescaled (int8)"] = (next(iter(decoders.values())), int8_logits)
        for name in alone:
            best[name] = {}
        for _ in range(args.rounds):
            for name, run in runs.items():
                if "batch 1" in name:
                    wall = cpu = 0.0
                    for i in range(len(tiles)):
                        w, c = timed(lambda i=i, run=run: run(tiles[i : i + 1]))
                        wall, cpu = wall + w, cpu + c
                    net = (wall, cpu)
                    both = net
                else:
                    net = timed(lambda run=run: run(tiles))
                    dec = decoders.get(name, decoder)
                    both = timed(lambda run=run, dec=dec: dec(run(tiles))) if decoder else net
                row = best[name]
                for key, v in (("net_wall", net[0]), ("net_cpu", net[1]), ("dec_wall", both[0]), ("dec_cpu", both[1])):
                    row[key] = min(row.get(key, 1e9), v / len(tiles) * 1e3)
            if decoder is not None:
                for name, (fn, logits) in alone.items():
                    w, c = timed(lambda fn=fn, logits=logits: fn(logits))
                    row = best[name]
                    row["net_wall"] = min(row.get("net_wall", 1e9), w / len(tiles) * 1e3)
                    row["net_cpu"] = min(row.get("net_cpu", 1e9), c / len(tiles) * 1e3)
        base = best["torch fp32 batch 1 (reference loop)"]["net_cpu"]
        print(
            f"{'how':44s} {'net ms/tile (wall | cpu)':>26s} {'+decoding (wall | cpu)':>24s} "
            f"{'x ref (cpu)':>11s} {'agree':>7s}"
        )
        for name, row in best.items():
            agree = ""
            if name in runs and "batch 1" not in name:
                row["agreement"] = class_agreement(spec, ref, runs[name](tiles), name in decoders)
                agree = f"{100 * row['agreement']:.2f}%"
            dec = f"{row['dec_wall']:8.2f} | {row['dec_cpu']:7.2f}" if "dec_wall" in row else "-"
            ratio = f"{base / row['net_cpu']:.2f}" if name in runs else ""
            print(f"{name:44s} {row['net_wall']:14.2f} | {row['net_cpu']:7.2f}   {dec:>22s} {ratio:>11s} {agree:>7s}")
        for name in decoders:  # the target: decoding at most 15 % of the int8 network's time
            share = best["decode: PaletteDecoder, prescaled (int8)"]["net_cpu"] / best[name]["net_cpu"]
            print(f"decoding / int8 network (cpu): {100 * share:.1f} %")
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "tiles": what, "ms_per_tile": best}, indent=1))


if __name__ == "__main__":
    main()
