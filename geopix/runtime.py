"""OpenVINO on the CPU: runs a geopix network quantized to int8 (``--precision int8``).

Chosen by measurement over ONNX Runtime (``benchmarks/bench_runtimes.py``): ONNX Runtime's CPU
provider has no int8 transposed convolution, so half of the U-Net stays fp32 and int8 is barely
faster than fp32 there; OpenVINO runs the whole network in int8.  A compiled model takes tiles in
[-1, 1] and returns the network's output as a torch tensor, so the decoding after it is the one
every precision uses.  Threads: the process's torch setting (``geopix.process`` sets it per
worker); each thread of a worker gets its own infer request on the one compiled model.
"""

from __future__ import annotations

import logging
import platform
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from geopix.errors import DeviceError, OptionError

log = logging.getLogger(__name__)

#: The instruction classes OpenVINO's int8 convolutions run on, best first, and the CPU flags
#: that name them: dot products (AMX, VNNI, Arm's dotprod), else x86's AVX2, whose 16-bit
#: multiply-adds still beat fp32 (sat2map on a Zen 3, 2 threads: see docs/scaling.md).
INT8_ISAS = {
    "x86_64": (("amx", ("amx_int8",)), ("vnni", ("avx512_vnni", "avx_vnni")), ("avx2", ("avx2",))),
    "aarch64": (("dotprod", ("asimddp",)),),
}
#: Classes whose int8 dot products sum exactly in 32 bits (no saturating 16-bit pairs, as AVX2
#: has): any CPU can compute what they compute (:func:`exact_int8`), and so check their models.
EXACT_INT8_ISAS = ("amx", "vnni")
#: Set by :func:`exact_int8`: the int8 class this process acts as.
_EXACT_AS: str | None = None


def openvino():
    """The ``openvino`` module, or an error naming the extra that installs it."""
    try:
        _decline_openvino_telemetry()
        import openvino
    except ImportError:
        raise OptionError(
            "--precision int8 runs on OpenVINO, which is not installed: pip install 'geopix[int8]' "
            "(openvino and nncf), or use --precision fp32 or bf16"
        ) from None
    return openvino


def _decline_openvino_telemetry() -> None:
    """Keep ``import openvino`` from reporting to Google Analytics.

    OpenVINO's import sends a usage event (``openvino-telemetry``, a dependency of ``openvino``)
    unless ``opt_in_out --opt_out`` was run: every render forked a process to post it.  geopix
    sends nothing nobody asked for, often on closed networks.  Telemetry is one instance per
    process: made here first, with the opt-in dialog's rule (nothing is sent without consent),
    OpenVINO's import reuses it.  A user who opted in (``opt_in_out --opt_in``) is left as chosen.
    """
    if "openvino" in sys.modules:
        return
    try:
        from openvino_telemetry import Telemetry
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:
        return
    try:
        if OptInChecker().check(enable_opt_in_dialog=False) == ConsentCheckResult.ACCEPTED:
            return
        Telemetry(app_name="OpenVINO", app_version="", tid="", backend="ga4", enable_opt_in_dialog=True)
    except Exception:  # another version's API: OpenVINO itself must still import
        log.debug("could not decline OpenVINO's telemetry", exc_info=True)


def has_openvino() -> bool:
    try:
        openvino()
    except OptionError:
        return False
    return True


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def _machine() -> str:
    return platform.machine().lower().replace("amd64", "x86_64").replace("arm64", "aarch64")


def int8_isa() -> str | None:
    """The instruction class this CPU runs int8 on (``amx``, ``vnni``, ``dotprod``, ``avx2``), or
    None.  Part of an int8 model's cache key: the classes run different kernels (AVX2 has no int8
    transposed convolution in OpenVINO, so geopix gives it another graph, ``quantize``), and one
    model's class agreement with fp32 differed between them (sat2map: 99.16 % with VNNI, 98.87 %
    on AVX2), so each class gets its own model, checked where it runs (or by :func:`exact_int8`)."""
    if _EXACT_AS is not None:
        return _EXACT_AS
    flags = cpu_flags()
    for name, wanted in INT8_ISAS.get(_machine(), ()):
        if flags & set(wanted):
            return name
    return None


@contextmanager
def exact_int8(isa: str) -> Iterator[None]:
    """Act as a CPU of int8 class ``isa`` (one of :data:`EXACT_INT8_ISAS`) whose int8 arithmetic
    is exact, on any CPU: :func:`int8_isa` says ``isa``, so models are made with its graph and
    recipe, and :class:`OpenVinoNetwork` runs them without OpenVINO's low-precision
    transformations: each FakeQuantize is computed as written, in f32, which is what VNNI's and
    AMX's int32 sums of int8 products give (a quantized convolution: within 1e-5 of a float64
    reference, where the AVX2 kernels were 2.3 off).  On a Zen 3 this reproduced the class
    agreement a Zen 4 with VNNI had measured natively for sat2map's int8 model (99.17 / 99.24 %
    against 99.16 / 99.24 %).  For the developers (``quantize --ship``, the gate benchmark): it is
    slower than fp32, and process-wide (Dask's task threads must see it), so not for renders."""
    global _EXACT_AS
    if isa not in EXACT_INT8_ISAS:
        raise OptionError(
            f"int8 class {isa!r} cannot be computed exactly elsewhere (its CPUs round or saturate as only "
            f"they do): use one of {', '.join(EXACT_INT8_ISAS)}, or run this on a CPU of class {isa!r}"
        )
    before, _EXACT_AS = _EXACT_AS, isa
    try:
        yield
    finally:
        _EXACT_AS = before


def native_int8() -> bool:
    """Can this CPU run int8 faster than fp32 (see :data:`INT8_ISAS`)?"""
    return int8_isa() is not None


def check_int8(device: torch.device) -> None:
    """Explain why int8 cannot run here: no OpenVINO, a GPU device, or a CPU without dot products."""
    if device.type != "cpu":
        raise DeviceError(f"--precision int8 runs on the CPU only; use --device cpu, or bf16/fp16 on {device}")
    openvino()
    if not native_int8():
        wanted = ", ".join(f for isas in INT8_ISAS.values() for _, flags in isas for f in flags)
        raise DeviceError(
            f"--precision int8 needs a CPU with int8 instructions ({wanted}); this one "
            f"({platform.machine()}) has none, so int8 would not be faster: use --precision fp32"
        )


#: The side of the warm-up tile: a multiple of every geopix U-Net's input multiple.
WARM_SIDE = 256
_WARMING = threading.Lock()


class OpenVinoNetwork:
    """``net(tiles)``: (N, C, H, W) float32 in [-1, 1] → the network's (N, K, H, W) output (torch).

    ``streams``: how many threads call it at once (a Dask worker's task threads).  Each gets an
    OpenVINO stream of ``threads`` threads; with one stream the calls queue behind each other
    (measured, sat2map int8, 2 cores, two callers: 11.8 ms per tile with one stream of one
    thread, 7.5 with two)."""

    def __init__(self, path: str | Path, threads: int | None = None, streams: int = 1) -> None:
        ov = openvino()
        threads = threads or torch.get_num_threads()
        config: dict[str, object] = {
            # fp32 between the int8 layers, also on CPUs with bf16: the map must not move with the CPU.
            "INFERENCE_PRECISION_HINT": "f32",
        }
        if _EXACT_AS is not None:  # exact_int8: OpenVINO's internal switch (an unknown key is an error)
            config["LP_TRANSFORMS_MODE"] = False
        if streams > 1:
            config |= {"NUM_STREAMS": streams, "INFERENCE_NUM_THREADS": threads * streams}
        else:
            config |= {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        self.path = Path(path)
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self._local = threading.local()
        # One inference now, by one thread: OpenVINO's Python bindings initialise function-local
        # statics on the first call, and two task threads making their first calls at once
        # deadlocked there (one held the initialiser's guard, the other the GIL; seen in CI).
        channels = self.compiled.input(0).get_partial_shape()[1]
        with _WARMING:
            self(np.zeros((1, channels.get_length() if channels.is_static else 3, WARM_SIDE, WARM_SIDE), np.float32))

    def __call__(self, tiles: np.ndarray) -> torch.Tensor:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        request.infer([np.ascontiguousarray(tiles, dtype=np.float32)])
        return torch.from_numpy(request.get_output_tensor(0).data.copy())
