"""Scaling benchmark: throughput with 1 vs 2 workers, and the fixed cost of one block task.

    python benchmarks/bench_scaling.py [--size 1500] [--ngf 16] [--json scaling.json]

* ``throughput``: the same synthetic raster rendered on a warm LocalCluster of 1 and of 2
  single-threaded workers (torch 1 thread each), tiles/s and speed-up;
* ``overhead``: (a) no-op tasks through geopix's submission loop (2 in flight per worker),
  (b) the same no-op tasks submitted all at once (the scheduler's own ceiling), and (c) a
  render with a trivially small model (ngf 1) on many 128-px blocks: wall time per block minus
  the worker-seconds the block's stages account for = what a block costs besides its work.

Prints figures and writes JSON; nothing is asserted (figures are for people; they are noisy on
a shared machine).  ``docs/scaling.md`` turns them into a model for N GPU workers.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from harness import machine, write_json

from geopix.cluster import run_tasks
from geopix.config import InferConfig, RenderConfig, TileConfig
from geopix.pipeline import render
from geopix.testing import random_checkpoint, synthetic_aerial


def _cluster(n: int):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=n, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0", silence_logs=40
    )
    return cluster, Client(cluster)


def _render(src: Path, out: Path, model: Path, scheduler: str, chunk: int) -> dict:
    t0 = time.perf_counter()
    r = render(
        RenderConfig(
            input=src,
            output_dir=out,
            model=str(model),
            tiles=TileConfig(256, 64, chunk),
            infer=InferConfig(threads=1, batch_size=8),
            scheduler=scheduler,
            overwrite=True,
        )
    )
    wall = time.perf_counter() - t0
    return {
        "seconds": round(wall, 3),
        "tiles_run": r.tiles_run,
        "tiles_per_second": round(r.tiles_run / wall, 3),
        "blocks": r.blocks,
        "stage_worker_seconds": r.stage_seconds,
    }


def throughput(tmp: Path, size: int, ngf: int, chunk: int, repeats: int) -> dict:
    src = synthetic_aerial(tmp / "scene.tif", size, res=2.0)
    model = random_checkpoint(tmp / f"ngf{ngf}.safetensors", ngf=ngf)
    out: dict = {"size": size, "ngf": ngf, "chunk": chunk}
    for n in (1, 2):
        cluster, client = _cluster(n)
        try:
            _render(src, tmp / f"warm{n}", model, cluster.scheduler_address, chunk)  # load the model everywhere
            runs = [_render(src, tmp / f"o{n}_{k}", model, cluster.scheduler_address, chunk) for k in range(repeats)]
        finally:
            client.close()
            cluster.close()
        best = min(runs, key=lambda r: r["seconds"])
        out[f"workers_{n}"] = {**best, "all_seconds": [r["seconds"] for r in runs]}
        print(
            f"{n} worker(s): {best['tiles_per_second']:.2f} tiles/s ({best['seconds']:.1f} s, {best['blocks']} blocks)"
        )
    out["speedup_2_vs_1"] = round(out["workers_2"]["tiles_per_second"] / out["workers_1"]["tiles_per_second"], 3)
    # per output megapixel and per tile, from the 1-worker run: the inputs of the model in docs/scaling.md
    one, mpx = out["workers_1"], size * size / 1e6
    st = one["stage_worker_seconds"]
    out["per_unit"] = {
        "cpu_stages_s_per_mpx": round((st["read"] + st["blend"] + st["write"]) / mpx, 4),
        "read_s_per_mpx": round(st["read"] / mpx, 4),
        "write_s_per_mpx": round(st["write"] / mpx, 4),
        "finalize_cog_s_per_mpx": round(st["finalize"] / mpx, 4),
        "infer_s_per_tile": round(st["infer"] / one["tiles_run"], 4),
        # >1 means the 2 workers shared cores with other processes (worker-seconds grew)
        "worker_seconds_ratio_2_vs_1": round(
            sum(out["workers_2"]["stage_worker_seconds"].values()) / sum(st.values()), 3
        ),
    }
    print(f"speed-up 2 vs 1 workers: {out['speedup_2_vs_1']:.2f}×")
    return out


def _noop(i: int) -> int:
    return i


def overhead(tmp: Path, n_tasks: int) -> dict:
    from distributed import wait

    out: dict = {}
    cluster, client = _cluster(2)
    try:
        client.submit(_noop, -1).result()

        # (a) geopix's loop: 2 tasks in flight per worker, results consumed one by one
        class _Job:
            pass

        count = {"n": 0}

        def on_done(_b, _s) -> None:
            count["n"] += 1

        blocks = list(range(n_tasks))
        t0 = time.perf_counter()
        # the loop only: a task that returns at once (cloudpickle ships the lambda)
        run_tasks(lambda job, block: {}, (_Job(),), blocks, on_done, client, label="bench", max_in_flight=4)
        dt = time.perf_counter() - t0
        out["bounded_loop_tasks_per_second"] = round(count["n"] / dt, 1)
        out["bounded_loop_ms_per_task"] = round(1000 * dt / count["n"], 3)

        # (b) all at once: the scheduler's own ceiling on this machine
        t0 = time.perf_counter()
        futs = client.map(_noop, range(n_tasks), pure=False)
        wait(futs)
        dt = time.perf_counter() - t0
        del futs
        out["unbounded_tasks_per_second"] = round(n_tasks / dt, 1)

        # (c) real blocks with almost no work: what a block costs besides read/infer/blend/write
        src = synthetic_aerial(tmp / "tiny.tif", 1024, res=2.0)
        model = random_checkpoint(tmp / "ngf1.safetensors", ngf=1)
        _render(src, tmp / "tw", model, cluster.scheduler_address, 128)
        r = _render(src, tmp / "tb", model, cluster.scheduler_address, 128)
        stages = sum(v for k, v in r["stage_worker_seconds"].items() if k != "finalize")
        finalize = r["stage_worker_seconds"].get("finalize", 0.0)
        block_wall = r["seconds"] - finalize
        out["tiny_blocks"] = {
            **r,
            "workers": 2,
            "wall_ms_per_block": round(1000 * block_wall / r["blocks"], 2),
            "stage_ms_per_block": round(1000 * stages / r["blocks"], 2),
            # 2 workers run blocks side by side: a block's wall share is 2 × wall / blocks of worker time
            "overhead_ms_per_block": round(1000 * (2 * block_wall - stages) / r["blocks"], 2),
        }
    finally:
        client.close()
        cluster.close()
    print(
        f"submission loop (2 in flight/worker): {out['bounded_loop_tasks_per_second']:.0f} no-op tasks/s "
        f"({out['bounded_loop_ms_per_task']:.2f} ms each); all at once: {out['unbounded_tasks_per_second']:.0f} tasks/s"
    )
    tb = out["tiny_blocks"]
    print(
        f"tiny blocks: {tb['wall_ms_per_block']:.1f} ms wall per block, {tb['stage_ms_per_block']:.1f} ms of stages, "
        f"≈ {tb['overhead_ms_per_block']:.1f} worker-ms overhead per block"
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1500)
    ap.add_argument("--ngf", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--json", type=Path, default=Path("scaling.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="geopix-scaling-") as d:
        tmp = Path(d)
        result = {
            "machine": machine() | {"loadavg_at_start": os.getloadavg()},
            "throughput": throughput(tmp, args.size, args.ngf, args.chunk, args.repeats),
            "overhead": overhead(tmp, args.tasks),
        }
        result["machine"]["loadavg_at_end"] = os.getloadavg()
    write_json(args.json, result)


if __name__ == "__main__":
    main()
