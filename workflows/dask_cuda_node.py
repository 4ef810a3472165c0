"""Render on every GPU of one machine: one Dask worker per GPU with dask-cuda.

    pip install -e ".[gpu]"          # dask-cuda, beside the CUDA build of torch
    python workflows/dask_cuda_node.py city.tif -o out/ --model sat2map
    CUDA_VISIBLE_DEVICES=0,2 python workflows/dask_cuda_node.py city.tif -o out/   # only GPUs 0 and 2
    python workflows/dask_cuda_node.py city.tif -o out/ --scheduler tcp://HOST:8786  # GPU workers already up

``LocalCUDACluster`` starts one worker process per visible GPU and pins each to its GPU by
rotating ``CUDA_VISIBLE_DEVICES`` (worker k sees GPU k as ``cuda:0``), so ``--device auto`` in
each worker uses its own GPU and loads the model once into it.  Each worker runs one thread:
one block at a time per GPU (a block is already a stream of batches).  Without dask-cuda or
without a GPU this falls back to a CPU ``LocalCluster`` and says so, so the recipe runs anywhere.

Across machines, start ``dask scheduler`` once and on each GPU node
``dask cuda worker tcp://SCHEDULER:8786 --nthreads 1`` (one worker per GPU, same pinning);
CPU-only nodes join the same scheduler with ``dask worker ... --nthreads 1`` and take blocks
too (mixed clusters render the same bytes only if CPU and GPU kernels agree, which they do
not bit for bit: use one kind of worker per render when exact reproducibility matters).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def has_dask_cuda() -> bool:
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        return False
    return True


def make_cluster(n_workers: int | None = None):
    """``(cluster, kind)``: a LocalCUDACluster when dask-cuda and a GPU are there, else a LocalCluster."""
    import torch

    if has_dask_cuda() and torch.cuda.is_available():
        from dask_cuda import LocalCUDACluster

        kw = {"n_workers": n_workers} if n_workers else {}
        # Loopback only, and the workers' own logs silenced as geopix.cluster.connect does: a failed
        # task is reported once, by the client; a heartbeat racing shutdown is not the user's business.
        quiet = {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0", "silence_logs": logging.CRITICAL}
        return LocalCUDACluster(threads_per_worker=1, **quiet, **kw), "LocalCUDACluster"
    why = "dask-cuda is not installed" if not has_dask_cuda() else "torch sees no CUDA GPU"
    print(f"{why}: using a CPU LocalCluster instead", file=sys.stderr)
    from geopix.cluster import connect, default_workers

    client, cluster = connect(None, n_workers or default_workers(), dashboard=True)  # as `geopix render --workers N`
    client.close()  # it only waited for the workers to join
    return cluster, "LocalCluster"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("-m", "--model", default="sat2map")
    ap.add_argument("--workers", type=int, default=None, help="default: one per visible GPU")
    ap.add_argument("--chunk-size", type=int, default=2048, help="bigger blocks: less per-task overhead per GPU")
    ap.add_argument("--batch-size", type=int, default=32, help="tiles per forward pass (GPUs like big batches)")
    ap.add_argument(
        "--scheduler",
        default=None,
        help="an existing cluster (tcp://HOST:8786 or a scheduler file, e.g. of `dask cuda worker` nodes) "
        "instead of starting a LocalCUDACluster here",
    )
    args = ap.parse_args(argv)
    from geopix.config import InferConfig, RenderConfig, TileConfig
    from geopix.errors import GeopixError
    from geopix.pipeline import render

    cluster = None
    if args.scheduler is None:
        cluster, kind = make_cluster(args.workers)
        print(f"{kind} with {len(cluster.scheduler_info['workers'])} workers; dashboard {cluster.dashboard_link}")
    try:
        result = render(
            RenderConfig(
                input=Path(args.input),
                output_dir=Path(args.output),
                model=args.model,
                tiles=TileConfig(chunk_size=args.chunk_size),
                infer=InferConfig(batch_size=args.batch_size),
                scheduler=args.scheduler or cluster.scheduler_address,
            )
        )
    except GeopixError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        if cluster is not None:
            cluster.close()
    print(f"{result.map_path}: {result.tiles_run} tiles, {result.tiles_per_second:.1f} tiles/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
