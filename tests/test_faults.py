"""Faults mid-render: a worker killed with SIGKILL, and the client itself killed with SIGKILL.

Either way the finished map must equal an uninterrupted render byte for byte; a killed client
is resumed by rerunning the same command, which recomputes only the unfinished blocks.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from geopix.cli import main
from geopix.testing import random_checkpoint, synthetic_aerial
from tests.test_cluster import CHILD_ENV, ROOT, Cluster, _kill_group, reference, start_cluster

CHUNK = ["--tile-size", "256", "--overlap", "64", "--chunk-size", "128"]
N_BLOCKS = 30  # 600 × 700 px at 2 m on the model's 2 m grid, blocks of 128 px: 5 × 6


@pytest.fixture(scope="module")
def nanny_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two single-threaded workers, each under a nanny that restarts it when it dies."""
    c = start_cluster(tmp_path_factory.mktemp("faults"), 2, nanny=True)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, bytes]:
    d = tmp_path_factory.mktemp("faultjob")
    src = synthetic_aerial(d / "scene.tif", (600, 700), res=2.0, seed=3)
    model = random_checkpoint(d / "m.safetensors", ngf=8, seed=2)
    return src, model, reference(src, model, d / "ref", chunk=128)


def _done(out: Path) -> int:
    return len(list((out / "map.zarr" / "geopix_done").glob("*_*")))


def _worker_pids(cluster: Cluster) -> dict[str, int]:
    with cluster.client() as c:
        return c.run(os.getpid)


def _processing(client) -> dict[str, int]:
    """Blocks the scheduler has handed to each worker and not yet seen finish."""
    return client.run_on_scheduler(
        lambda dask_scheduler: {a: len(ws.processing) for a, ws in dask_scheduler.workers.items()}
    )


def _render_with_a_worker_killed(cluster: Cluster, job, out: Path, rng: random.Random) -> dict:
    """Start a render, SIGKILL a busy worker process once ``k`` blocks are done, let it finish."""
    src, model, ref = job
    pids = _worker_pids(cluster)
    kill_after = rng.randint(1, N_BLOCKS // 2)
    outcome: dict = {}

    def run() -> None:
        args = ["render", str(src), "-o", str(out), "-m", str(model), *CHUNK, "--no-progress"]
        outcome["code"] = main([*args, "--scheduler", cluster.address, "--threads", "1"])

    with cluster.client() as watcher:
        t = threading.Thread(target=run, daemon=True)
        t.start()
        deadline = time.monotonic() + 300
        while _done(out) < kill_after and t.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.1))
        busy: dict = {}
        while t.is_alive() and time.monotonic() < deadline:  # between two tasks nobody is busy: look again
            busy = {a: n for a, n in _processing(watcher).items() if n}
            if busy:
                break
            time.sleep(0.005)
        victim = rng.choice(sorted(busy or pids))
        outcome["victim_processing"] = busy.get(victim, 0)
        outcome["done_at_kill"] = _done(out)
        outcome["alive_at_kill"] = t.is_alive()
        os.kill(pids[victim], signal.SIGKILL)
    t.join(600)
    assert not t.is_alive(), "the render did not finish after a worker was killed"
    outcome["same_bytes"] = (out / "map.tif").read_bytes() == ref
    outcome["manifest"] = json.loads((out / "render.json").read_text())
    outcome["replaced"] = _replaced(cluster, pids[victim])
    return outcome


def _replaced(cluster: Cluster, dead: int, timeout: float = 120) -> bool:
    """Whether the nanny has started a new worker process in place of ``dead``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pids = _worker_pids(cluster)
        except Exception:  # the scheduler has not yet noticed the dead worker
            pids = {}
        if len(pids) == 2 and dead not in pids.values():
            return True
        time.sleep(0.2)
    return False


def _check(o: dict) -> None:
    assert o["code"] == 0
    assert o["alive_at_kill"] and o["done_at_kill"] < N_BLOCKS, o  # the kill hit a running render
    assert o["victim_processing"] >= 1, o  # ... and a worker with blocks in hand, which had to be redone
    assert o["replaced"], "the killed worker is still there"
    assert o["manifest"]["blocks"] == N_BLOCKS and o["same_bytes"], o


def test_worker_killed_mid_render(nanny_cluster: Cluster, job, tmp_path: Path) -> None:
    _check(_render_with_a_worker_killed(nanny_cluster, job, tmp_path, random.Random(0)))


@pytest.mark.slow
def test_worker_killed_at_random_moments_five_times(nanny_cluster: Cluster, job, tmp_path: Path) -> None:
    seed = int(os.environ.get("GEOPIX_FAULT_SEED", time.time_ns() % 10_000))
    rng = random.Random(seed)
    results = [_render_with_a_worker_killed(nanny_cluster, job, tmp_path / f"run{i}", rng) for i in range(5)]
    print(
        f"seed {seed}: killed after {[r['done_at_kill'] for r in results]} of {N_BLOCKS} blocks, "
        f"the victim holding {[r['victim_processing'] for r in results]} blocks"
    )
    for r in results:
        _check(r)


# ---- the client killed -----------------------------------------------------------------------------
@pytest.fixture
def client_proc() -> Iterator[list[subprocess.Popen]]:
    procs: list[subprocess.Popen] = []
    try:
        yield procs
    finally:
        for p in procs:
            _kill_group(p)


def test_client_killed_mid_render_resumes_only_unfinished_blocks(
    nanny_cluster: Cluster, job, tmp_path: Path, client_proc: list[subprocess.Popen]
) -> None:
    src, model, ref = job
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "geopix", "render", str(src), "-o", str(out), "-m", str(model), *CHUNK]
    cmd += ["--scheduler", nanny_cluster.address, "--no-progress"]
    with open(tmp_path / "client.log", "wb") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **CHILD_ENV}, cwd=ROOT)
    client_proc.append(p)
    kill_after = random.Random(1).randint(5, N_BLOCKS - 10)
    deadline = time.monotonic() + 300
    while _done(out) < kill_after and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.poll() is None, (tmp_path / "client.log").read_text()[-2000:]
    p.send_signal(signal.SIGKILL)
    p.wait(30)
    assert not (out / "map.tif").exists()
    # Tasks already running on workers finish after their client is gone (they cannot be
    # interrupted); wait until the store is quiet so the count below is exact.
    quiet, last = 0, -1
    while quiet < 20:
        n = _done(out)
        quiet = quiet + 1 if n == last else 0
        last = n
        time.sleep(0.05)
    done_before = {m.name for m in (out / "map.zarr" / "geopix_done").iterdir()}
    assert 0 < len(done_before) < N_BLOCKS

    import geopix.execute as execute

    recomputed: list[str] = []
    real = execute.process_block

    def counting(job_, block):
        recomputed.append(f"{block.index[0]}_{block.index[1]}")
        return real(job_, block)

    execute.process_block = counting  # the sync scheduler calls it here, in this process
    try:
        code = main(["render", str(src), "-o", str(out), "-m", str(model), *CHUNK, "--scheduler", "sync"])
    finally:
        execute.process_block = real
    assert code == 0
    manifest = json.loads((out / "render.json").read_text())
    print(
        f"client killed after {len(done_before)} of {N_BLOCKS} blocks; rerun recomputed {len(recomputed)} "
        f"(blocks {manifest['blocks']}, blocks_resumed {manifest['blocks_resumed']})"
    )
    assert manifest["blocks"] == N_BLOCKS and manifest["blocks_resumed"] == len(done_before)
    assert sorted(recomputed) == sorted({f"{i}_{j}" for i in range(5) for j in range(6)} - done_before)
    assert (out / "map.tif").read_bytes() == ref


def test_client_with_a_local_cluster_killed_leaves_no_process_and_resumes(
    job, tmp_path: Path, client_proc: list[subprocess.Popen]
) -> None:
    """`geopix render` without a scheduler owns its workers: they must not outlive it."""
    import psutil

    src, model, ref = job
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "geopix", "render", str(src), "-o", str(out), "-m", str(model), *CHUNK]
    cmd += ["--workers", "2", "--no-progress"]
    p = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **CHILD_ENV},
        cwd=ROOT,
        start_new_session=True,
    )
    client_proc.append(p)
    deadline = time.monotonic() + 300
    while _done(out) < 3 and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.poll() is None
    children = psutil.Process(p.pid).children(recursive=True)
    assert children  # the LocalCluster's worker processes
    p.send_signal(signal.SIGKILL)
    p.wait(30)
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"worker processes outlived their client: {[c.pid for c in alive]}"
    code = main(["render", str(src), "-o", str(out), "-m", str(model), *CHUNK, "--scheduler", "sync", "--no-progress"])
    assert code == 0
    manifest = json.loads((out / "render.json").read_text())
    assert 3 <= manifest["blocks_resumed"] < N_BLOCKS
    assert (out / "map.tif").read_bytes() == ref
