"""Mutation testing of the contract functions, and the per-module tally (docs/testing.md).

    python -m tests.mutation              # mutate, run every mutant in scope against its tests, tally
    python -m tests.mutation --survivors  # rerun only the last run's survivors (after adding tests)
    python -m tests.mutation --tally      # only the tally of the last run (mutants/*.meta)

mutmut (configured in pyproject.toml's ``[tool.mutmut]``) copies the package to ``mutants/``, changes
one operator, constant or call at a time, and runs only the tests that reach the changed function.
The scope below is the functions whose contracts the rest of geopix leans on, not whole files: the
network constructors beside the palette decoding, and the I/O beside ``read``'s scaling, have their
own end-to-end tests and would only add hours of mutants here.  Not collected by pytest (no ``test_``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: mutmut mutant-name patterns (``module.x_function`` / ``module.xǁClassǁmethod``) per module.
SCOPE: dict[str, tuple[str, ...]] = {
    "plan": ("geopix.plan.*",),
    "blend": ("geopix.blend.*",),
    "read scaling": (
        "geopix.read.x__percentile_stretch__mutmut_*",
        "geopix.read.x_to_unit__mutmut_*",
        "geopix.read.x__to_unit_formula__mutmut_*",
        "geopix.read.x_colour_match__mutmut_*",
    ),
    "style": ("geopix.style.*",),
    "palette decoding": (
        "geopix.models.generator.x_palette_to_rgb__mutmut_*",
        "geopix.models.generator.x_keep_class__mutmut_*",
        "geopix.models.generator.x_class_faces__mutmut_*",
        "geopix.models.decode.*",
    ),
    "tile codec": ("geopix.tilesets.codec.*",),
}
#: mutmut's exit codes per mutant: 0 the tests passed (survived), 33 no test reaches it, 34 skipped.
SURVIVED, NO_TESTS, SKIPPED = 0, 33, 34


def tally(meta_dir: Path = ROOT / "mutants") -> dict[str, Counter]:
    """``{module: Counter(total, killed, survived, no tests, not run)}`` from mutmut's ``.meta`` files."""
    codes: dict[str, int | None] = {}
    for meta in meta_dir.rglob("*.meta"):
        codes |= json.loads(meta.read_text())["exit_code_by_key"]
    out: dict[str, Counter] = {}
    for module, patterns in SCOPE.items():
        rx = re.compile("|".join(re.escape(p).replace(r"\*", ".*") for p in patterns))
        c: Counter = Counter()
        for name, code in codes.items():
            if rx.fullmatch(name):
                c["total"] += 1
                kind = {SURVIVED: "survived", NO_TESTS: "no tests", SKIPPED: "skipped", None: "not run"}
                c[kind.get(code, "killed")] += 1
        out[module] = c
    return out


def survivors(meta_dir: Path = ROOT / "mutants") -> list[str]:
    """The names of the mutants in scope that the tests did not kill (``mutmut show NAME`` shows each)."""
    patterns = [p for ps in SCOPE.values() for p in ps]
    rx = re.compile("|".join(re.escape(p).replace(r"\*", ".*") for p in patterns))
    names = []
    for meta in meta_dir.rglob("*.meta"):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        names += [n for n, code in codes.items() if code == SURVIVED and rx.fullmatch(n)]
    return sorted(names)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tally", action="store_true", help="only print the tally of the last run")
    ap.add_argument("--survivors", action="store_true", help="rerun only the last run's survivors")
    ap.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    if not args.tally:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        patterns = survivors() if args.survivors else [p for ps in SCOPE.values() for p in ps]
        if not patterns:
            print("no survivors to rerun")
            return 0
        mutmut = [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children), *patterns]
        subprocess.run(mutmut, cwd=ROOT, env=env, check=False)
    print(f"{'module':<18}{'mutants':>8}{'killed':>8}{'survived':>10}{'no tests':>10}")
    for module, c in tally().items():
        print(f"{module:<18}{c['total']:>8}{c['killed']:>8}{c['survived']:>10}{c['no tests']:>10}")
    for name in survivors():
        print("survived:", name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
