"""Re-saving a checkpoint for shipping (``geopix export``): fp16 weights, corrected metadata,
a fine-tune averaged with its start model, the palette decoding's class offsets.

The result is an ordinary self-describing checkpoint (``geopix.models.checkpoint``)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

import torch

from geopix.errors import CheckpointError, OptionError
from geopix.models.checkpoint import FORMAT, ModelSpec, load_checkpoint, save_checkpoint
from geopix.models.registry import resolve_model
from geopix.style import palette_bias


def average_states(
    state: dict[str, torch.Tensor], other: dict[str, torch.Tensor], weight: float
) -> dict[str, torch.Tensor]:
    """``(1 - weight) · state + weight · other``, tensor by tensor, in fp32 (BatchNorm statistics too).

    Weight-space ensembling of a fine-tune with the model it started from (WiSE-FT, Wortsman et
    al. 2022) keeps much of what each knows: one network, no inference cost.  Integer buffers
    (BatchNorm's step counters) are ``state``'s."""
    if not 0.0 <= weight <= 1.0:
        raise CheckpointError(f"--average-weight {weight} must be within 0..1 (the share of the other weights)")
    if state.keys() != other.keys() or any(state[k].shape != other[k].shape for k in state):
        raise CheckpointError(
            "cannot average checkpoints of different architectures (their tensors differ); "
            "average a fine-tune with the model it was started from (--init-from)"
        )
    return {
        k: ((1.0 - weight) * v.float() + weight * other[k].float()) if v.is_floating_point() else v
        for k, v in state.items()
    }


def export_checkpoint(
    src: str | Path,
    dst: str | Path,
    *,
    half: bool = True,
    average_with: str | Path | None = None,
    average_weight: float = 0.5,
    class_bias: Mapping[str, float] | None = None,
    **overrides: object,
) -> Path:
    """Re-save a checkpoint for shipping: fp16 weights (BatchNorm statistics stay fp32) and
    corrected or added metadata (``ground_resolution_m``, ``training`` JSON, …).

    ``average_with`` (a registry name or a checkpoint of the same architecture) is averaged in with
    ``average_weight`` (``average_states``); the metadata stays ``src``'s, and its ``training`` JSON
    records the average.  ``class_bias`` ({class or group: logit offset}, e.g. ``{"road": 0.5}``)
    replaces the palette decoding's offsets, resolved against ``src``'s own palette."""
    model = load_checkpoint(src)
    unknown = set(overrides) - {f.name for f in dataclasses.fields(ModelSpec)}
    if unknown:
        raise CheckpointError(f"cannot set {sorted(unknown)} on a checkpoint; known fields: ModelSpec")
    if class_bias is not None:
        if not model.spec.palette:
            raise OptionError(f"class offsets need a palette-head checkpoint; {src} draws RGB")
        try:
            overrides["palette_bias"] = palette_bias(model.spec.palette, class_bias)
        except ValueError as exc:
            raise OptionError(f"class offset (--class-bias): {exc}") from None
    spec = dataclasses.replace(model.spec, **overrides)
    if average_with is not None:
        other = load_checkpoint(resolve_model(average_with))
        model.net.load_state_dict(average_states(model.net.state_dict(), other.net.state_dict(), average_weight))
        training = json.loads(spec.training or "{}")
        training["averaged_with"] = {"model": str(average_with), "weight": average_weight}
        spec = dataclasses.replace(spec, training=json.dumps(training, default=str))
    return save_checkpoint(model.net, spec, dst, half=half)


def is_geopix_model(path: str | Path) -> bool:
    """Is ``path`` a model file geopix wrote (a checkpoint of our format, or an ONNX map model)?

    ``geopix export --overwrite`` replaces only such a file: never a user's other file of that name."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.suffix.lower() == ".onnx":
        marker = b"geopix_spec"  # a metadata_props key of export_onnx's files, stored as plain bytes
        with open(path, "rb") as f:
            return any(marker in chunk for chunk in iter(lambda: f.read(1 << 20), b""))
    try:
        from safetensors import SafetensorError, safe_open

        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format") == FORMAT
    except (SafetensorError, OSError, ValueError):
        return False
