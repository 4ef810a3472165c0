"""Render on a SLURM cluster: dask-jobqueue submits one batch job per worker (one GPU each).

    pip install dask-jobqueue
    python workflows/slurm.py city.tif -o /shared/out --jobs 8 --gpus 1 --partition gpu \\
        --venv /shared/geopix/.venv --model /shared/models/sat2map.safetensors
    python workflows/slurm.py city.tif -o out --print-job-script     # show the sbatch script, submit nothing

Run it on the login node (the scheduler lives in this process; workers connect back to it, so
the login node must be reachable from the compute nodes, see ``--interface``).  Each job runs
one single-threaded Dask worker (``--nthreads 1``: one model and one block at a time per GPU)
with ``CUDA_VISIBLE_DEVICES`` set by SLURM from ``--gres=gpu:1``; ``--device auto`` then
picks that GPU.  The input, model and output folder must be on a filesystem every node
mounts.  Workers that die (preemption, node failure) are replaced by ``adapt``/``scale`` and
their blocks rerun; a killed client is resumed by running the same command again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def make_cluster(
    *,
    partition: str | None = None,
    account: str | None = None,
    gpus: int = 1,
    cores: int = 4,
    memory: str = "16GB",
    walltime: str = "02:00:00",
    venv: str | None = None,
    interface: str | None = None,
    local_directory: str = "$TMPDIR",
    host: str | None = None,
):
    """A ``SLURMCluster`` whose jobs each hold one single-threaded geopix worker.

    ``cores`` are the job's CPUs (reading, blending and writing run beside the GPU; torch uses
    them through ``OMP_NUM_THREADS``), but Dask runs one task at a time per worker.
    """
    from dask_jobqueue import SLURMCluster

    prologue = [f"source {venv}/bin/activate"] if venv else []
    prologue += [f"export OMP_NUM_THREADS={cores}", "export PYTHONUNBUFFERED=1"]
    extra = [f"--gres=gpu:{gpus}"] if gpus else []
    return SLURMCluster(
        queue=partition,
        account=account,
        cores=1,  # Dask threads: one block at a time per worker (one model, one GPU)
        job_cpu=cores,  # CPUs SLURM gives the job (--cpus-per-task), used by torch and GDAL
        processes=1,  # one worker process per job
        memory=memory,
        walltime=walltime,
        interface=interface,
        local_directory=local_directory,
        job_extra_directives=extra,
        job_script_prologue=prologue,
        python=f"{venv}/bin/python" if venv else None,
        # The scheduler must listen where the compute nodes reach it; its dashboard need not: loopback
        # (from your machine: ssh -L 8787:127.0.0.1:8787 LOGIN-NODE, then http://127.0.0.1:8787).
        scheduler_options={
            "dashboard_address": "127.0.0.1:0" if host else "127.0.0.1:8787",
            **({"host": host} if host else {}),
        },
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("-m", "--model", default="sat2map")
    ap.add_argument("--jobs", type=int, default=4, help="SLURM jobs = Dask workers")
    ap.add_argument("--gpus", type=int, default=1, help="GPUs per job (0 for CPU-only workers)")
    ap.add_argument("--cores", type=int, default=4)
    ap.add_argument("--memory", default="16GB")
    ap.add_argument("--walltime", default="02:00:00")
    ap.add_argument("--partition", default=None)
    ap.add_argument("--account", default=None)
    ap.add_argument("--venv", default=None, help="virtualenv to activate in each job (on the shared filesystem)")
    ap.add_argument("--interface", default=None, help="network interface the nodes reach this host on (e.g. ib0)")
    ap.add_argument("--chunk-size", type=int, default=2048, help="bigger blocks: less per-task overhead per GPU")
    ap.add_argument("--print-job-script", action="store_true", help="print the sbatch script and exit")
    args = ap.parse_args(argv)

    # Printing the script needs no SLURM: the scheduler binds to loopback and nothing is submitted.
    dry = args.print_job_script
    cluster = make_cluster(
        partition=args.partition,
        account=args.account,
        gpus=args.gpus,
        cores=args.cores,
        memory=args.memory,
        walltime=args.walltime,
        venv=args.venv,
        interface=None if dry else args.interface,
        host="127.0.0.1" if dry else None,
    )
    try:
        if dry:
            print(cluster.job_script())
            return 0
        import os

        from geopix.config import RenderConfig, TileConfig
        from geopix.errors import GeopixError
        from geopix.pipeline import render

        os.environ.setdefault("GEOPIX_WORKER_WAIT", "3600")  # jobs may queue for a while before a worker joins
        cluster.scale(jobs=args.jobs)
        print(f"Dask dashboard: {cluster.dashboard_link} (this host's loopback: ssh -L)", file=sys.stderr)
        try:
            result = render(
                RenderConfig(
                    input=Path(args.input),
                    output_dir=Path(args.output),
                    model=args.model,
                    tiles=TileConfig(chunk_size=args.chunk_size),
                    scheduler=cluster.scheduler_address,
                )
            )
        except GeopixError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
        print(f"{result.map_path}: {result.tiles_run} tiles in {result.seconds:.0f} s")
        return 0
    finally:
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())
