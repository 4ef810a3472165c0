"""Batches of tiles → predicted map pixels on one device.  Knows nothing of Dask or files.

Inference is a pure function of the pixels: the network is in eval mode (BatchNorm uses
its running statistics, dropout is off), so the same 256×256 input gives the same output
on every tile, every worker and every run.  That is what makes seams blendable away.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from geopix.errors import DeviceError
from geopix.models.checkpoint import LoadedModel, ModelSpec
from geopix.models.decode import PaletteDecoder
from geopix.models.generator import palette_to_rgb

#: Tiles per OpenVINO int8 call, at most.  Measured (sat2map, 2 cores, two task threads, network
#: plus decoding, 1296 real tiles, two interleaved rounds): 7.6 ms per tile at 1, 6.6–6.9 at 2,
#: 6.7–6.9 at 8.  Calls have one fixed shape, so a block's last call is padded: at 8 a 1024²
#: block (about 21 tiles) ran 24 tiles, 16 % of the network's time spent on padding; at 2, 2 %.
INT8_CALL_TILES = 2


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when torch sees a GPU; an unavailable explicit choice is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"--device {name} asked for CUDA but torch sees no GPU; use --device cpu or auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise DeviceError(f"--device {name!r} must be auto, cpu, cuda or cuda:N")
    return torch.device(name)


_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def native_bf16(device: torch.device | str) -> bool:
    """Does this device run bf16 convolutions natively (faster than fp32)?

    CUDA: compute capability 8.0+ (Ampere and later).  CPU: oneDNN's check for AVX512-BF16
    or AMX; without them bf16 is emulated and slower than fp32.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and torch.backends.mkldnn.is_available()
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``auto`` → ``bf16`` where it is native (see :func:`native_bf16`), else ``fp32``.

    int8 depends on the model too (its quality gate): :func:`int8_ready` decides it first."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def int8_capable(device: torch.device | str) -> bool:
    """Could this process run int8 fast: a CPU device with int8 instructions (``runtime.int8_isa``:
    VNNI, AMX, Arm dotprod, or AVX2) and OpenVINO installed?"""
    from geopix.runtime import has_openvino, native_int8

    return torch.device(device).type == "cpu" and native_int8() and has_openvino()


def gated_int8(
    model_path: str, device: torch.device | str = "cpu", loaded: LoadedModel | None = None, *, here: bool = True
):
    """The int8 model ``auto`` picks for this model here, or None: capable (:func:`int8_capable`)
    and its int8 model (built and cached once, ``geopix.models.quantize``) passes the
    class-agreement gate.  Measured (benchmarks/bench_runtimes.py), int8 beats bf16 and fp32 on a
    Zen 4 CPU with VNNI, and fp32 on a Zen 3 with AVX2 alone.  ``here=False``: other processes run
    it (a cluster's workers, each checked there); this one only measures the gate, which needs
    OpenVINO but not a fast CPU."""
    from geopix.runtime import has_openvino

    if not (int8_capable(device) if here else torch.device(device).type == "cpu" and has_openvino()):
        return None
    from geopix.models.checkpoint import load_checkpoint
    from geopix.models.quantize import int8_model

    loaded = loaded or load_checkpoint(model_path)
    model = int8_model(model_path, loaded.spec, loaded.net)
    return model if model.passes else None


def int8_ready(
    model_path: str, device: torch.device | str = "cpu", loaded: LoadedModel | None = None, *, here: bool = True
) -> bool:
    """Should ``auto`` pick int8 for this model here, or on capable workers (:func:`gated_int8`)."""
    return gated_int8(model_path, device, loaded, here=here) is not None


class Predictor:
    """Runs a generator on float tiles in [-1, 1] and returns RGB floats in 0..255."""

    def __init__(
        self,
        spec: ModelSpec,
        net: nn.Module,
        device: torch.device | str = "cpu",
        channels_last: bool = True,
        precision: str = "fp32",
        checkpoint: str = "",
        callers: int = 1,
    ) -> None:
        """``checkpoint``: the file ``net`` came from; int8 needs it (its cache key) and builds or
        loads the quantized model then (``geopix.models.quantize``).  ``callers``: how many
        threads will call :meth:`predict` at once (int8 runs that many at a time)."""
        self.spec = spec
        self.device = torch.device(device)
        gated = None  # auto's int8 model, looked up once: int8 below reuses it
        if precision == "auto" and checkpoint:
            gated = gated_int8(checkpoint, self.device, LoadedModel(spec, net))
        if gated is not None:
            precision = "int8"  # predict, info, serve: auto as render resolves it (cluster_precision)
        self.precision = resolve_precision(precision, self.device)
        self.int8 = None
        if self.precision == "int8":
            from geopix.models.quantize import int8_model
            from geopix.runtime import OpenVinoNetwork, check_int8

            check_int8(self.device)
            if not checkpoint:
                raise DeviceError("--precision int8 needs the checkpoint file (its cache key); load the model by path")
            self.int8 = gated or int8_model(checkpoint, spec, net)
            self.runner = OpenVinoNetwork(self.int8.path, streams=callers)
        self.autocast_dtype = _DTYPES.get(self.precision)
        self.net = net.to(self.device).eval()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        # The palette decoding's per-model constants, computed once (on the CPU: the GPU path
        # keeps palette_to_rgb on the device).
        prescaled = self.int8 is not None and self.int8.prescaled  # the int8 graph did the first step
        self.decoder = PaletteDecoder.for_spec(spec, prescaled) if spec.head == "palette" else None

    @classmethod
    def from_loaded(
        cls,
        model: LoadedModel,
        device: str = "auto",
        channels_last: bool = True,
        precision: str = "fp32",
        callers: int = 1,
    ) -> Predictor:
        return cls(model.spec, model.net, resolve_device(device), channels_last, precision, model.path, callers)

    def tiles_per_call(self, batch_size: int) -> int:
        """The fixed number of tiles each call of :meth:`predict` gets (a last call padded with
        zeros): ``batch_size``, at most ``INT8_CALL_TILES`` at int8.  One shape for the whole
        render: the same kernels for every tile, whatever the chunking."""
        return min(batch_size, INT8_CALL_TILES) if self.int8 is not None else batch_size

    @torch.inference_mode()
    def predict(self, tiles: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 in [-1, 1], H and W multiples of ``spec.multiple`` → (N, 3, H, W) 0..255."""
        m = self.spec.multiple
        if tiles.shape[-1] % m or tiles.shape[-2] % m:
            raise ValueError(f"tile sides {tiles.shape[-2:]} must be multiples of {m}")
        out = self.logits(tiles)
        if self.decoder is not None:
            rgb = self.decoder(out.cpu()) if self.device.type == "cpu" else self._decode_on_device(out)
        else:
            rgb = (out.clamp(-1, 1) + 1.0) * 127.5
        return rgb.cpu().numpy()

    @torch.inference_mode()
    def logits(self, tiles: np.ndarray) -> torch.Tensor:
        """The network's fp32 output (palette logits or tanh RGB) for (N, C, H, W) tiles in [-1, 1];
        from a prescaled int8 graph, the logits as ``decode.prescale`` leaves them."""
        if self.int8 is not None:
            return self.runner(tiles)
        x = torch.from_numpy(np.ascontiguousarray(tiles, dtype=np.float32)).to(self.device)
        x = x.contiguous(memory_format=self.memory_format)
        if self.autocast_dtype is None:
            out = self.net(x)
        else:
            # Autocast runs convolutions in bf16/fp16; the colour decoding is fp32.
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                out = self.net(x)
        return out.float()

    def _decode_on_device(self, out: torch.Tensor) -> torch.Tensor:
        from geopix.style import COLOURS

        d = self.decoder
        classes = torch.as_tensor(COLOURS, device=out.device) if d.keep else None
        return palette_to_rgb(
            out, d.pal.to(out.device), d.sharpness, self.spec.palette_bias, classes, bias_decides=d.bias_decides
        )

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 → (N, H, W, 3) uint8; pads (reflect) to the network's multiple."""
        _, h, w, _ = images.shape
        m = self.spec.multiple
        ph, pw = (-h) % m, (-w) % m
        x = images.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0
        if ph or pw:
            x = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="reflect" if min(h, w) > max(ph, pw) else "edge")
        y = self.predict(x)[:, :, :h, :w]
        return np.clip(np.rint(y), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
