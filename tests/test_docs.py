"""Docs that cannot rot: every cheap shell command and Python snippet of the user docs runs.

See ``tests/docs_blocks.py`` for what runs, the stand-in data and the annotations
(``<!-- docs-test: skip (reason) -->``, ``<!-- docs-test: needs out/map.tif -->``).  The summary
(blocks and commands run, skipped and why) is printed at the end of the session.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from tests.docs_blocks import ROOT, Block, blocks, doc_files, make_workspace, outputs, prepare, run

RESULTS: dict[str, Counter] = {}
SKIPPED: list[str] = []
TIMES: list[str] = []


def summary_lines() -> list[str]:
    """What ``tests/conftest.py`` prints at the end of a session that ran this module."""
    if not RESULTS:
        return []
    ran = sum(c["commands run"] for c in RESULTS.values())
    blocks_ran = sum(c["blocks run"] for c in RESULTS.values())
    skipped = sum(c["commands skipped"] for c in RESULTS.values())
    lines = [f"docs test: ran {ran} commands in {blocks_ran} blocks of {len(RESULTS)} pages; skipped {skipped}:"]
    return lines + [f"  skipped {s}" for s in SKIPPED] + [f"  ran {t}" for t in TIMES]


def test_every_page_is_found_and_annotations_parse() -> None:
    docs = doc_files()
    assert ROOT / "README.md" in docs and ROOT / "docs" / "training.md" in docs
    everything = [b for d in docs for b in blocks(d)]
    assert sum(b.kind == "shell" for b in everything) >= 10 and any(b.kind == "python" for b in everything)
    for b in everything:  # a skip must say why
        assert b.skip is None or len(b.skip) > 8, f"{b.where}: give the reason of the skip"


def test_outputs_are_the_local_paths_after_dash_o() -> None:
    code = "geopix render city.tif -o out/ \\\n  --model m\ngeopix tiles out/map.tif --output=t.pmtiles\n"
    code += 'geopix render a.tif -o s3://b/run\nfor f in *.tif; do geopix render $f -o "$f.out"; done\n# -o x\n'
    code += "python workflows/slurm.py city.tif -o out/slurm --print-job-script\n"  # prints, writes nothing
    assert outputs(Block(ROOT / "README.md", 1, "bash", code)) == ["out/", "t.pmtiles"]
    assert outputs(Block(ROOT / "README.md", 1, "python", "render(-o x)")) == []


@pytest.mark.slow
@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_commands_of_each_page_run(doc: Path, tmp_path: Path) -> None:
    """Each page's blocks in order, in one folder; a failing command fails with its output."""
    ws = make_workspace(tmp_path)
    count = RESULTS.setdefault(str(doc.relative_to(ROOT)), Counter())
    for block in blocks(doc):
        if block.kind == "text":
            continue
        n = len(block.commands())
        if block.skip:
            count["commands skipped"] += n
            SKIPPED.append(f"{block.where} ({n} {block.kind} commands): {block.skip}")
            continue
        prepare(block, ws)
        t0 = time.perf_counter()
        proc = run(block, ws)
        TIMES.append(f"{block.where} ({n} {block.kind} commands) in {time.perf_counter() - t0:.1f} s")
        assert proc.returncode == 0, (
            f"{block.where}: the {block.kind} block failed (exit {proc.returncode}):\n{block.code}\n"
            f"--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-5000:]}\n"
            "Fix the docs or the code; for a block that cannot run here, add "
            "<!-- docs-test: skip (reason) --> on the line before it (see tests/docs_blocks.py)."
        )
        assert "Traceback (most recent call last)" not in proc.stderr, f"{block.where}:\n{proc.stderr[-5000:]}"
        missing = [p for p in outputs(block) if not (ws / p).exists()]
        assert not missing, (
            f"{block.where}: exit 0, yet the outputs it names are missing: {missing}\n{proc.stderr[-3000:]}"
        )
        count["commands run"] += n
        count["blocks run"] += 1
    if not count["blocks run"]:  # nothing was checked: say so (pytest -rs) instead of passing
        why = "; ".join(f"{b.where}: {b.skip}" for b in blocks(doc) if b.skip) or "only text blocks"
        pytest.skip(f"{doc.relative_to(ROOT)} has no runnable block ({why})")
