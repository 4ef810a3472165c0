"""Renders on real multi-process Dask clusters started here (scheduler + workers on 127.0.0.1).

Each cluster is `dask scheduler` and `dask worker` subprocesses, as an operator would start
them; every process is killed by a finalizer, also when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geopix import errors
from geopix.cli import main
from geopix.cluster import slots, version_mismatches
from geopix.config import RenderConfig, TileConfig
from geopix.pipeline import render
from geopix.testing import random_checkpoint, synthetic_aerial

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TILES = ["--tile-size", "256", "--overlap", "64", "--chunk-size", "256"]
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


# ---- a cluster of subprocesses -----------------------------------------------------------------
@dataclass
class Cluster:
    """A scheduler and its workers as subprocesses (each its own process group)."""

    address: str
    scheduler_file: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    workdir: Path = Path(".")

    def add_worker(self, nanny: bool = True) -> subprocess.Popen:
        cmd = [str(BIN / "dask"), "worker", self.address, "--nthreads", "1", "--host", "127.0.0.1"]
        cmd += ["--no-dashboard", "--memory-limit", "0", "--local-directory", str(self.workdir)]
        cmd += ["--nanny" if nanny else "--no-nanny", "--death-timeout", "60"]
        proc = _spawn(cmd, self.workdir / f"worker{len(self.procs)}.log")
        self.procs.append(proc)
        return proc

    def client(self):
        from distributed import Client

        return Client(self.address, timeout="30s")

    def dashboard_link(self) -> str:
        with self.client() as c:
            return c.dashboard_link

    def wait_for_workers(self, n: int, timeout: float = 120) -> None:
        with self.client() as c:
            c.wait_for_workers(n, timeout=timeout)

    def stop(self) -> None:
        for p in reversed(self.procs):
            _kill_group(p)


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, **CHILD_ENV}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    with open(log, "wb") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=ROOT)


def _kill_group(p: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(10)


def start_scheduler(workdir: Path) -> Cluster:
    """`dask scheduler` on a free port of 127.0.0.1; its address comes from the scheduler file."""
    workdir.mkdir(parents=True, exist_ok=True)
    sfile = workdir / "scheduler.json"
    cmd = [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0"]
    cmd += ["--scheduler-file", str(sfile)]
    proc = _spawn(cmd, workdir / "scheduler.log")
    cluster = Cluster(address="", scheduler_file=sfile, procs=[proc], workdir=workdir)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if sfile.exists():
            try:
                cluster.address = json.loads(sfile.read_text())["address"]
                return cluster
            except (ValueError, KeyError):
                pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    cluster.stop()
    raise RuntimeError(f"dask scheduler did not start: {(workdir / 'scheduler.log').read_text()[-2000:]}")


def start_cluster(workdir: Path, n_workers: int, nanny: bool = True) -> Cluster:
    cluster = start_scheduler(workdir)
    try:
        for _ in range(n_workers):
            cluster.add_worker(nanny=nanny)
        cluster.wait_for_workers(n_workers)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One scheduler and two single-threaded (nanny-managed) workers for the whole module."""
    c = start_cluster(tmp_path_factory.mktemp("cluster"), 2)
    try:
        yield c
    finally:
        c.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- helpers --------------------------------------------------------------------------------------
def reference(src: Path, model: Path, out: Path, chunk: int = 256) -> bytes:
    """The in-process render every cluster render must equal byte for byte."""
    if not (out / "map.tif").exists():
        render(
            RenderConfig(
                input=src,
                output_dir=out,
                model=str(model),
                tiles=TileConfig(256, 64, chunk),
                scheduler="sync",
            )
        )
    return (out / "map.tif").read_bytes()


def cli_render(src: Path, model: Path, out: Path, *extra: str) -> int:
    return main(["render", str(src), "-o", str(out), "-m", str(model), *TILES, "--no-progress", *extra])


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, bytes]:
    """A 600×700 raster (9 blocks of 256 px... on the 2 m grid: 3×3), an ngf-4 model and its reference."""
    d = tmp_path_factory.mktemp("scene")
    src = synthetic_aerial(d / "scene.tif", (600, 700), res=2.0)
    model = random_checkpoint(d / "m.safetensors", ngf=4)
    return src, model, reference(src, model, d / "ref")


# ---- connection ----------------------------------------------------------------------------------
def test_render_on_a_running_cluster_equals_the_local_render(
    cluster: Cluster, scene: tuple[Path, Path, bytes], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    src, model, ref = scene
    assert cli_render(src, model, tmp_path, "--scheduler", cluster.address, "--threads", "1") == 0
    assert (tmp_path / "map.tif").read_bytes() == ref
    manifest = json.loads((tmp_path / "render.json").read_text())
    assert manifest["blocks"] == 9 and manifest["blocks_resumed"] == 0
    # the scheduler's dashboard link is printed once
    assert capsys.readouterr().err.count(f"Dask dashboard: {cluster.dashboard_link()}\n") == 1
    # both workers took part: each loaded the model (it is cached per worker process)
    with cluster.client() as c:
        loaded = c.run(lambda: len(__import__("geopix.execute").execute._MODELS))
    assert len(loaded) == 2 and all(n >= 1 for n in loaded.values())


def test_scheduler_file_and_environment_variable(
    cluster: Cluster,
    scene: tuple[Path, Path, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    src, model, ref = scene
    assert cli_render(src, model, tmp_path / "f", "--scheduler-file", str(cluster.scheduler_file)) == 0
    assert (tmp_path / "f" / "map.tif").read_bytes() == ref
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.address)
    assert cli_render(src, model, tmp_path / "e") == 0
    assert (tmp_path / "e" / "map.tif").read_bytes() == ref
    # both used the running cluster, not a LocalCluster (that would print its own dashboard link)
    err = capsys.readouterr().err
    assert err.count("Dask dashboard: ") == 2 and err.count(f"Dask dashboard: {cluster.dashboard_link()}\n") == 2
    assert cli_render(src, model, tmp_path / "x", "--scheduler-file", str(tmp_path / "nope.json")) == 16
    both = ("--scheduler", cluster.address, "--scheduler-file", str(cluster.scheduler_file))
    assert cli_render(src, model, tmp_path / "y", *both) == 16


def test_unreachable_scheduler_fails_fast_with_cluster_error(
    scene: tuple[Path, Path, bytes], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import dask

    src, model, _ = scene
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        code = cli_render(src, model, tmp_path, "--scheduler", f"tcp://127.0.0.1:{port}")
    assert code == errors.ClusterError.exit_code == 16
    assert time.monotonic() - t0 < 30
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in capsys.readouterr().err
    assert not (tmp_path / "map.tif").exists()


def test_scheduler_without_workers_is_a_cluster_error(
    scene: tuple[Path, Path, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    src, model, _ = scene
    lonely = start_scheduler(tmp_path / "lonely")
    try:
        monkeypatch.setenv("GEOPIX_WORKER_WAIT", "1")
        assert cli_render(src, model, tmp_path / "o", "--scheduler", lonely.address) == 16
        assert "has no workers" in capsys.readouterr().err
    finally:
        lonely.stop()


def test_scheduler_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from geopix.cluster import resolve_scheduler

    sfile = tmp_path / "s.json"
    sfile.write_text("{}")
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:1")
    assert resolve_scheduler("tcp://127.0.0.1:2") == "tcp://127.0.0.1:2"  # the option wins over the env
    assert resolve_scheduler("sync") == "sync"
    assert resolve_scheduler(None, sfile) == str(sfile)
    assert resolve_scheduler(None, None) == "tcp://127.0.0.1:1"
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
    assert resolve_scheduler(None, None) is None  # a local cluster
    with pytest.raises(errors.ClusterError, match="not both"):
        resolve_scheduler("tcp://127.0.0.1:2", sfile)
    with pytest.raises(errors.ClusterError, match="does not exist"):
        resolve_scheduler(None, tmp_path / "missing.json")


def test_live_cluster_versions_match(cluster: Cluster) -> None:
    with cluster.client() as c:
        versions = c.get_versions(packages=["geopix", "torch"])
    assert set(versions["workers"]) and version_mismatches(versions) == []


def _versions(worker_pkgs: dict[str, str | None]) -> dict:
    base = {"python": "3.11.7.final.0", "dask": "2026.8.0", "distributed": "2026.8.0", "cloudpickle": "3.1.2"}
    base |= {"msgpack": "1.2.4", "geopix": "0.1.0", "torch": "2.13.0+cpu"}
    return {
        "client": {"packages": dict(base)},
        "scheduler": {"packages": {k: v for k, v in base.items() if k not in ("geopix", "torch")}},
        "workers": {"tcp://w1": {"packages": dict(base)}, "tcp://w2": {"packages": {**base, **worker_pkgs}}},
    }


@pytest.mark.parametrize(
    ("worker", "problem"),
    [
        ({}, None),
        ({"torch": "2.13.0+cu126"}, None),  # a GPU worker beside CPU ones is fine
        ({"python": "3.11.9.final.0"}, None),  # patch releases pickle alike
        ({"geopix": "0.0.9"}, "worker tcp://w2: geopix 0.0.9 (client has 0.1.0)"),
        ({"torch": None}, "worker tcp://w2: torch MISSING (client has 2.13.0)"),
        ({"distributed": "2025.1.0"}, "worker tcp://w2: distributed 2025.1.0"),
        ({"python": "3.12.1.final.0"}, "worker tcp://w2: python 3.12"),
    ],
)
def test_version_mismatches_name_the_worker_and_package(worker: dict, problem: str | None) -> None:
    found = version_mismatches(_versions(worker))
    if problem is None:
        assert found == []
    else:
        assert len(found) == 1 and found[0].startswith(problem)


def test_version_mismatch_refuses_the_cluster(
    cluster: Cluster, scene: tuple[Path, Path, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import geopix.cluster as cluster_mod

    src, model, _ = scene
    real = cluster_mod.version_mismatches
    monkeypatch.setattr(
        cluster_mod, "version_mismatches", lambda v: [*real(v), "worker tcp://x: geopix 9 (client has 1)"]
    )
    assert cli_render(src, model, tmp_path, "--scheduler", cluster.address) == 16
    assert not (tmp_path / "map.tif").exists()


# ---- back-pressure and the dashboard on the local cluster -------------------------------------------
def test_in_flight_tasks_stay_bounded_whatever_the_raster_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The client holds at most 2 futures per worker: its memory does not grow with the raster."""
    import geopix.pipeline as pipeline

    model = random_checkpoint(tmp_path / "m.safetensors", ngf=4)
    peaks: list[tuple[float, int]] = []
    real = pipeline.run_tasks

    def counting(fn, common, blocks, on_done, client, **kw):
        state = {"pending": 0, "peak": 0, "submitted": 0}

        class Counting:
            def __getattr__(self, name):
                return getattr(client, name)

            def submit(self, *a, **kw):
                state["pending"] += 1
                state["submitted"] += 1
                state["peak"] = max(state["peak"], state["pending"])
                return client.submit(*a, **kw)

        def done(block, stats):
            state["pending"] -= 1
            on_done(block, stats)

        threads = slots(client)  # as run_tasks sees it: a worker still starting on a busy machine is not counted
        real(fn, common, blocks, done, Counting(), **kw)
        peaks.append((state["peak"] / threads, state["submitted"]))
        assert 1 <= threads <= 2  # --workers 2, one thread each

    monkeypatch.setattr(pipeline, "run_tasks", counting)
    for size, dashboard in ((300, ["--dashboard"]), (660, [])):  # 3×3 and 6×6 blocks of 128 px (2 m grid)
        src = synthetic_aerial(tmp_path / f"s{size}.tif", size, res=2.0)
        args = ["render", str(src), "-o", str(tmp_path / str(size)), "-m", str(model), "--workers", "2", *dashboard]
        assert main([*args, "--chunk-size", "128", "--overlap", "64", "--no-progress"]) == 0
    assert peaks == [(2, 9), (2, 36)]  # the peak is 2 per worker thread, for 9 or 36 blocks alike
    err = capsys.readouterr().err
    # the local cluster's dashboard (ephemeral port) is announced once, by the render that asked for it
    assert err.count("Dask dashboard: http://127.0.0.1:") == 1


# ---- workflows ----------------------------------------------------------------------------------------
def _load_workflow(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"wf_{name}", ROOT / "workflows" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(shutil.which("gdalbuildvrt") is None, reason="--mosaic needs gdalbuildvrt (apt: gdal-bin)")
def test_render_many_scenes_and_a_mosaic_on_one_cluster(cluster: Cluster, tmp_path: Path) -> None:
    wf = _load_workflow("render_many")
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    # two neighbouring scenes on one grid: west and east halves of a 300 × 500 px area
    a = synthetic_aerial(scenes / "west.tif", (300, 250), res=2.0, seed=1)
    b = synthetic_aerial(scenes / "east.tif", (300, 250), res=2.0, origin=(500500.0, 5300000.0), seed=2)
    model = random_checkpoint(tmp_path / "m.safetensors", ngf=4)
    tiles = TileConfig(256, 64, 256)
    res = wf.render_many([scenes], tmp_path / "out", model=str(model), scheduler=cluster.address, tiles=tiles)
    assert sorted(res) == ["east", "west"]
    for name, src in (("west", a), ("east", b)):
        assert res[name].map_path.read_bytes() == reference(src, model, tmp_path / f"ref_{name}")
    mos = wf.render_many(
        [a, b], tmp_path / "out", model=str(model), scheduler=cluster.address, mosaic=True, tiles=tiles
    )
    # the mosaic is one seamless render: the same pixels as rendering one GeoTIFF holding both scenes
    with rasterio.open(a) as w, rasterio.open(b) as e:
        profile = {**w.profile, "width": 500}
        both = np.concatenate([w.read(), e.read()], axis=2)
    with rasterio.open(tmp_path / "both.tif", "w", **profile) as dst:
        dst.write(both)
    reference(tmp_path / "both.tif", model, tmp_path / "ref_both")
    with rasterio.open(mos["mosaic"].map_path) as m, rasterio.open(tmp_path / "ref_both" / "map.tif") as r:
        assert (m.width, m.height, m.crs, m.transform) == (500, 300, r.crs, r.transform)
        assert np.array_equal(m.read(), r.read()) and np.array_equal(m.dataset_mask(), r.dataset_mask())
    with pytest.raises(errors.InputNotFoundError):
        wf.render_many([tmp_path / "nothing"], tmp_path / "x", model=str(model), scheduler=cluster.address)


def test_render_many_mosaic_refuses_a_scene_in_another_crs(tmp_path: Path) -> None:
    """gdalbuildvrt would leave it out with a warning; the mosaic must not silently lack a scene."""
    wf = _load_workflow("render_many")
    a = synthetic_aerial(tmp_path / "a.tif", (64, 64), res=2.0)
    b = synthetic_aerial(tmp_path / "b.tif", (64, 64), res=2.0, crs="EPSG:32632")
    with pytest.raises(errors.GeopixError, match=r"b\.tif is in EPSG:32632 but .*a\.tif is in EPSG:32633; reproject"):
        wf.render_many([a, b], tmp_path / "out", model="sat2map", scheduler="sync", mosaic=True)
    assert not (tmp_path / "out" / "mosaic.vrt").exists()


def test_render_many_cli_starts_and_closes_its_own_cluster(tmp_path: Path) -> None:
    src = synthetic_aerial(tmp_path / "one.tif", (200, 200), res=2.0)
    model = random_checkpoint(tmp_path / "m.safetensors", ngf=4)
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "workflows" / "render_many.py"),
            str(src),
            "-o",
            str(tmp_path / "o"),
            "-m",
            str(model),
            "--workers",
            "1",
            "--chunk-size",
            "256",
            "--overlap",
            "64",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **CHILD_ENV},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "one: " in proc.stdout and (tmp_path / "o" / "one" / "map.tif").exists()
    assert "Dask dashboard: http://" in proc.stderr
    assert (tmp_path / "o" / "one" / "map.tif").read_bytes() == reference(src, model, tmp_path / "ref")


def test_slurm_recipe_job_script(tmp_path: Path) -> None:
    pytest.importorskip("dask_jobqueue")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "workflows" / "slurm.py"),
            "--print-job-script",
            "--gpus",
            "1",
            "--partition",
            "gpu",
            "--venv",
            "/shared/geopix/.venv",
            "in.tif",
            "-o",
            "out",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **CHILD_ENV},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    script = proc.stdout
    assert script.startswith("#!/usr/bin/env bash") and "#SBATCH -p gpu" in script
    assert "#SBATCH --gres=gpu:1" in script and "source /shared/geopix/.venv/bin/activate" in script
    assert script.count("--nthreads") == 1 and "--nthreads 1" in script and "distributed.cli.dask_worker" in script


def test_kubernetes_recipe_is_a_valid_daskcluster() -> None:
    wf = _load_workflow("kubernetes")
    doc = wf.load_spec(ROOT / "workflows" / "kubernetes.yaml")
    assert wf.validate(doc) == []
    assert doc["kind"] == "DaskCluster" and doc["apiVersion"] == "kubernetes.dask.org/v1"
    broken = json.loads(json.dumps(doc))
    broken["spec"]["worker"]["spec"]["containers"][0]["args"] = ["dask-worker"]
    assert any("--nthreads 1" in p for p in wf.validate(broken))
    del broken["spec"]["scheduler"]
    assert any("spec.scheduler" in p for p in wf.validate(broken))


def test_dask_cuda_recipe_falls_back_to_a_local_cluster(tmp_path: Path) -> None:
    wf = _load_workflow("dask_cuda_node")
    cluster, kind = wf.make_cluster(n_workers=1)
    try:
        import torch

        expected = "LocalCUDACluster" if wf.has_dask_cuda() and torch.cuda.is_available() else "LocalCluster"
        assert kind == expected and type(cluster).__name__ == expected
        assert len(cluster.scheduler_info["workers"]) == 1
        # loopback only: the scheduler, its workers and the dashboard
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert all(w.startswith("tcp://127.0.0.1:") for w in cluster.scheduler_info["workers"])
        assert _listening_here() == {"127.0.0.1"}  # the scheduler and its dashboard
    finally:
        cluster.close()


def test_render_many_starts_a_loopback_cluster() -> None:
    cluster = _load_workflow("render_many")._start_cluster(1)
    try:
        assert _listening_here() == {"127.0.0.1"}
        assert all(w.startswith("tcp://127.0.0.1:") for w in cluster.scheduler_info["workers"])
    finally:
        cluster.close()


def _listening_here() -> set[str]:
    """The addresses this process listens on (a LocalCluster's scheduler and dashboard live here)."""
    import psutil  # distributed's own dependency

    return {c.laddr.ip for c in psutil.Process().net_connections("tcp") if c.status == psutil.CONN_LISTEN}


def test_the_workflow_scripts_take_an_existing_scheduler(cluster: Cluster, tmp_path: Path) -> None:
    """workflows/README.md says every recipe can be pointed at a running cluster with --scheduler."""
    src = synthetic_aerial(tmp_path / "city.tif", (200, 200), res=2.0)
    model = random_checkpoint(tmp_path / "m.safetensors", ngf=4)
    wf = _load_workflow("dask_cuda_node")
    assert wf.main([str(src), "-o", str(tmp_path / "cuda"), "-m", str(model), "--scheduler", cluster.address]) == 0
    assert (tmp_path / "cuda" / "map.tif").exists()
    script = [str(ROOT / "workflows" / "render_city.sh"), str(src), str(tmp_path / "sh"), str(model)]
    proc = subprocess.run(
        ["bash", *script, "--scheduler", cluster.address, "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **CHILD_ENV, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "sh" / "map.tif").exists() and (tmp_path / "sh" / "tiles.pmtiles").exists()
    # the option really reaches geopix render: an address where nothing listens fails as a ClusterError
    env = {**os.environ, **CHILD_ENV, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env["DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT"] = "2s"
    bad = [*script[:2], str(tmp_path / "bad"), str(model), "--scheduler", f"tcp://127.0.0.1:{free_port()}"]
    proc = subprocess.run(["bash", *bad], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == errors.ClusterError.exit_code, proc.stderr[-2000:]


def test_dask_cuda_recipe_renders_on_the_given_scheduler_not_its_own(
    scene: tuple[Path, Path, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """``--scheduler`` replaces the LocalCUDACluster: none is started, and the render goes to the address
    given, so an address where nothing listens is a ClusterError naming it (not a render on a fresh cluster)."""
    import dask
    import distributed

    src, model, _ = scene
    wf = _load_workflow("dask_cuda_node")

    def no_cluster(*_a: object, **_k: object) -> None:
        raise AssertionError("--scheduler was given, yet the recipe started a cluster of its own")

    monkeypatch.setattr(wf, "make_cluster", no_cluster)
    monkeypatch.setattr(distributed, "LocalCluster", no_cluster)
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        code = wf.main([str(src), "-o", str(tmp_path / "o"), "-m", str(model), "--scheduler", address])
    assert code == errors.ClusterError.exit_code
    assert f"cannot reach the Dask scheduler at {address}" in capsys.readouterr().err
    assert not (tmp_path / "o" / "map.tif").exists()


@pytest.mark.parametrize(("workers", "dashboard"), [(None, False), (None, True), (2, False)])
def test_a_local_cluster_samples_no_stacks_without_a_dashboard_and_steals_only_between_workers(
    workers: int | None, dashboard: bool
) -> None:
    """Dask's profiler walks every thread's stack each 10 ms holding the GIL, for a dashboard
    page; work stealing needs a second worker.  Settings of geopix's own cluster only."""
    import dask

    from geopix.cluster import connect

    client, cluster = connect(None, workers, dashboard)
    try:
        assert ("stealing" in cluster.scheduler.extensions) == (workers is not None)
        profiling = client.run(lambda dask_worker: "profile" in dask_worker.periodic_callbacks)
        assert set(profiling.values()) == {dashboard}
    finally:
        client.close()
        cluster.close()
    assert dask.config.get("distributed.worker.profile.enabled") and dask.config.get(
        "distributed.scheduler.work-stealing"
    )
