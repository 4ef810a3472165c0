"""Training throughput on this CPU: samples per second of one palette fine-tune step by batch size and threads.

One step is what ``geopix train --preset palette`` does per batch (forward, the partial-label
loss, backward, Adam) on 256² crops, with the shipped architecture (ngf 32).  Prints a table and
the best setting; nothing asserts.  Run it on a quiet machine:

    python benchmarks/bench_train_step.py [--batches 4 8 16] [--threads 1 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch
from harness import machine_line


def step_seconds(batch: int, threads: int, repeats: int) -> float:
    """Median seconds of one optimizer step (after one warm-up step)."""
    from geopix.models.registry import load_model
    from geopix.train_step import partial_label_loss

    torch.set_num_threads(threads)
    spec = load_model("sat2map").spec  # the architecture a fine-tune trains
    net = spec.build().train().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, 256, 256).contiguous(memory_format=torch.channels_last)
    allowed = torch.rand(batch, spec.output_nc, 256, 256) > 0.5
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        partial_label_loss(net(x), allowed).backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(machine_line())
    print("threads  batch  s/step  samples/s")
    best = None
    for threads in args.threads:
        for batch in args.batches:
            s = step_seconds(batch, threads, args.repeats)
            rate = batch / s
            print(f"{threads:7d}  {batch:5d}  {s:6.2f}  {rate:9.2f}")
            if best is None or rate > best[0]:
                best = (rate, threads, batch)
    assert best is not None
    print(f"best: {best[2]} samples per step on {best[1]} threads, {best[0]:.2f} samples/s")


if __name__ == "__main__":
    main()
