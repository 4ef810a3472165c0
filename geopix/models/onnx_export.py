"""A geopix generator as an ONNX graph: for the int8 quantizer and for users without geopix.

Two graphs come from one network.  ``network_graph``: tiles in [-1, 1] → the network's output
(palette logits or tanh RGB), with BatchNorm folded into the convolutions (and, for AVX2 CPUs,
the transposed convolutions rewritten as plain ones), which is what the int8 quantizer
(``geopix.models.quantize``, OpenVINO) reads.  ``export_onnx``: a self-describing file
for anyone — 0..255 RGB in, the map's 0..255 RGB out (scaling and palette decoding inside the
graph), and the checkpoint's spec in the file's ``metadata_props`` (tile size, ground resolution,
normalisation, palette, decoding), so ONNX Runtime alone draws the same map as ``geopix render``.
"""

from __future__ import annotations

import copy
import json
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geopix.errors import OptionError
from geopix.models.checkpoint import ModelSpec
from geopix.models.decode import prescale
from geopix.models.generator import class_faces

#: ONNX opset of every graph geopix writes (ONNX Runtime 1.16+ and OpenVINO 2023+ read it).
OPSET = 17
_EXPORTING = threading.Lock()


def onnx_modules():
    """``(onnx, onnxruntime)``, or an error naming the extra that installs them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise OptionError(
            f"ONNX export needs the onnx and onnxruntime packages ({exc.name} is not installed): "
            "pip install 'geopix[onnx]'"
        ) from None
    return onnx, onnxruntime


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """A copy of ``net`` with each BatchNorm (eval statistics) folded into the convolution before it."""
    net = copy.deepcopy(net).eval().float()
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        mods = list(seq)
        for i in range(1, len(mods)):
            conv, bn = mods[i - 1], mods[i]
            if not (isinstance(bn, nn.BatchNorm2d) and isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d))):
                continue
            scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
            axis = 0 if isinstance(conv, nn.Conv2d) else 1  # ConvTranspose2d weights are (in, out, kh, kw)
            shape = [1] * conv.weight.dim()
            shape[axis] = -1
            bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.weight = nn.Parameter(conv.weight.detach() * scale.view(shape), requires_grad=False)
            conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias.detach(), requires_grad=False)
            seq[i] = nn.Identity()
    return net


class PhaseTransposed(nn.Module):
    """A ``ConvTranspose2d(kernel 4, stride 2, padding 1)`` as four 2×2 convolutions, one per output
    phase (row and column parity), interleaved by a pixel shuffle: the same sums, as plain
    convolutions.  OpenVINO has no int8 transposed convolution for AVX2 CPUs without VNNI and runs
    the U-Net's whole up-sampling half in f32 there (31 of its 40 ms per tile); with these it is int8
    (sat2map, Zen 3, 1 thread: 40.2 → 29.0 ms per tile).  Each phase pads its input rather than
    slicing one padded copy: OpenVINO folds a Pad into the convolution, but its Slice ran a
    reference kernel (11 ms per tile)."""

    #: Output phase → the transposed kernel's taps along one axis, for input offsets (-1, 0) and (0, +1).
    TAPS = ((3, 1), (2, 0))
    PADS = ((1, 0), (0, 1))  # phase 0 reads rows i-1 and i; phase 1 rows i and i+1

    def __init__(self, conv: nn.ConvTranspose2d) -> None:
        super().__init__()
        w = conv.weight.detach()  # (in, out, 4, 4)
        self.weights = nn.ParameterList(
            nn.Parameter(w[:, :, self.TAPS[a]][:, :, :, self.TAPS[b]].permute(1, 0, 2, 3).contiguous(), False)
            for a in (0, 1)
            for b in (0, 1)
        )
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach(), requires_grad=False)

    @staticmethod
    def applies(module: nn.Module) -> bool:
        return (
            isinstance(module, nn.ConvTranspose2d)
            and module.kernel_size == (4, 4)
            and module.stride == (2, 2)
            and module.padding == (1, 1)
            and module.output_padding == (0, 0)
            and module.dilation == (1, 1)
            and module.groups == 1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        phases = [
            nn.functional.conv2d(
                nn.functional.pad(x, (*self.PADS[b], *self.PADS[a])), self.weights[2 * a + b], self.bias
            )
            for a in (0, 1)
            for b in (0, 1)
        ]
        return nn.functional.pixel_shuffle(torch.stack(phases, 2).reshape(n, -1, h, w), 2)


def phase_transposed(net: nn.Module) -> nn.Module:
    """``net`` (modified in place) with each stride-2 4×4 transposed convolution as a :class:`PhaseTransposed`."""
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if PhaseTransposed.applies(child):
                setattr(parent, name, PhaseTransposed(child))
    return net


class MapGraph(nn.Module):
    """0..255 RGB (N, C, H, W) → the map's 0..255 RGB: scaling, network and decoding in one graph.

    The palette decoding is ``generator.palette_to_rgb`` written densely (``keep_class``'s clamp
    computed for every pixel rather than for the crossing ones): the same values, no data-dependent
    shapes, so any ONNX runtime can run it.
    """

    def __init__(self, spec: ModelSpec, net: nn.Module) -> None:
        super().__init__()
        from geopix.style import COLOURS

        self.net = net
        self.palette_head = spec.head == "palette"
        self.sharpness = float(spec.palette_sharpness)
        self.bias_decides = spec.palette_bias_decides and spec.palette_keep_class
        self.keep = spec.palette_keep_class
        pal = torch.tensor(spec.palette, dtype=torch.float32) if self.palette_head else torch.zeros(1, 3)
        self.register_buffer("pal", pal)
        bias = torch.tensor(spec.palette_bias or [0.0] * len(pal), dtype=torch.float32)
        self.register_buffer("bias", bias.view(1, -1, 1, 1))
        cc = torch.as_tensor(COLOURS)
        owner, normal, width, sq, offset = class_faces(pal, cc)
        self.register_buffer("cc", cc)
        self.register_buffer("sq", sq)
        self.register_buffer("owner_normal", normal[owner])  # (K, C, 3): by palette colour
        self.register_buffer("owner_offset", offset[owner])  # (K, C)
        self.register_buffer("owner_margin", 2 * width[owner])  # (K, C)
        self.register_buffer("own", nn.functional.one_hot(owner, len(cc)).bool())  # (K, C)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        out = self.net(rgb / 127.5 - 1.0)
        if not self.palette_head:
            return (out.clamp(-1, 1) + 1.0) * 127.5
        shifted = out + self.bias
        idx = shifted.argmax(1)  # N,H,W
        start = self.pal[idx]  # N,H,W,3
        if self.sharpness <= 0:
            return start.permute(0, 3, 1, 2)
        blend = out if self.bias_decides else shifted
        weights = torch.softmax(self.sharpness * blend, 1)
        target = torch.einsum("nkhw,kc->nhwc", weights, self.pal)
        if not self.keep:
            return target.permute(0, 3, 1, 2)
        dist = ((target * target).sum(-1, keepdim=True) - 2 * target @ self.cc.T + self.sq).clamp(min=0)  # N,H,W,C
        own_dist = (dist * self.own[idx]).sum(-1, keepdim=True)
        gap = dist - own_dist - self.owner_margin[idx]
        crossing = ((gap < 0) & ~self.own[idx]).any(-1)
        n, b = self.owner_normal[idx], self.owner_offset[idx]  # N,H,W,C,3 and N,H,W,C
        slack = (b - (n * start[..., None, :]).sum(-1)).clamp(min=0)
        toward = (n * (target - start)[..., None, :]).sum(-1)
        bound = torch.where(toward > 0, slack / toward.clamp(min=1e-12), torch.full_like(slack, float("inf")))
        t = torch.where(crossing, bound.amin(-1).clamp(max=1.0), torch.ones_like(crossing, dtype=torch.float32))
        return (start + t[..., None] * (target - start)).permute(0, 3, 1, 2)


def metadata(spec: ModelSpec, tile: int) -> dict[str, str]:
    """What a user of the exported file needs to know, as ``metadata_props`` (strings)."""
    return {
        "producer": "geopix",
        "geopix_version": spec.geopix_version,
        "tile_size": str(tile),
        "tile_multiple": str(spec.multiple),
        "ground_resolution_m": repr(spec.ground_resolution_m),
        "direction": spec.direction,
        "input": "image: float32 (N, 3, H, W), RGB 0..255 (bands " + ",".join(spec.band_order) + "), H and W "
        f"multiples of {spec.multiple}",
        "normalisation": f"inside the graph: {spec.input_scaling}",
        "output": "map: float32 (N, 3, H, W), RGB 0..255; round and clip to uint8",
        "input_stats": json.dumps(spec.input_stats),
        "palette": json.dumps(spec.palette),
        "decoding": json.dumps({"head": spec.head, **spec.decoding()}),
        "geopix_spec": json.dumps(spec.to_metadata()),
    }


def _export(module: nn.Module, path: Path, tile: int, in_name: str, out_name: str) -> None:
    x = torch.zeros(1, module_inputs(module), tile, tile)
    axes = {0: "n", 2: "h", 3: "w"}
    # torch's exporter keeps global state (GLOBALS.in_onnx_export) and refuses a second export
    # running in another thread; renders on threads may each build an int8 model.
    with _EXPORTING, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            module,
            (x,),
            str(path),
            input_names=[in_name],
            output_names=[out_name],
            dynamic_axes={in_name: axes, out_name: axes},
            opset_version=OPSET,
            dynamo=False,
        )


def module_inputs(module: nn.Module) -> int:
    first = next(m for m in module.modules() if isinstance(m, nn.Conv2d))
    return first.in_channels


class Prescaled(nn.Module):
    """``(net(x) + bias) · scale``: the decoder's first step (``decode.prescale``) as the graph's
    last, where a runtime fuses it into the last layer."""

    def __init__(self, net: nn.Module, scale: float, bias: list[float]) -> None:
        super().__init__()
        self.net = net
        self.scale = scale
        self.register_buffer("bias", torch.tensor(bias, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.net(x) + self.bias) * self.scale


def network_graph(
    spec: ModelSpec, net: nn.Module, path: str | Path, prescaled: bool = False, phases: bool = False
) -> Path:
    """The network alone (tiles in [-1, 1] → logits), BatchNorm folded: what int8 quantizes.
    ``prescaled``: its logits as ``decode.prescale`` leaves them (the spec must allow it).
    ``phases``: transposed convolutions as :class:`PhaseTransposed`.  Written by torch alone (no
    ``onnx`` package needed)."""
    path = Path(path)
    module = fold_batchnorm(net)
    if phases:
        module = phase_transposed(module)
    if prescaled:
        factors = prescale(spec)
        if factors is None:
            raise ValueError(f"a {spec.head}-head model with these decoding options has no prescaled logits")
        module = Prescaled(module, *factors)
    _export(module, path, spec.multiple, "image", "logits")
    return path


def export_onnx(spec: ModelSpec, net: nn.Module, path: str | Path, tile: int = 256) -> Path:
    """The self-describing map model (see the module docstring), written atomically."""
    onnx, _ = onnx_modules()
    path = Path(path)
    if tile % spec.multiple:
        raise OptionError(f"--tile-size {tile} must be a multiple of {spec.multiple} for this network")
    tmp = path.with_name(f".{path.name}.partial")
    try:
        _export(MapGraph(spec, fold_batchnorm(net)).eval(), tmp, tile, "image", "map")
        model = onnx.load(str(tmp))
        onnx.helper.set_model_props(model, metadata(spec, tile))
        model.doc_string = f"geopix {spec.direction} map model: RGB 0..255 in, map RGB 0..255 out; see metadata_props"
        onnx.save(model, str(tmp))
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def run_exported(path: str | Path, rgb: np.ndarray) -> np.ndarray:
    """Run an exported file on (N, 3, H, W) 0..255 RGB with ONNX Runtime alone (as the docs show)."""
    _, ort = onnx_modules()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["map"], {"image": rgb.astype(np.float32)})[0]
