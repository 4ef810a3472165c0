"""The README's quickstart on a clean clone: a fresh venv made by exactly the README's first
command, then every README block in order (the quickstart's render, tiles and serve, the Python
API), each of which must exit 0.  Only the base install: no extras.

    python3 .ci/quickstart.py            # from the repository root; .ci/run calls it

The clone is of the committed tree (`git clone`), in a temporary folder; `city.tif` is the
demo's aerial scene (geopix/demo_data/nairobi_oam.tif).  Standard library only (it runs before
anything is installed).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.docs_blocks import blocks, run, write_shim  # noqa: E402  (stdlib-only module)

INSTALL_MARK = "python3 -m venv .venv"


def main() -> int:
    readme = [b for b in blocks(ROOT / "README.md") if b.kind != "text"]
    (first,) = [b for b in readme if INSTALL_MARK in b.code]
    tmp = Path(tempfile.mkdtemp(prefix="geopix-quickstart-"))
    clone = tmp / "geopix"
    try:
        subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)], check=True)
        t0 = time.perf_counter()
        print(f"$ {first.code.strip()}", flush=True)
        proc = subprocess.run(["bash", "-c", "set -eo pipefail\n" + first.code], cwd=clone, check=False)
        print(f"exit {proc.returncode} in {time.perf_counter() - t0:.0f} s", flush=True)
        if proc.returncode:
            return proc.returncode
        python = str(clone / ".venv" / "bin" / "python")
        shutil.copy(clone / "geopix" / "demo_data" / "nairobi_oam.tif", clone / "city.tif")  # the user's aerial GeoTIFF
        write_shim(tmp / "bin", python)  # run() puts tmp/bin first on PATH: `geopix serve` is checked, then stopped
        for block in readme:
            if block is first or block.skip:
                continue
            t0 = time.perf_counter()
            proc = run(block, clone, python=python)
            print(
                f"{block.where}: {len(block.commands())} {block.kind} commands, exit {proc.returncode} "
                f"in {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
            if proc.returncode:
                print(proc.stdout[-3000:], proc.stderr[-5000:], sep="\n", file=sys.stderr)
                return proc.returncode
        print("quickstart: every command exited 0 on the base install")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
