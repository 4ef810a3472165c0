"""Fault injection: every way a render can go wrong ends in a clear line, its own exit code, and a
map that is right or absent — never a crash, a hang, a silent success or a wrong map.

* a worker or the client killed with SIGKILL (the map still equals an uninterrupted render);
* (1) a coarse raster or a huge --chunk-size against the memory budget, refused before anything runs;
* (2) SIGINT / SIGTERM mid-render: exit 130 / 143, one line, the rerun byte-identical; the other long
  commands (tiles, train, eval, dataset vectors, serve) the same way: one line, what was kept, no partial file;
* (3) a full disk (a real small tmpfs): its own message and exit code, resumable, no segfault;
* (4) two renders into one folder: one refused, the other byte-identical;
* (5) invalid --workers / --threads, and --threads honoured by the default cluster;
* (6) the in-process cluster listens on loopback only and its dashboard link opens;
* (7) messages: GCP rasters, truncated GeoTIFFs;
* (8) option errors' exit codes, a failed block reported once (no retries, no traceback spam),
  and no empty output folder left by a late error.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from geopix import errors, execute
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


def fault_seed(default: int = 0) -> int:
    """The seed of the fault tests' random choices: ``GEOPIX_FAULT_SEED`` or ``default``; printed, so a
    failure names the seed that replays it (``GEOPIX_FAULT_SEED=N pytest tests/test_faults.py``)."""
    seed = int(os.environ.get("GEOPIX_FAULT_SEED", default))
    print(f"fault seed {seed} (replay: GEOPIX_FAULT_SEED={seed})")
    return seed


def _render_with_a_worker_killed(cluster: Cluster, job, out: Path, rng: random.Random) -> dict:
    """Start a render, SIGKILL a busy worker process once ``k`` blocks are done, let it finish.

    The moment is set by progress, not by a clock: the kill lands as soon as ``k`` blocks are in the
    store and the scheduler says a worker holds a block, however slow or busy the machine is."""
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
    assert o["code"] == 0, o
    assert o["alive_at_kill"] and o["done_at_kill"] < N_BLOCKS, o  # the kill hit a running render
    assert o["victim_processing"] >= 1, o  # ... and a worker with blocks in hand, which had to be redone
    assert o["replaced"], f"the killed worker is still there: {o}"
    assert o["manifest"]["blocks"] == N_BLOCKS and o["same_bytes"], o


def test_worker_killed_mid_render(nanny_cluster: Cluster, job, tmp_path: Path) -> None:
    seed = fault_seed()
    outcome = _render_with_a_worker_killed(nanny_cluster, job, tmp_path, random.Random(seed))
    _check(outcome | {"seed": seed})


@pytest.mark.slow
def test_worker_killed_at_five_moments(nanny_cluster: Cluster, job, tmp_path: Path) -> None:
    seed = fault_seed(default=1)
    rng = random.Random(seed)
    results = [_render_with_a_worker_killed(nanny_cluster, job, tmp_path / f"run{i}", rng) for i in range(5)]
    print(
        f"seed {seed}: killed after {[r['done_at_kill'] for r in results]} of {N_BLOCKS} blocks, "
        f"the victim holding {[r['victim_processing'] for r in results]} blocks"
    )
    for r in results:
        _check(r | {"seed": seed})


# ---- the client killed -----------------------------------------------------------------------------
@pytest.fixture
def client_proc() -> Iterator[list[subprocess.Popen]]:
    procs: list[subprocess.Popen] = []
    try:
        yield procs
    finally:
        for p in procs:
            _kill_group(p)


def _wait_until_the_cluster_is_idle(cluster: Cluster, timeout: float = 300) -> None:
    """Until the scheduler has forgotten every task and no worker holds or runs one: a killed client's
    queued blocks are dropped, and its running ones written, however long they take."""
    deadline = time.monotonic() + timeout
    with cluster.client() as c:
        while time.monotonic() < deadline:
            tasks = c.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
            held = c.run(lambda dask_worker: len(dask_worker.state.tasks) + len(dask_worker.active_threads))
            if tasks == 0 and not any(held.values()):
                return
            time.sleep(0.05)
    raise AssertionError(f"the cluster still holds the killed client's tasks after {timeout} s")


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
    seed = fault_seed(default=1)
    kill_after = random.Random(seed).randint(5, N_BLOCKS - 10)
    deadline = time.monotonic() + 300
    while _done(out) < kill_after and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.poll() is None, (tmp_path / "client.log").read_text()[-2000:]
    p.send_signal(signal.SIGKILL)
    p.wait(30)
    assert not (out / "map.tif").exists()
    # Tasks already running on workers finish after their client is gone (they cannot be
    # interrupted); wait until the cluster holds none of them, so the count below is exact.
    _wait_until_the_cluster_is_idle(nanny_cluster)
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


# ---- (1) memory budget -------------------------------------------------------------------------
def _cli(src: Path, model: Path, out: Path, *extra: str) -> int:
    return main(["render", str(src), "-o", str(out), "-m", str(model), "--no-progress", *extra])


def test_coarse_raster_is_refused_within_the_memory_budget(job, tmp_path: Path, capsys) -> None:
    """1 km/px upsampled to the model's 2 m/px: one block would need the work pixels of the whole map."""
    _, model, _ = job
    coarse = synthetic_aerial(tmp_path / "coarse.tif", (200, 200), res=1000.0, seed=4)
    out = tmp_path / "o"
    t0 = time.perf_counter()
    assert _cli(coarse, model, out) == errors.MemoryBudgetError.exit_code
    assert time.perf_counter() - t0 < 30  # refused from the plan, nothing ran
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: this raster is 1.0 km/px; rendering at the model's 2.00 m/px would need ")
    assert "--no-resample" in err and "--output-resolution model" in err
    assert not out.exists()
    assert _cli(coarse, model, out, "--no-resample", "--scheduler", "sync") == 0  # the fix works


def test_huge_chunk_size_is_clipped_or_refused(job, tmp_path: Path, capsys) -> None:
    src, model, ref = job
    # larger than the map: one block either way, the zarr chunk clipped to the map (was: MemoryError 35.5 PiB)
    assert _cli(src, model, tmp_path / "a", *CHUNK[:4], "--chunk-size", "1000000000", "--scheduler", "sync") == 0
    assert (tmp_path / "a" / "map.tif").read_bytes() == ref
    big = synthetic_aerial(tmp_path / "big.tif", (2048, 2048), res=2.0, seed=5)
    code = _cli(big, model, tmp_path / "b", "--chunk-size", "65536", "--memory-budget", "1G")
    assert code == errors.MemoryBudgetError.exit_code
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--chunk-size 65536 would need" in err and "use --chunk-size 1024" in err
    assert not (tmp_path / "b").exists()


# ---- (2) SIGINT / SIGTERM --------------------------------------------------------------------------
def _spawn_geopix(args: list[str], log: Path, procs: list[subprocess.Popen]) -> subprocess.Popen:
    with open(log, "wb") as f:
        p = subprocess.Popen(
            [sys.executable, "-m", "geopix", *args], stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **CHILD_ENV}
        )
    procs.append(p)
    return p


def _wait_for(cond, p: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.poll() is None, log.read_text()[-3000:]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_render_stops_cleanly_and_the_rerun_is_byte_identical(
    job, tmp_path: Path, client_proc: list[subprocess.Popen], sig: int, code: int
) -> None:
    src, model, ref = job
    out, log = tmp_path / "o", tmp_path / "render.log"
    p = _spawn_geopix(["render", str(src), "-o", str(out), "-m", str(model), *CHUNK, "--no-progress"], log, client_proc)
    _wait_for(lambda: _done(out) >= 3, p, log)
    p.send_signal(sig)
    assert p.wait(120) == code, log.read_text()[-3000:]
    lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
    assert lines[-1].startswith("interrupted: ") and "blocks are finished in" in lines[-1], lines[-3:]
    assert "Traceback" not in log.read_text() and "Segmentation" not in log.read_text()
    kept = _done(out)
    assert 3 <= kept < N_BLOCKS and not (out / "map.tif").exists() and not (out / ".geopix.lock").exists()
    assert main(["render", str(src), "-o", str(out), "-m", str(model), *CHUNK, "--no-progress"]) == 0
    manifest = json.loads((out / "render.json").read_text())
    assert manifest["blocks_resumed"] == kept and (out / "map.tif").read_bytes() == ref


SIGNALS = pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])


def _stop(p: subprocess.Popen, sig: int, code: int, log: Path) -> str:
    """Send ``sig``; check the exit code and that the run ended on one clean line, which it returns."""
    p.send_signal(sig)
    assert p.wait(120) == code, log.read_text()[-3000:]
    text = log.read_text()
    assert "Traceback" not in text and "Segmentation" not in text, text[-3000:]
    last = text.strip().splitlines()[-1]
    assert last.startswith("interrupted: "), text[-3000:]
    return last


@SIGNALS
def test_signal_during_geopix_tiles_leaves_nothing(
    job, tmp_path: Path, client_proc: list[subprocess.Popen], sig: int, code: int
) -> None:
    ref = job[2]
    map_dir = tmp_path / "m"
    map_dir.mkdir()
    (map_dir / "map.tif").write_bytes(ref)
    out, log = tmp_path / "tiles", tmp_path / "tiles.log"
    partial = tmp_path / "tiles.partial"
    args = ["tiles", str(map_dir / "map.tif"), str(out), "--zoom", "12-20", "--no-progress"]
    p = _spawn_geopix(args, log, client_proc)
    _wait_for(lambda: partial.exists() and any(partial.rglob("*.png")), p, log)
    assert _stop(p, sig, code, log) == f"interrupted: no tiles written to {out}; rerun the same command"
    assert not partial.exists() and not out.exists()


@pytest.fixture(scope="module")
def maps_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from geopix.testing import synthetic_maps_dataset

    return synthetic_maps_dataset(tmp_path_factory.mktemp("maps"), n_train=8, n_val=120, size=256)


TINY_TRAIN = ["--ngf", "4", "--ndf", "4", "--batch-size", "2", "--threads", "1", "--device", "cpu", "--no-progress"]


@SIGNALS
def test_signal_during_geopix_train_keeps_a_resumable_state(
    maps_dataset: Path, tmp_path: Path, client_proc: list[subprocess.Popen], sig: int, code: int
) -> None:
    import torch

    from geopix.train_state import STATE

    run, log = tmp_path / "run", tmp_path / "train.log"
    args = ["train", str(maps_dataset), "--run-dir", str(run), *TINY_TRAIN, "--epochs", "500", "--epochs-decay", "0"]
    p = _spawn_geopix(args, log, client_proc)
    _wait_for(lambda: (run / "log.csv").exists(), p, log)  # an epoch is done, the next one is running
    last = _stop(p, sig, code, log)
    assert str(run / STATE) in last and "; resume with: geopix train " in last and last.endswith(" --resume"), last
    assert not list(run.glob("*.partial"))  # state and checkpoint were written whole
    epoch = int(torch.load(run / STATE, weights_only=True)["epoch"])
    assert 1 <= epoch < 500
    # The command it printed resumes (shortened to end soon: --epochs may change on a resume).
    resume = shlex.split(last.split("resume with: ", 1)[1])[1:]
    resume[resume.index("--epochs") + 1] = str(epoch + 1)
    assert main(resume) == 0
    assert int(torch.load(run / STATE, weights_only=True)["epoch"]) == epoch + 1


def _cpu_seconds(p: subprocess.Popen) -> float:
    import psutil

    t = psutil.Process(p.pid).cpu_times()
    return t.user + t.system


@SIGNALS
def test_signal_during_geopix_eval_writes_no_report(
    maps_dataset: Path, tmp_path: Path, client_proc: list[subprocess.Popen], sig: int, code: int
) -> None:
    model = random_checkpoint(tmp_path / "m.safetensors", ngf=16)
    out, log = tmp_path / "eval", tmp_path / "eval.log"
    args = ["eval", str(model), str(maps_dataset), "-o", str(out), "--device", "cpu", "--batch-size", "1"]
    p = _spawn_geopix([*args, "--no-progress"], log, client_proc)
    _wait_for(lambda: "scoring 120 val pairs" in log.read_text(), p, log)
    started = _cpu_seconds(p)
    _wait_for(lambda: _cpu_seconds(p) >= started + 1.0, p, log)  # a second into the scoring loop
    assert _stop(p, sig, code, log) == "interrupted: no report written; rerun the same command"
    assert not out.exists() or not any(out.iterdir())


@SIGNALS
def test_signal_during_geopix_dataset_vectors_leaves_nothing(
    tmp_path: Path, client_proc: list[subprocess.Popen], sig: int, code: int
) -> None:
    import shapely

    from tests.test_vectors import X0, Y0, to_wgs84, write_geojson

    aerial = synthetic_aerial(tmp_path / "a.tif", (2000, 2000), res=2.0, origin=(X0, Y0))
    layer = write_geojson(tmp_path / "b.geojson", [to_wgs84(shapely.box(X0, Y0 - 4000, X0 + 4000, Y0))])
    model = random_checkpoint(tmp_path / "m.safetensors", ngf=4)
    out, log = tmp_path / "pairs", tmp_path / "vectors.log"
    args = ["dataset", "vectors", str(out), "--raster", str(aerial), "--layer", f"{layer}=building", "-m", str(model)]
    p = _spawn_geopix(args, log, client_proc)
    partial = tmp_path / "pairs.partial"
    _wait_for(lambda: len(list((partial / "M").glob("*.png"))) >= 3, p, log)
    assert _stop(p, sig, code, log) == f"interrupted: no pairs written ({out} untouched); rerun the same command"
    assert not out.exists() and not partial.exists()


@SIGNALS
def test_signal_stops_geopix_serve_with_one_line(
    job, tmp_path: Path, client_proc: list[subprocess.Popen], sig: int, code: int
) -> None:
    (tmp_path / "map.tif").write_bytes(job[2])
    log = tmp_path / "serve.log"
    p = _spawn_geopix(["serve", str(tmp_path / "map.tif"), "--port", "0"], log, client_proc)
    _wait_for(lambda: " at http://127.0.0.1:" in log.read_text(), p, log)
    # Signalled the moment the ready line shows: it is printed once uvicorn has started and holds
    # the signals (printed before, a Ctrl-C in that instant could be lost and the server run on).
    assert _stop(p, sig, code, log) == f"interrupted: stopped serving {tmp_path / 'map.tif'}"


# ---- (3) a full disk ----------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1.5 MiB tmpfs (needs root); the test remounts it larger to "free space"."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_full_disk_has_its_own_message_and_exit_code_and_resumes(job, small_disk: Path, capsys) -> None:
    src, model, ref = job
    out = small_disk / "o"
    assert _cli(src, model, out, *CHUNK) == errors.DiskFullError.exit_code  # the default in-process cluster
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: no space left on the device of ") and "rerun the same command" in last
    assert "Traceback" not in err and "Compute Failed" not in err
    assert not list(out.glob("map.tif*"))  # nothing half-written under or beside the final name
    kept = _done(out)
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)  # space freed
    assert _cli(src, model, out, *CHUNK) == 0
    manifest = json.loads((out / "render.json").read_text())
    assert manifest["blocks_resumed"] == kept and (out / "map.tif").read_bytes() == ref


def test_disk_full_while_finalizing_removes_the_partial_file(job, tmp_path: Path, monkeypatch, capsys) -> None:
    import errno

    import rasterio.shutil

    src, model, ref = job
    out = tmp_path / "o"

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rasterio.shutil, "copy", full)
    assert _cli(src, model, out, *CHUNK, "--scheduler", "sync") == errors.DiskFullError.exit_code
    assert not list(out.glob("map.tif*")) and _done(out) == N_BLOCKS
    monkeypatch.undo()
    assert _cli(src, model, out, *CHUNK, "--scheduler", "sync") == 0
    assert (out / "map.tif").read_bytes() == ref


# ---- (4) two renders into one folder ----------------------------------------------------------------
def test_second_render_into_the_same_folder_is_refused_and_the_first_is_unharmed(
    job, tmp_path: Path, client_proc: list[subprocess.Popen], capsys
) -> None:
    src, model, ref = job
    out, log = tmp_path / "o", tmp_path / "first.log"
    p = _spawn_geopix(["render", str(src), "-o", str(out), "-m", str(model), *CHUNK, "--no-progress"], log, client_proc)
    _wait_for(lambda: _done(out) >= 1, p, log)
    for extra in ([], ["--overwrite"], ["--force"]):
        assert _cli(src, model, out, *CHUNK, *extra) == errors.OutputLockedError.exit_code
        err = capsys.readouterr().err.strip().splitlines()[-1]
        held = f"(pid {p.pid}); wait for it to finish, or choose another -o"
        assert err == f"error: {out} is in use by another geopix run {held}"
    assert p.wait(300) == 0, log.read_text()[-3000:]
    assert (out / "map.tif").read_bytes() == ref and not (out / ".geopix.lock").exists()


# ---- (5) workers and threads -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("option", "needle"),
    [
        (["--workers", "0"], "--workers 0 must be within 1..1024"),
        (["--workers", "-2"], "--workers -2 must be within 1..1024"),
        (["--threads", "0"], "--threads 0 must be at least 1"),
        (["--threads", "-3"], "--threads -3 must be at least 1"),
        (["--batch-size", "0"], "--batch-size 0 must be at least 1"),
        (["--device", "foo"], "--device 'foo' must be auto, cpu, cuda or cuda:N"),
        (["--precision", "fp8"], "--precision 'fp8' must be one of auto, fp32, bf16, fp16, int8"),
        (["--output-resolution", "fine"], "--output-resolution 'fine' must be one of source, model"),
        (["--memory-budget", "lots"], "--memory-budget 'lots' is not a size"),
    ],
)
def test_option_errors_have_their_own_exit_code(option: list[str], needle: str, job, tmp_path: Path, capsys) -> None:
    src, model, _ = job
    out = tmp_path / "o"
    t0 = time.perf_counter()
    assert _cli(src, model, out, *option) == errors.OptionError.exit_code
    assert time.perf_counter() - t0 < 30  # no hang (--workers -2 used to)
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err
    assert not out.exists()  # refused before anything was written


# The default cluster's worker runs in this process, but its tasks are pickled: a stand-in must be a
# module-level function (pickled by reference) that records into module-level state.
_REAL_PROCESS_BLOCK = execute.process_block
_CALLS: list[tuple[tuple[int, int], int]] = []  # (block index, torch threads) of every call
_FAIL_ON: set[tuple[int, int]] = set()


def _instrumented(job_, block):
    import torch

    _CALLS.append((block.index, torch.get_num_threads()))
    if block.index in _FAIL_ON:
        raise errors.NotARasterError(f"block {block.index} cannot be read (injected)")
    return _REAL_PROCESS_BLOCK(job_, block)


@pytest.fixture
def instrumented(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[tuple[int, int], int]]]:
    _CALLS.clear()
    _FAIL_ON.clear()
    monkeypatch.setattr(execute, "process_block", _instrumented)
    yield _CALLS
    _FAIL_ON.clear()


def test_threads_are_honoured_by_the_default_cluster(job, tmp_path: Path, instrumented) -> None:
    import torch

    src, model, ref = job
    before = torch.get_num_threads()
    one_block = ["--tile-size", "256", "--overlap", "64", "--chunk-size", "1024"]
    assert _cli(src, model, tmp_path / "a", *one_block, "--threads", "1") == 0
    assert instrumented == [((0, 0), 1)]
    instrumented.clear()
    assert _cli(src, model, tmp_path / "b", *one_block) == 0  # one block: it gets every core
    assert instrumented == [((0, 0), os.cpu_count())]
    assert torch.get_num_threads() == before  # the in-process worker's setting is put back
    assert (tmp_path / "a" / "map.tif").read_bytes() == (tmp_path / "b" / "map.tif").read_bytes() == ref


# ---- (6) network exposure -------------------------------------------------------------------------------
def _listening(proc) -> set[tuple[str, int]]:
    return {(c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet") if c.status == "LISTEN"}


@pytest.mark.parametrize(("workers", "dashboard"), [(None, True), (2, True), (None, False)])
def test_local_cluster_listens_on_loopback_only_and_its_dashboard_link_opens(
    workers: int | None, dashboard: bool
) -> None:
    """Every socket the cluster opens, in this process (in-process worker) or its worker processes;
    the dashboard's pages are served, and announced, only when asked for."""
    import urllib.error
    import urllib.request

    import psutil

    from geopix.cluster import dashboard_link, open_cluster

    links: list[str] = []
    me = psutil.Process()
    before, other_children = _listening(me), {c.pid for c in me.children(recursive=True)}
    with open_cluster(None, workers, announce=links.append, dashboard=dashboard) as client:
        client.wait_for_workers(workers or 1)
        opened = _listening(me) - before
        for child in me.children(recursive=True):
            if child.pid not in other_children:  # not another test's cluster
                opened |= _listening(child)
        assert len(opened) >= 2  # scheduler, its HTTP server, worker HTTP servers
        assert all(ip in ("127.0.0.1", "::1") for ip, _ in opened), opened
        if dashboard:
            assert len(links) == 1 and links[0].startswith("Dask dashboard: http://127.0.0.1:")
            with urllib.request.urlopen(links[0].split(": ", 1)[1], timeout=30) as resp:
                assert resp.status == 200
        else:
            assert links == []
            with pytest.raises(urllib.error.HTTPError) as missing:  # the HTTP server, without the pages
                urllib.request.urlopen(dashboard_link(client, local=True), timeout=30)
            assert missing.value.code == 404


# ---- (7) messages ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra", [[], ["--allow-no-crs"]])
def test_gcp_raster_is_told_to_use_gdalwarp(job, tmp_path: Path, capsys, extra: list[str]) -> None:
    import rasterio
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS

    src, model, _ = job
    gcps = [
        GroundControlPoint(r, c, 500000 + 2 * c, 4000000 - 2 * r) for r, c in ((0, 0), (0, 700), (600, 0), (600, 700))
    ]
    path = tmp_path / "gcp.tif"
    with rasterio.open(src) as s:
        data = s.read([1, 2, 3])
    profile = {"driver": "GTiff", "width": 700, "height": 600, "count": 3, "dtype": "uint8"}
    with rasterio.open(path, "w", **profile, gcps=gcps, crs=CRS.from_epsg(32633)) as d:
        d.write(data)
    out = tmp_path / "o"
    assert _cli(path, model, out, "--scheduler", "sync", *extra) == errors.MissingCRSError.exit_code
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "4 ground control points (EPSG:32633)" in err and f"gdalwarp -r bilinear {path} warped.tif" in err
    assert "gdal_edit" not in err and not out.exists()  # --allow-no-crs does not drop the GCPs silently


def test_truncated_geotiff_names_the_file_and_the_fix_in_one_line(
    job, tmp_path: Path, client_proc: list[subprocess.Popen]
) -> None:
    """Read by a worker of the default cluster: one line, no "Compute Failed ... Traceback" from Dask."""
    src, model, _ = job
    bad = tmp_path / "truncated.tif"
    data = src.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    out, log = tmp_path / "o", tmp_path / "render.log"
    p = _spawn_geopix(["render", str(bad), "-o", str(out), "-m", str(model), *CHUNK, "--no-progress"], log, client_proc)
    assert p.wait(300) == errors.NotARasterError.exit_code
    lines = [ln for ln in log.read_text().splitlines() if ln.strip() and not ln.startswith("Dask dashboard: ")]
    assert len(lines) == 1, lines[:20]
    assert lines[0].startswith(f"error: {bad} cannot be read") and "damaged or truncated" in lines[0]


# ---- (8) a failed block, late errors ---------------------------------------------------------------------------
def test_a_failed_block_is_reported_once_and_not_retried(job, tmp_path: Path, instrumented, capsys) -> None:
    src, model, _ = job
    _FAIL_ON.add((2, 3))
    out = tmp_path / "o"
    assert _cli(src, model, out, *CHUNK) == errors.NotARasterError.exit_code  # the default in-process cluster
    err = capsys.readouterr().err
    attempts = [index for index, _ in instrumented]
    assert attempts.count((2, 3)) == 1 and len(attempts) == len(set(attempts))  # nothing retried
    assert err.count("block (2, 3) cannot be read (injected)") == 1 and "Traceback" not in err
    assert not (out / "map.tif").exists() and 0 < _done(out) < N_BLOCKS  # the rest is kept for a rerun


def test_late_errors_leave_no_empty_output_folder(job, tmp_path: Path) -> None:
    src, model, _ = job
    out = tmp_path / "deep" / "o"
    assert _cli(src, tmp_path / "missing.safetensors", out) == errors.CheckpointError.exit_code
    assert _cli(tmp_path / "missing.tif", model, out) == errors.InputNotFoundError.exit_code
    assert _cli(src, model, out, "--tile-size", "384") == errors.TilingError.exit_code
    assert not out.exists()
