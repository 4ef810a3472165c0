"""Self-describing checkpoints: save, load, and import the authors' ``.pth`` files.

Our format is a safetensors file whose string metadata carries everything needed to
rebuild and use the network (architecture, norm, head and palette, direction, ground
resolution, input scaling, geopix version), so loading needs no flags.  Nothing is ever
unpickled: ``.pth`` files go through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from geopix import __version__
from geopix.errors import CheckpointError
from geopix.models.generator import HEADS, NORMS, UnetGenerator
from geopix.output import written_whole
from geopix.style import CLASS_NAMES, palette_classes

FORMAT = "geopix-generator"
FORMAT_VERSION = "1"
#: The official recipe resizes the maps' 600 px (0.90 m/px, see docs/model-card) to 286 px.
OFFICIAL_GROUND_RESOLUTION_M = 600 / 286 * 0.9


#: The ModelSpec fields of the palette decoding (see ModelSpec.decoding).
DECODING_FIELDS = ("palette_sharpness", "palette_bias", "palette_keep_class", "palette_bias_decides")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything about a generator except its weights."""

    ngf: int = 64
    num_downs: int = 8
    norm: str = "batch"
    head: str = "tanh"
    palette: tuple[tuple[int, int, int], ...] = ()
    input_nc: int = 3
    output_nc: int = 3
    use_dropout: bool = True
    direction: str = "AtoB"
    ground_resolution_m: float = OFFICIAL_GROUND_RESOLUTION_M
    band_order: tuple[str, ...] = ("red", "green", "blue")
    #: uint8 input is mapped to [-1, 1] by x / 127.5 - 1 (uint16: see read.py).
    input_scaling: str = "x/127.5-1"
    geopix_version: str = __version__
    source: str = "geopix"
    training: str = "{}"  # JSON blob: recipe, epochs, metrics; informative only
    #: Per-band (mean, std) of the training inputs on the 0..255 scale; render can match a
    #: raster's colours to them (imagery from another sensor or season looks very different).
    input_stats: tuple[tuple[float, float], ...] = ()
    #: Palette head decoding: 0 = argmax; s > 0 = colours weighted by softmax(s · logits).
    palette_sharpness: float = 0.0
    #: Palette head decoding: added to each colour's logit before decoding (empty = none).  A
    #: prior shift (logit adjustment): real imagery holds far more buildings than the New York
    #: maps the head was trained on, so a building logit offset recovers recall there.
    palette_bias: tuple[float, ...] = ()
    #: Palette decoding: blends (sharpness > 0) never cross into another style class's colour,
    #: so each pixel reads as the class of its most likely colour (geopix.style.classify).
    palette_keep_class: bool = False
    #: Palette decoding with ``palette_keep_class``: ``palette_bias`` chooses each pixel's class
    #: only, and its colour blends the unshifted logits within that class.  A pixel the offset
    #: moved across is drawn just inside its new class, not in the class's full colour, so a prior
    #: shift costs about half the squared error on maps like the training ones.
    palette_bias_decides: bool = False

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise CheckpointError(f"checkpoint norm {self.norm!r} is not one of {NORMS}")
        if self.head not in HEADS:
            raise CheckpointError(f"checkpoint head {self.head!r} is not one of {HEADS}")
        if self.head == "palette" and len(self.palette) != self.output_nc:
            raise CheckpointError(f"palette head has {self.output_nc} outputs but {len(self.palette)} palette colours")
        if self.palette_bias and len(self.palette_bias) != len(self.palette):
            raise CheckpointError(
                f"palette_bias has {len(self.palette_bias)} values for {len(self.palette)} palette colours"
            )
        if self.palette_bias_decides and not self.palette_keep_class:
            raise CheckpointError(
                "palette_bias_decides needs palette_keep_class: without it a blend is not kept in the "
                "class the offsets chose (export with --keep-class, or without --class-bias-decides)"
            )
        if self.direction not in ("AtoB", "BtoA"):
            raise CheckpointError(f"direction {self.direction!r} must be 'AtoB' or 'BtoA'")

    @property
    def multiple(self) -> int:
        return 2**self.num_downs

    def decoding(self) -> dict[str, Any]:
        """How the palette logits become colours: the fields a fine-tune keeps from the model it
        starts from (it changes the weights, not the decoding), named once so none is left behind."""
        return {name: getattr(self, name) for name in DECODING_FIELDS}

    def build(self) -> UnetGenerator:
        return UnetGenerator(
            input_nc=self.input_nc,
            output_nc=self.output_nc,
            num_downs=self.num_downs,
            ngf=self.ngf,
            norm=self.norm,
            use_dropout=self.use_dropout,
            head=self.head,
        )

    def summary(self) -> dict[str, object]:
        """What the checkpoint says of itself, for people (``geopix info MODEL``): the metadata that
        changes a render, with the decoding's offsets by style class rather than by colour."""
        out: dict[str, object] = {
            "direction": self.direction,
            "architecture": f"unet, {self.num_downs} down-samplings, ngf {self.ngf}, {self.norm} norm, "
            f"{'dropout in training' if self.use_dropout else 'no dropout'}, {self.head} head",
            "ground_resolution_m": self.ground_resolution_m,
            "bands": list(self.band_order),
            "input_scaling": self.input_scaling,
            "colour_matching": "to its training photos' per-band mean/std" if self.input_stats else "none",
        }
        if self.head == "palette":
            offsets: dict[str, float] = {}
            if any(self.palette_bias):
                for cls, bias in zip(palette_classes(self.palette), self.palette_bias, strict=True):
                    if bias:
                        offsets.setdefault(CLASS_NAMES[cls], float(bias))
                offsets = {name: offsets[name] for name in CLASS_NAMES if name in offsets}
            out |= {
                "palette_colours": len(self.palette),
                "palette_sharpness": self.palette_sharpness,
                "keep_class": self.palette_keep_class,
                "class_offsets": offsets,
            }
            if offsets:
                out["class_offsets_affect"] = "the class only" if self.palette_bias_decides else "class and colour"
        training = json.loads(self.training or "{}")
        for key in ("recipe", "epochs", "averaged_with"):
            if training.get(key) is not None:
                out[f"training_{key}"] = training[key]
        note = training.get("note")
        metrics = note.get("metrics") if isinstance(note, dict) else None
        if metrics:
            out["training_note_metrics"] = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
        out["written_by"] = f"{self.source} {self.geopix_version}"
        return out

    def to_metadata(self) -> dict[str, str]:
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION}
        for f in dataclasses.fields(self):
            meta[f.name] = json.dumps(getattr(self, f.name))
        return meta

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> ModelSpec:
        known = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, raw in meta.items():
            if key in known:
                value = json.loads(raw)
                if key in ("palette",):
                    value = tuple(tuple(int(c) for c in rgb) for rgb in value)
                elif key == "band_order":
                    value = tuple(value)
                elif key == "palette_bias":
                    value = tuple(float(b) for b in value)
                elif key == "input_stats":
                    value = tuple((float(m), float(s)) for m, s in value)
                kwargs[key] = value
        return cls(**kwargs)


@dataclass(frozen=True)
class LoadedModel:
    """A generator ready for inference (eval mode) and the spec it came with."""

    spec: ModelSpec
    net: nn.Module = field(repr=False)
    path: str = ""


def save_checkpoint(net: nn.Module, spec: ModelSpec, path: str | Path, *, half: bool = False) -> Path:
    """Write ``net``'s weights and ``spec`` as one safetensors file (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {}
    for k, v in net.state_dict().items():
        v = v.detach().cpu().contiguous()
        if half and v.is_floating_point() and "running_" not in k:
            v = v.half()
        state[k] = v
    # Through open(), not safetensors' save_file: that creates mode 0600, which cluster workers
    # running as another user cannot read; open() gives the umask's usual 0644.
    with written_whole(path) as tmp:
        tmp.write_bytes(save(state, metadata=spec.to_metadata()))
    return path


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors checkpoint ({exc}); re-export it or pass another --model"
        ) from exc
    return state, meta


def _read_pth(path: Path) -> dict[str, torch.Tensor]:
    import pickle

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # objects besides tensors: refused, whatever torch suggests
        if "Unsupported operand" in str(exc):  # FRAME etc.: a protocol 4/5 stream, not something unsafe
            raise CheckpointError(
                f"{path} is a pickle of a newer protocol ({_pickle_protocol(path)}) that PyTorch's safe loader "
                "cannot read; re-save it with torch.save(state_dict, 'weights.pth') (its default protocol, 2)"
            ) from exc
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        raise CheckpointError(
            f"{path} holds pickled Python objects besides tensors"
            f"{f' ({found.group(1)})' if found else ''}, and geopix never unpickles code; re-save the weights "
            "alone where the file was made, with torch.save(net.state_dict(), 'weights.pth')"
        ) from exc
    except Exception as exc:  # torch raises many types for corrupt files
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); re-download it or pass another --model"
        ) from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def spec_from_official_state(state: dict[str, torch.Tensor]) -> ModelSpec:
    """Infer the architecture of an authors' U-Net state dict from its key names and shapes."""
    try:
        first = state["model.model.0.weight"]
        last = state["model.model.3.weight"]
    except KeyError as exc:
        raise CheckpointError(
            f"state dict has no key {exc.args[0]!r}: it is not a pix2pix unet generator "
            "(expected keys like 'model.model.0.weight')"
        ) from None
    ngf, input_nc = int(first.shape[0]), int(first.shape[1])
    output_nc = int(last.shape[1])
    depth = max(k.count("model.") for k in state) - 1  # model.model.1.model.1… nesting
    num_downs = depth
    norm = "batch" if any(k.endswith("running_mean") for k in state) else "instance"
    return ModelSpec(
        ngf=ngf,
        num_downs=num_downs,
        norm=norm,
        input_nc=input_nc,
        output_nc=output_nc,
        source="official-pth",
    )


def _load_state(net: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = net.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match its declared architecture: "
            f"{len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise CheckpointError(
                f"{path}: tensor {k!r} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}"
            )
    full = {k: state.get(k, expected[k]).to(expected[k].dtype) for k in expected}
    net.load_state_dict(full, strict=True)


def _pickle_protocol(path: Path) -> int | None:
    with path.open("rb") as f:
        head = f.read(2)
    return head[1] if len(head) == 2 and head[0] == 0x80 else None


def _is_zip_or_pickle(path: Path) -> bool:
    """torch.save's zip archive, or a bare pickle (protocol 2–5 begins with PROTO: 0x80, version)."""
    return zipfile.is_zipfile(path) or _pickle_protocol(path) in (2, 3, 4, 5)


def load_checkpoint(path: str | Path) -> LoadedModel:
    """Load our safetensors or the authors' ``.pth`` (detected from the bytes), in eval mode."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; pass a registry name or an existing file")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; pass the .safetensors or .pth file")
    if _is_zip_or_pickle(path):
        state = _read_pth(path)
        spec = spec_from_official_state(state)
    else:
        state, meta = _read_safetensors(path)
        ours = meta.get("format") == FORMAT
        spec = ModelSpec.from_metadata(meta) if ours else spec_from_official_state(state)
    net = spec.build()
    _load_state(net, state, path)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return LoadedModel(spec=spec, net=net, path=str(path))
