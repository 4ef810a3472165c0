"""The memory a render plan will need, checked against the render's budget before anything runs.

An estimate from the plan alone (pure arithmetic on windows and tile counts, no I/O): the
bytes one block task holds at its peak, times the tasks that run at once, plus each process's
fixed cost (Python, torch, GDAL, the model).  A plan over the budget is refused with the
cause and a fix — most often a coarse raster upsampled to the model's resolution, where one
output block needs the work pixels of a whole city.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from geopix.errors import MemoryBudgetError, OptionError
from geopix.plan import RenderPlan

GiB = 1 << 30
MiB = 1 << 20
#: Resident memory of a process that renders, before any block: Python, torch, GDAL, Dask
#: (measured: 0.45-0.6 GiB for a small render on this machine).
PROCESS_BYTES = 640 * MiB
#: Part of the memory available at the start that a render may use by default.
AUTO_FRACTION = 0.8
#: Bytes per pixel a block task holds: the read window (raw bands, mask, two float copies), the
#: accumulator and its result on the work window, the resampled float output and its mask.
READ_BYTES_PER_PX = 32
WORK_BYTES_PER_PX = 36
OUT_BYTES_PER_PX = 56


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """What a render will hold at its peak, and why."""

    block_bytes: int  # one block task
    tasks_at_once: int  # per process
    processes: int
    model_bytes: int  # weights and activations of one process's model
    total_bytes: int


def parse_size(text: str) -> int:
    """``"8G"``, ``"8GiB"``, ``"512M"``, ``"1.5g"`` or plain bytes → bytes (powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise OptionError(f"--memory-budget {text!r} is not a size; write it like 8G, 512M or 1.5GiB")
    value, unit = float(m.group(1)), m.group(2)
    return int(value * 1024 ** " kmgt".index(unit or " "))


def auto_budget() -> int:
    """Most of the memory available now (other processes' use already taken out)."""
    import psutil

    return int(psutil.virtual_memory().available * AUTO_FRACTION)


def block_bytes(plan: RenderPlan, batch_size: int, ngf: int) -> int:
    """The peak bytes of the largest block task of ``plan`` (blocks at the corner are the largest)."""
    nb, mb = plan.block_shape
    worst = 0
    for bi, bj in {(0, 0), (0, min(1, mb - 1)), (min(1, nb - 1), 0), (min(1, nb - 1), min(1, mb - 1))}:
        out, work, read, n_tiles = plan.footprint(bi, bj)
        tiles = n_tiles * 3 * plan.tile * plan.tile * 4  # every prediction of the block, float32
        worst = max(
            worst, read.size * READ_BYTES_PER_PX + work.size * WORK_BYTES_PER_PX + out.size * OUT_BYTES_PER_PX + tiles
        )
    return worst + activation_bytes(plan.tile, batch_size, ngf)


def activation_bytes(tile: int, batch_size: int, ngf: int) -> int:
    """One forward pass of a U-Net on a batch: input, and encoder + decoder activations (float32)."""
    return batch_size * tile * tile * 4 * (3 + 2 * ngf)


def estimate(
    plan: RenderPlan, *, batch_size: int, ngf: int, param_bytes: int, tasks_at_once: int, processes: int
) -> MemoryEstimate:
    per_block = block_bytes(plan, batch_size, ngf)
    model = param_bytes
    client = PROCESS_BYTES if processes > 1 else 0  # worker processes beside this one
    total = client + processes * (PROCESS_BYTES + model + tasks_at_once * per_block)
    return MemoryEstimate(per_block, tasks_at_once, processes, model, total)


def check_budget(
    est: MemoryEstimate,
    budget: int,
    *,
    plan: RenderPlan,
    source_res_m: float | None,
    model_res_m: float | None,
    chunk_size: int,
) -> None:
    """Raise ``MemoryBudgetError`` naming the cause and the fix when ``est`` exceeds ``budget``."""
    if est.total_bytes <= budget:
        return
    need, have = _gib(est.block_bytes), _gib(budget)
    upsampled = plan.work_height * plan.work_width > 2 * plan.out_height * plan.out_width
    if upsampled and source_res_m and model_res_m:
        raise MemoryBudgetError(
            f"this raster is {_metres(source_res_m)}/px; rendering at the model's {_metres(model_res_m)}/px "
            f"would need {need} per block ({plan.work_height}×{plan.work_width} work pixels for a "
            f"{plan.out_height}×{plan.out_width} map; memory budget {have}): use --no-resample, "
            "or --output-resolution model"
        )
    if plan.chunk > 1024:  # bigger blocks than the default (after clipping to the map): the first fix
        raise MemoryBudgetError(
            f"--chunk-size {chunk_size} would need {need} per block (memory budget {have}): "
            "use --chunk-size 1024 (the output does not depend on it)"
        )
    raise MemoryBudgetError(
        f"this render would need {_gib(est.total_bytes)} ({est.processes} process(es) × {est.tasks_at_once} "
        f"block(s) at once × {need}, plus the model) but the memory budget is {have}: use fewer --workers or "
        "--threads, a smaller --chunk-size, or raise --memory-budget"
    )


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB / 10 else f"{math.ceil(n / MiB)} MiB"


def _metres(m: float) -> str:
    return f"{m:.2f} m" if m < 1000 else f"{m / 1000:.1f} km"
