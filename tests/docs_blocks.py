"""The code blocks of the user docs, as ``tests/test_docs.py`` runs them.

Every fenced block tagged ``bash``/``sh``/``shell``/``console`` or ``python`` in README.md,
docs/*.md and workflows/README.md is run, in document order, in one temporary folder per file
(so a later block sees what an earlier one wrote).  Untagged blocks and other languages (``js``,
diagrams, formulas) are text.  An HTML comment on the line before a block annotates it::

    <!-- docs-test: skip (why: downloads 200 MB / needs a GPU / runs for hours) -->
    <!-- docs-test: needs out/map.tif -->

``skip`` leaves the block out and reports the reason; ``needs`` makes stand-ins (``STANDINS``)
for files a block takes from an earlier page.  Every folder starts with tiny stand-ins for the
inputs the docs name: ``city.tif``, ``aerial.tif``, ``data/maps`` and ``../shared/data/…``.
``geopix serve`` is run through a shim that starts the real server on a free port, fetches its
viewer and TileJSON, and stops it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHELL = {"bash", "sh", "shell", "console"}
PYTHON = {"python", "py"}
ANNOTATION = re.compile(r"<!--\s*docs-test:\s*(skip|needs)\b\s*(.*?)\s*-->")
FENCE = re.compile(r"^( *)```(\S*)\s*$")


def doc_files() -> list[Path]:
    """The pages a user follows; new pages under docs/ are picked up without a change here."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), ROOT / "workflows" / "README.md"]


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None = None  # the reason, when annotated skip
    needs: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return "shell" if self.lang in SHELL else "python" if self.lang in PYTHON else "text"

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    def commands(self) -> list[str]:
        """Shell: one entry per command line (continuations joined, comments dropped); python: the snippet."""
        if self.kind == "python":
            return [self.code]
        joined = re.sub(r"\\\n\s*", " ", self.code)
        return [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]


#: ``-o PATH`` / ``--output PATH``: what a command says it writes (checked to exist after the block ran).
OUTPUT = re.compile(r"(?:^|\s)(?:-o|--output)[ =](\S+)")
#: Flags that make a command print what it would do instead of writing its -o (e.g. slurm.py's job script).
PRINTS_ONLY = re.compile(r"\s--(?:print[\w-]*|dry-run|help)\b")


def outputs(block: Block) -> list[str]:
    """The local paths a shell block's commands name as their output; URLs, ``/vsi`` names, stdout
    (``-``), paths built from shell variables and commands that only print are left out."""
    if block.kind != "shell":
        return []
    found = []
    for cmd in block.commands():
        if PRINTS_ONLY.search(cmd):
            continue
        for m in OUTPUT.finditer(cmd):
            path = m.group(1).strip("'\"")
            if "://" not in path and "$" not in path and not path.startswith("/vsi") and path != "-":
                found.append(path)
    return found


def blocks(doc: Path) -> list[Block]:
    lines = doc.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start = len(m.group(1)), m.group(2).lower(), i
        j = i + 1
        while j < len(lines) and not FENCE.match(lines[j]):
            j += 1
        code = textwrap.dedent("\n".join(ln[indent:] if ln[:indent].isspace() else ln for ln in lines[i + 1 : j]))
        skip, needs = None, ()
        k = start - 1
        while k >= 0 and ANNOTATION.search(lines[k]):  # annotations stack on the lines above the fence
            kind, arg = ANNOTATION.search(lines[k]).groups()
            if kind == "skip":
                skip = arg.strip("() ") or "annotated skip"
            else:
                needs = (*needs, *arg.split())
            k -= 1
        found.append(Block(doc, start + 1, lang, code + "\n", skip, needs))
        i = j + 1
    return found


# ---- stand-in data ------------------------------------------------------------------------------
def _aerial(path: Path) -> None:
    from geopix.testing import synthetic_aerial

    synthetic_aerial(path, (320, 320), res=1.3)


def _maps(path: Path) -> None:
    from geopix.testing import synthetic_maps_dataset

    # 1200×600 like the real maps (so the layout's 0.9 m/px applies); 8 pairs: one batch of 8.
    synthetic_maps_dataset(path, n_train=8, n_val=8, size=600)


def _rendered_map(path: Path) -> None:
    from geopix.testing import synthetic_aerial

    synthetic_aerial(path, (320, 320), res=1.3)  # any georeferenced RGB raster tiles the same way


def _shared(ws: Path) -> None:
    shared = ws.parent / "shared" / "data"
    if shared.exists():
        return
    geotiffs = shared / "geotiffs"
    geotiffs.mkdir(parents=True)
    for name in (
        "vienna_30cm_epsg31256.tif",
        "paris_30cm_epsg4326.tif",
        "lasvegas_30cm.tif",
        "massachusetts_1m_epsg26986_nodata255.tif",
    ):
        _aerial(geotiffs / name)
    os.symlink(ws / "data" / "maps", shared / "maps")


#: name (relative to the block's folder) → how to make a stand-in; ``needs`` names one of these.
STANDINS: dict[str, Callable[[Path], None]] = {
    "city.tif": _aerial,
    "aerial.tif": _aerial,
    "data/maps": _maps,
    "out/map.tif": _rendered_map,
}
ALWAYS = ("city.tif", "aerial.tif", "data/maps")


def make_workspace(base: Path) -> Path:
    ws = base / "work"
    ws.mkdir(parents=True)
    for name in ALWAYS:
        (ws / name).parent.mkdir(parents=True, exist_ok=True)
        STANDINS[name](ws / name)
    _shared(ws)
    for folder in ("workflows", "benchmarks"):  # `python workflows/x.py` as written, from the repo root
        os.symlink(ROOT / folder, ws / folder)
    write_shim(base / "bin", sys.executable)
    return ws


def write_shim(folder: Path, python: str) -> Path:
    """``folder/geopix``: the real geopix of ``python``, except that ``serve`` is checked and stopped."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "geopix").write_text(f"#!{python}\n{SHIM}")
    (folder / "geopix").chmod(0o755)
    return folder


SHIM = '''
"""`geopix serve …` starts the real server on a free port, checks it answers, and stops it."""
import os, subprocess, sys, time, urllib.request
real = [sys.executable, "-m", "geopix"]
args = sys.argv[1:]
if not args or args[0] != "serve":
    os.execv(sys.executable, [*real, *args])
if "--port" in args:
    i = args.index("--port")
    del args[i : i + 2]
if "--host" in args:
    i = args.index("--host")
    del args[i : i + 2]
proc = subprocess.Popen([*real, *args, "--port", "0"], stdout=subprocess.PIPE, text=True)
line = proc.stdout.readline()
try:
    if " at http" not in line:
        sys.exit(f"geopix serve did not start: {line!r}, exit {proc.wait()}")
    url = line.split(" at ", 1)[1].split()[0]
    for path in ("", "tilejson.json"):
        with urllib.request.urlopen(url + path, timeout=30) as r:
            assert r.status == 200, (url + path, r.status)
    print(f"served and answered: {url}")
finally:
    proc.terminate()
    proc.wait(10)
'''


def prepare(block: Block, ws: Path) -> None:
    for name in block.needs:
        if name not in STANDINS:
            raise KeyError(f"{block.where}: `docs-test: needs {name}`: no stand-in; known: {', '.join(STANDINS)}")
        if not (ws / name).exists():
            (ws / name).parent.mkdir(parents=True, exist_ok=True)
            STANDINS[name](ws / name)


def run(block: Block, ws: Path, timeout: float = 900, python: str = sys.executable) -> subprocess.CompletedProcess:
    """Run ``block`` in ``ws`` with ``python``'s environment (its geopix, the shim first on PATH)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(ws.parent / "bin"), str(Path(python).parent), env.get("PATH", "")])
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    if block.kind == "python":
        cmd = [python, "-c", block.code]
    else:
        cmd = ["bash", "-c", "set -eo pipefail\nset -x\n" + block.code]
    return subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def cleanup(base: Path) -> None:
    shutil.rmtree(base, ignore_errors=True)
