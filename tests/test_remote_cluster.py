"""A cluster with no shared folder: the input and output exist only as URLs (moto's S3 on
127.0.0.1), each `dask worker` runs in its own empty folder, and the checkpoint reaches the
workers from the client (checksum verified).  The map equals the local render byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from geopix.cli import main
from geopix.models.distribute import CACHE_ENV, worker_checkpoint
from tests.test_cluster import BIN, CHILD_ENV, TILES, reference, start_scheduler


def _worker(cluster, home: Path) -> None:
    """A worker whose working folder, local directory and model cache are its own empty folder."""
    home.mkdir(parents=True)
    cmd = [str(BIN / "dask"), "worker", cluster.address, "--nthreads", "1", "--host", "127.0.0.1"]
    cmd += ["--no-dashboard", "--memory-limit", "0", "--local-directory", str(home / "dask"), "--death-timeout", "60"]
    env = {**os.environ, **CHILD_ENV, CACHE_ENV: str(home / "models")}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    with open(home / "worker.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=home)
    cluster.procs.append(proc)


def _render_on_cluster(tmp_path: Path, homes: list[Path], src: str, out: str, model: Path) -> None:
    """``geopix render SRC -o OUT`` on a scheduler with a worker in each of ``homes``."""
    cluster = start_scheduler(tmp_path / "scheduler")
    try:
        for home in homes:
            _worker(cluster, home)
        cluster.wait_for_workers(len(homes))
        argv = ["render", src, "-o", out, "-m", str(model), *TILES]
        assert main([*argv, "--no-progress", "--scheduler", cluster.address]) == 0
    finally:
        cluster.stop()


def test_no_shared_folder_cluster_renders_bucket_to_bucket(
    s3_bucket: str, aerial: Path, checkpoint: Path, tmp_path: Path
) -> None:
    from geopix.remote import filesystem
    from geopix.testservers import upload_to_s3

    want = reference(aerial, checkpoint, tmp_path / "ref")
    upload_to_s3(aerial, f"s3://{s3_bucket}/cluster-in/{aerial.name}")
    homes = [tmp_path / f"worker{i}" for i in range(2)]
    out = f"s3://{s3_bucket}/cluster-out"
    _render_on_cluster(tmp_path, homes, f"s3://{s3_bucket}/cluster-in/{aerial.name}", out, checkpoint)
    fs, _ = filesystem(out)
    assert fs.cat_file(f"{s3_bucket}/cluster-out/map.tif") == want
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{s3_bucket}/cluster-out")) == ["map.tif", "render.json"]
    # each worker got the checkpoint from the client, into its own folder, checksum intact
    sha = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    for home in homes:
        assert (home / "models" / f"{sha}.safetensors").read_bytes() == checkpoint.read_bytes()
        assert not (home / "map.zarr").exists() and not list(home.glob("*.tif"))


def test_worker_refuses_a_registry_model_that_differs(tmp_path: Path, checkpoint: Path) -> None:
    from geopix.errors import CheckpointError

    with pytest.raises(CheckpointError, match="differ from the client's"):
        worker_checkpoint("/client/only/sat2map.safetensors", "0" * 64, "sat2map")
    with pytest.raises(CheckpointError, match="no copy"):
        worker_checkpoint(str(tmp_path / "absent.safetensors"), "1" * 64, None)
    # the client's file, when this worker sees it, must have the client's checksum
    sha = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert worker_checkpoint(str(checkpoint), sha, None) == str(checkpoint)
    with pytest.raises(CheckpointError):
        worker_checkpoint(str(checkpoint), "2" * 64, None)


def test_install_verifies_the_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from geopix.errors import CheckpointError
    from geopix.models.distribute import install

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    data = b"weights"
    sha = hashlib.sha256(data).hexdigest()
    assert install(data, sha, ".safetensors").read_bytes() == data
    with pytest.raises(CheckpointError, match="SHA-256"):
        install(b"tampered", sha, ".safetensors")


def test_kubernetes_bucket_recipe_needs_no_volume() -> None:
    from tests.test_cluster import ROOT, _load_workflow

    wf = _load_workflow("kubernetes")
    doc = wf.load_spec(ROOT / "workflows" / "kubernetes-bucket.yaml")
    assert wf.validate(doc) == []
    worker = doc["spec"]["worker"]["spec"]
    assert "volumes" not in worker and "volumeMounts" not in worker["containers"][0]
    # no credential value in the spec itself: they come from a secret
    assert not any("SECRET" in e["name"] for e in worker["containers"][0].get("env", []))
    broken = json.loads(json.dumps(doc))
    del broken["spec"]["worker"]["spec"]["containers"][0]["envFrom"]
    broken["spec"]["worker"]["spec"]["containers"][0]["env"] = [{"name": "OMP_NUM_THREADS", "value": "4"}]
    assert any("object-store credentials" in p for p in wf.validate(broken))


def test_on_a_cluster_a_worker_reads_the_colour_statistics(
    s3_bucket: str, aerial: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client reads only the raster's header: the statistics' overview is read by a worker,
    and the map is the one the in-process render (which reads it itself) makes."""
    import geopix.read
    from geopix.models.registry import load_model
    from geopix.remote import filesystem
    from geopix.testing import random_checkpoint
    from geopix.testservers import upload_to_s3

    stats = load_model("sat2map").spec.input_stats
    model = random_checkpoint(tmp_path / "stats.safetensors", ngf=4, input_stats=stats)
    want = reference(aerial, model, tmp_path / "ref")
    upload_to_s3(aerial, f"s3://{s3_bucket}/stats-in/{aerial.name}")
    calls: list[str] = []
    real = geopix.read.colour_match

    def colour_match(info, target):  # runs wherever the task runs; records only in this process
        calls.append(info.path)
        return real(info, target)

    monkeypatch.setattr(geopix.read, "colour_match", colour_match)
    monkeypatch.setattr("geopix.pipeline.colour_match", colour_match)
    monkeypatch.setattr("geopix.pipeline.colour_statistics", lambda info, stop: calls.append(info.path))
    out = f"s3://{s3_bucket}/stats-out"
    _render_on_cluster(tmp_path, [tmp_path / "worker"], f"s3://{s3_bucket}/stats-in/{aerial.name}", out, model)
    assert calls == []  # not in the client
    fs, _ = filesystem(out)
    assert fs.cat_file(f"{s3_bucket}/stats-out/map.tif") == want
