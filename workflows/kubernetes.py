"""Render on Kubernetes with the dask-kubernetes operator and ``workflows/kubernetes.yaml``.

    python workflows/kubernetes.py --validate                       # check the resource, needs nothing
    python workflows/kubernetes.py --apply city.tif -o /data/out   # create the cluster, render, delete it

``--apply`` needs ``pip install dask-kubernetes``, a kubeconfig and the operator installed in
the Kubernetes cluster (see the YAML's header).  With ``kubernetes.yaml`` the client must see
the same ``/data`` volume as the workers (run it in a pod, or mount the share locally); with
``--spec workflows/kubernetes-bucket.yaml`` nothing is shared: input and output are bucket URLs
(``--apply s3://imagery/city.tif -o s3://maps/city``).  Without the operator,
``kubectl apply -f workflows/kubernetes.yaml`` plus ``--scheduler`` does the same by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load_spec(path: Path = HERE / "kubernetes.yaml") -> dict:
    import yaml

    with open(path) as f:
        return yaml.safe_load(f)


def _container(doc: dict, role: str) -> dict:
    return doc["spec"][role]["spec"]["containers"][0]


def validate(doc: dict) -> list[str]:
    """Problems that would make the resource invalid or a poor fit for geopix (empty: fine)."""
    problems = []
    if doc.get("apiVersion") != "kubernetes.dask.org/v1" or doc.get("kind") != "DaskCluster":
        problems.append("apiVersion/kind must be kubernetes.dask.org/v1 DaskCluster")
    if not doc.get("metadata", {}).get("name"):
        problems.append("metadata.name is missing")
    for role in ("scheduler", "worker"):
        try:
            c = _container(doc, role)
        except (KeyError, IndexError, TypeError):
            problems.append(f"spec.{role}.spec.containers[0] is missing")
            continue
        if not c.get("image"):
            problems.append(f"spec.{role}: container has no image")
        if not all(isinstance(a, str) for a in c.get("args", [])):
            problems.append(f"spec.{role}: container args must be strings")
    try:
        w = _container(doc, "worker")
        args = [str(a) for a in w.get("args", [])]
        if not any(args[i : i + 2] == ["--nthreads", "1"] for i in range(len(args))):
            problems.append("worker args need --nthreads 1 (one model, one block at a time per worker)")
        mounted = any(m.get("mountPath") for m in w.get("volumeMounts", []))
        env_names = {e.get("name", "") for e in w.get("env", [])}
        store_access = bool(w.get("envFrom")) or any(n.startswith(("AWS_", "GOOGLE_", "AZURE_")) for n in env_names)
        if not (mounted or store_access):
            problems.append(
                "workers need either the shared data volume mounted, or object-store credentials "
                "(envFrom a secret / AWS_*, GOOGLE_*, AZURE_* env) for s3://, gs://, az:// inputs and outputs"
            )
        if not isinstance(doc["spec"]["worker"].get("replicas"), int):
            problems.append("spec.worker.replicas must be an integer")
    except (KeyError, IndexError, TypeError):
        pass
    ports = doc.get("spec", {}).get("scheduler", {}).get("service", {}).get("ports", [])
    if 8786 not in [p.get("port") for p in ports]:
        problems.append("spec.scheduler.service must expose port 8786 (tcp-comm)")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input", nargs="?")
    ap.add_argument("-o", "--output")
    ap.add_argument("-m", "--model", default="sat2map")
    ap.add_argument("--spec", type=Path, default=HERE / "kubernetes.yaml")
    ap.add_argument("--workers", type=int, default=None, help="worker replicas (default: the YAML's)")
    ap.add_argument("--validate", action="store_true", help="only check the YAML")
    ap.add_argument("--apply", action="store_true", help="create the DaskCluster, render, then delete it")
    args = ap.parse_args(argv)
    doc = load_spec(args.spec)
    problems = validate(doc)
    for p in problems:
        print(f"{args.spec}: {p}", file=sys.stderr)
    if problems or args.validate or not args.apply:
        if not problems:
            print(f"{args.spec}: valid DaskCluster {doc['metadata']['name']!r}")
        return 1 if problems else 0
    if not (args.input and args.output):
        ap.error("--apply needs INPUT and -o OUTPUT")
    try:
        from dask_kubernetes.operator import KubeCluster
    except ImportError:
        print("--apply needs `pip install dask-kubernetes` and the operator in the cluster", file=sys.stderr)
        return 2
    from geopix.config import RenderConfig
    from geopix.errors import GeopixError
    from geopix.pipeline import render

    cluster = KubeCluster(custom_cluster_spec=doc)
    try:
        if args.workers:
            cluster.scale(args.workers)
        print(f"Dask dashboard: {cluster.dashboard_link}", file=sys.stderr)
        result = render(
            RenderConfig(
                input=args.input,  # a path on the shared volume, or a URL (s3://…)
                output_dir=args.output,
                model=args.model,
                scheduler=cluster.scheduler_address,
            )
        )
        print(f"{result.map_path}: {result.tiles_run} tiles in {result.seconds:.0f} s")
    except GeopixError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
