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
from geopix.models.generator import palette_to_rgb
from geopix.style import COLOURS


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
    """``auto`` → ``bf16`` where it is native (see :func:`native_bf16`), else ``fp32``."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


class Predictor:
    """Runs a generator on float tiles in [-1, 1] and returns RGB floats in 0..255."""

    def __init__(
        self,
        spec: ModelSpec,
        net: nn.Module,
        device: torch.device | str = "cpu",
        channels_last: bool = True,
        precision: str = "fp32",
    ) -> None:
        self.spec = spec
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.autocast_dtype = _DTYPES[self.precision]
        self.net = net.to(self.device).eval()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.palette = (
            torch.tensor(spec.palette, dtype=torch.float32, device=self.device) if spec.head == "palette" else None
        )
        self.class_colours = (
            torch.as_tensor(COLOURS, device=self.device) if spec.head == "palette" and spec.palette_keep_class else None
        )

    @classmethod
    def from_loaded(
        cls, model: LoadedModel, device: str = "auto", channels_last: bool = True, precision: str = "fp32"
    ) -> Predictor:
        return cls(model.spec, model.net, resolve_device(device), channels_last, precision)

    @torch.inference_mode()
    def predict(self, tiles: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 in [-1, 1], H and W multiples of ``spec.multiple`` → (N, 3, H, W) 0..255."""
        m = self.spec.multiple
        if tiles.shape[-1] % m or tiles.shape[-2] % m:
            raise ValueError(f"tile sides {tiles.shape[-2:]} must be multiples of {m}")
        x = torch.from_numpy(np.ascontiguousarray(tiles, dtype=np.float32)).to(self.device)
        x = x.contiguous(memory_format=self.memory_format)
        if self.autocast_dtype is None:
            out = self.net(x)
        else:
            # Autocast runs convolutions in bf16/fp16; the colour decoding below is fp32.
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                out = self.net(x)
        out = out.float()
        if self.palette is not None:
            rgb = palette_to_rgb(
                out,
                self.palette,
                self.spec.palette_sharpness,
                self.spec.palette_bias,
                self.class_colours,
                bias_decides=self.spec.palette_bias_decides,
            )
        else:
            rgb = (out.clamp(-1, 1) + 1.0) * 127.5
        return rgb.cpu().numpy()

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
