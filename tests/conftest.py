"""Shared fixtures: tiny synthetic rasters and random checkpoints, made per session."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import torch
from hypothesis import Phase, settings

from geopix.testing import random_checkpoint, synthetic_aerial

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GEOTIFFS = SHARED / "data" / "geotiffs"
MAPS = SHARED / "data" / "maps"

torch.set_num_threads(1)

# CI replays the same Hypothesis examples on every run (a red build is reproducible, never a fluke
# of that run's draw) and keeps no example database; locally Hypothesis explores as usual.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
# Mutation testing (tests/mutation.py) only needs to know that a mutant fails: the same examples
# as CI, and no shrinking of a failure (minutes per killed mutant on the decoding's tests).
settings.register_profile(
    "mutation", derandomize=True, database=None, phases=(Phase.explicit, Phase.reuse, Phase.generate)
)


def hypothesis_profile(environ: Mapping[str, str]) -> str:
    """``"mutation"`` under mutmut, ``"ci"`` where CI runs (GitHub Actions, GitLab and most others
    set ``CI=true``), else ``"default"``."""
    if "MUTANT_UNDER_TEST" in environ:
        return "mutation"
    return "ci" if environ.get("CI", "").lower() in ("1", "true", "yes") else "default"


settings.load_profile(hypothesis_profile(os.environ))


def need_shared(path: Path = SHARED) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared data is only on the developers' machines)")
    return path


@pytest.fixture(scope="session", autouse=True)
def int8_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The int8 models tests build (``--precision int8``/``auto`` with geopix[int8]) go to a session
    folder, not the user's cache; subprocesses (the CLI, Dask workers) inherit it."""
    import os

    folder = tmp_path_factory.mktemp("int8_cache")
    if "MUTANT_UNDER_TEST" in os.environ:
        # mutmut runs a pytest session per mutant: keep the int8 models (keyed by the checkpoint's
        # bytes, and the test checkpoints are seeded) for the next, in its own mutants/ copy.
        folder = Path(__file__).resolve().parents[1] / ".int8-cache"
    old = os.environ.get("GEOPIX_CACHE_DIR")
    os.environ["GEOPIX_CACHE_DIR"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("GEOPIX_CACHE_DIR", None)
    else:
        os.environ["GEOPIX_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def aerial(data_dir: Path) -> Path:
    """700×600 px, 2 m/px, UTM: several tiles and partial edge tiles."""
    return synthetic_aerial(data_dir / "aerial.tif", (600, 700), res=2.0)


@pytest.fixture(scope="session")
def checkpoint(data_dir: Path) -> Path:
    """A random unet_256 (ngf 4) in our format, trained resolution 2 m/px."""
    return random_checkpoint(data_dir / "tiny.safetensors", ngf=4)


@pytest.fixture(scope="session")
def official_checkpoint(data_dir: Path) -> Path:
    """The same kind of network saved in the authors' .pth layout (no num_batches_tracked)."""
    return random_checkpoint(data_dir / "tiny_official.pth", ngf=4, official=True, seed=1)


@pytest.fixture
def ctrl_c_after_three_blocks() -> Callable[[], contextlib.AbstractContextManager[None]]:
    """``with ctrl_c_after_three_blocks():`` a render whose fourth block raises KeyboardInterrupt, as
    Ctrl-C would mid-render (on the sync scheduler, in this process); the real kernel comes back after."""
    import geopix.execute as execute

    real = execute.process_block

    @contextlib.contextmanager
    def armed() -> Iterator[None]:
        calls = {"n": 0}

        def dies_after_three(job, block):
            if calls["n"] == 3:
                raise KeyboardInterrupt
            calls["n"] += 1
            return real(job, block)

        execute.process_block = dies_after_three
        try:
            yield
        finally:
            execute.process_block = real

    return armed


def pytest_terminal_summary(terminalreporter) -> None:
    """The docs test's count of commands run and skipped (and why), when it ran."""
    import sys

    docs = sys.modules.get("tests.test_docs")
    for line in docs.summary_lines() if docs else []:
        terminalreporter.write_line(line)


# ---- remote protocol servers on 127.0.0.1 (issue 15) ----------------------------------------
@pytest.fixture(scope="session")
def http_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the Range HTTP server serves."""
    return tmp_path_factory.mktemp("http")


@pytest.fixture(scope="session")
def http_server(http_root: Path):
    """A Range-capable HTTP server for ``http_root`` (faults under /forbidden/ and /stall/)."""
    from geopix.testservers import RangeHTTPServer

    with RangeHTTPServer(http_root, faults={"/forbidden/": "403", "/stall/": "stall"}, stall_s=3) as server:
        yield server


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on loopback, with GDAL and s3fs pointed at it through the environment."""
    pytest.importorskip("moto.server", reason="pip install 'moto[server]' for the S3 tests")
    pytest.importorskip("s3fs")
    import os

    from geopix.testservers import moto_s3, s3_env

    with moto_s3() as endpoint:
        env = s3_env(endpoint)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield endpoint
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@pytest.fixture(scope="session")
def s3_bucket(s3_endpoint: str) -> str:
    """An empty bucket on the S3 server; yields its name."""
    from geopix.remote import filesystem

    fs, _ = filesystem("s3://geopix-test")
    fs.mkdir("geopix-test")
    return "geopix-test"
