"""The memory a plan needs (pure arithmetic) and the messages of a plan over budget."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geopix.budget import GiB, MiB, block_bytes, check_budget, estimate, parse_size
from geopix.errors import MemoryBudgetError, OptionError
from geopix.plan import RenderPlan


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("8G", 8 * GiB),
        ("8GiB", 8 * GiB),
        ("512m", 512 * MiB),
        ("1.5g", int(1.5 * GiB)),
        ("4096", 4096),
        ("2 GB", 2 * GiB),
    ],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["lots", "-1G", "8X", ""])
def test_parse_size_refuses_what_is_not_a_size(text: str) -> None:
    with pytest.raises(OptionError, match="write it like 8G"):
        parse_size(text)


@given(
    side=st.integers(min_value=64, max_value=4096),
    scale=st.sampled_from([1.0, 2.0, 4.0]),
    chunk=st.sampled_from([256, 512, 1024]),
)
@settings(max_examples=60, deadline=None)
def test_a_block_needs_more_the_more_it_is_upsampled(side: int, scale: float, chunk: int) -> None:
    """Upsampling to the model's grid multiplies what one output block reads and predicts."""
    plain = RenderPlan(side, side, side, side, 256, 64, chunk)
    up = RenderPlan(side, side, round(side * scale), round(side * scale), 256, 64, chunk)
    assert block_bytes(up, 8, 32) >= block_bytes(plain, 8, 32)
    assert block_bytes(up, 8, 32) > 0


def test_estimate_counts_tasks_and_processes() -> None:
    plan = RenderPlan(4096, 4096, 4096, 4096, 256, 64, 1024)
    one = estimate(plan, batch_size=8, ngf=32, param_bytes=10 * MiB, tasks_at_once=1, processes=1)
    two = estimate(plan, batch_size=8, ngf=32, param_bytes=10 * MiB, tasks_at_once=2, processes=1)
    procs = estimate(plan, batch_size=8, ngf=32, param_bytes=10 * MiB, tasks_at_once=1, processes=2)
    assert two.total_bytes - one.total_bytes == one.block_bytes
    assert procs.total_bytes > 2 * one.total_bytes - one.block_bytes


def test_messages_name_the_cause_and_the_fix() -> None:
    coarse = RenderPlan(200, 200, 100_000, 100_000, 256, 64, 1024)
    est = estimate(coarse, batch_size=8, ngf=32, param_bytes=0, tasks_at_once=1, processes=1)
    with pytest.raises(MemoryBudgetError, match=r"this raster is 1.0 km/px; rendering at the model's 2.00 m/px") as e:
        check_budget(est, 8 * GiB, plan=coarse, source_res_m=1000.0, model_res_m=2.0, chunk_size=1024)
    assert "--no-resample" in str(e.value) and "--output-resolution model" in str(e.value)
    big = RenderPlan(20_000, 20_000, 20_000, 20_000, 256, 64, 20_000)
    est = estimate(big, batch_size=8, ngf=32, param_bytes=0, tasks_at_once=1, processes=1)
    with pytest.raises(MemoryBudgetError, match=r"--chunk-size 20000 would need .* use --chunk-size 1024"):
        check_budget(est, 2 * GiB, plan=big, source_res_m=1.3, model_res_m=1.3, chunk_size=20_000)
    fine = RenderPlan(4096, 4096, 4096, 4096, 256, 64, 1024)
    est = estimate(fine, batch_size=8, ngf=32, param_bytes=0, tasks_at_once=64, processes=1)
    with pytest.raises(MemoryBudgetError, match=r"use fewer --workers or --threads"):
        check_budget(est, 2 * GiB, plan=fine, source_res_m=1.3, model_res_m=1.3, chunk_size=1024)
    check_budget(est, est.total_bytes, plan=fine, source_res_m=1.3, model_res_m=1.3, chunk_size=1024)
