"""Model names → checkpoints shipped inside the package, and ``load_model``.

``--model`` takes a registry name (``sat2map``, ``map2sat``) or a path to a checkpoint
(ours or the authors' ``.pth``).  Nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from geopix.errors import CheckpointError, ModelNotAvailableError

if TYPE_CHECKING:  # loading imports torch (0.9 s): a render reads its colour statistics meanwhile
    from geopix.models.checkpoint import LoadedModel

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


class RegistryEntry(NamedTuple):
    """A shipped model: its file in geopix/weights, its direction, what it does, and the
    ``geopix train`` options that make it (quoted when the file is missing)."""

    filename: str
    direction: str
    summary: str
    train_options: str


REGISTRY: dict[str, RegistryEntry] = {
    "sat2map": RegistryEntry("sat2map.safetensors", "AtoB", "aerial photo → map", "--recipe sat2map"),
    "map2sat": RegistryEntry("map2sat.safetensors", "BtoA", "map → aerial photo", "--recipe map2sat"),
}


def resolve_model(name_or_path: str | Path) -> Path:
    """Return the checkpoint file for a registry name or a path, or explain how to get one."""
    text = str(name_or_path)
    if text in REGISTRY:
        entry = REGISTRY[text]
        path = WEIGHTS_DIR / entry.filename
        if not path.exists():
            raise ModelNotAvailableError(
                f"the {text!r} weights are not installed in this copy of geopix ({path} is missing); "
                f"train them with `geopix train data/maps {entry.train_options} -o runs/{text}` and pass "
                f"--model runs/{text}/generator.safetensors, or pass any pix2pix checkpoint path"
            )
        return path
    path = Path(text).expanduser()
    if not path.exists():
        known = ", ".join(REGISTRY)
        raise CheckpointError(f"--model {text!r} is neither a registry name ({known}) nor an existing file")
    return path


def load_model(name_or_path: str | Path) -> LoadedModel:
    """Load a generator by registry name or path, ready for inference (eval mode)."""
    from geopix.models.checkpoint import load_checkpoint

    return load_checkpoint(resolve_model(name_or_path))


def is_model_name(text: str) -> bool:
    """A registry name or a checkpoint file name (not a raster): what ``geopix info`` describes as a model."""
    return text in REGISTRY or text.lower().endswith((".safetensors", ".pt", ".pth"))


def describe_model(name_or_path: str | Path) -> dict[str, object]:
    """A model as ``geopix info MODEL`` shows it: its file, size and what its checkpoint says of itself."""
    from geopix.models.generator import count_parameters

    loaded = load_model(name_or_path)
    return {"path": loaded.path, "parameters": count_parameters(loaded.net), **loaded.spec.summary()}
