"""Optional dependencies: a command checks them before doing any work and names the extra to install.

Everything the README shows runs on the base install; the extras add features around it.
"""

from __future__ import annotations

from importlib.util import find_spec

from geopix.errors import MissingDependencyError

#: import name → (distribution, ``geopix[extra]`` that installs it)
OPTIONAL: dict[str, tuple[str, str]] = {
    "rio_tiler": ("rio-tiler", "tiles"),
    "matplotlib": ("matplotlib", "train"),
    "tensorboard": ("tensorboard", "train"),
    "dask_cuda": ("dask-cuda", "gpu"),
}


def require(module: str, needed_for: str) -> None:
    """Raise ``MissingDependencyError`` naming the exact ``pip install`` when ``module`` is absent."""
    if find_spec(module) is not None:
        return
    dist, extra = OPTIONAL[module]
    raise MissingDependencyError(
        f'{needed_for} needs {dist}, which is not installed; run: pip install "geopix[{extra}]" '
        f'(or pip install -e ".[{extra}]" in a clone)'
    )
