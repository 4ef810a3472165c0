"""Model names → checkpoints shipped inside the package, and ``load_model``.

``--model`` takes a registry name (``sat2map``, ``map2sat``) or a path to a checkpoint
(ours or the authors' ``.pth``).  Nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

from geopix.errors import CheckpointError, ModelNotAvailableError
from geopix.models.checkpoint import LoadedModel, load_checkpoint

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

#: name → (file in geopix/weights, direction, what it does)
REGISTRY: dict[str, tuple[str, str, str]] = {
    "sat2map": ("sat2map.safetensors", "AtoB", "aerial photo → map"),
    "map2sat": ("map2sat.safetensors", "BtoA", "map → aerial photo"),
}


def resolve_model(name_or_path: str | Path) -> Path:
    """Return the checkpoint file for a registry name or a path, or explain how to get one."""
    text = str(name_or_path)
    if text in REGISTRY:
        filename, direction, _ = REGISTRY[text]
        path = WEIGHTS_DIR / filename
        if not path.exists():
            recipe = "--preset palette" if direction == "AtoB" else "--direction BtoA"
            raise ModelNotAvailableError(
                f"the {text!r} weights are not installed in this copy of geopix ({path} is missing); "
                f"train them with `geopix train ../shared/data/maps {recipe} -o runs/{text}` and pass "
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
    return load_checkpoint(resolve_model(name_or_path))
