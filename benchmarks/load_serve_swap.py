"""A bounded load run for ``geopix serve`` while its archive is replaced: errors and consistency.

    python benchmarks/load_serve_swap.py [--clients 64] [--requests 600] [--swaps 10] [--kind pmtiles]

Builds ``--swaps + 1`` versions of a small tile set (``geopix.testing.versioned_tileset``: no two
versions share a tile's bytes), serves the first with ``geopix serve … --port 0`` on 127.0.0.1 in
a subprocess, and sends ``--requests`` requests from ``--clients`` threads (one keep-alive
connection each, stopping at ``--time-limit``) while another thread renames each next version over
the served path (``os.replace``, as ``geopix tiles --overwrite`` publishes), ``--swaps`` times,
evenly over the requests.  A request is a tile (75 %), the TileJSON (10 %) or a byte range of
``/tiles.pmtiles`` (15 %, PMTiles only).

Every answer is checked against the version files: a tile's bytes must be the requested address's
in some version, the TileJSON's name ``vN``, a range's bytes those of the version whose inode its
ETag names.  That version must have been current at some moment while the request was in flight
(published before it ended, not yet replaced when it began), and each client's versions must never
go backwards.  Errors are answers other than 200/206 (503 with Retry-After is the documented answer
while a file does not open; it is counted apart) and transport failures.  Exit status 1 if any
error or inconsistency; the figures are printed and written as JSON.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import machine, write_json

TIMEOUT_S = 30.0


@dataclass
class Answer:
    client: int
    kind: str
    status: str
    started: float
    ended: float
    version: int | None  # the version the answer came from (None: not identified)
    right: bool  # bytes equal to that version's for what was asked


def build_versions(tmp: Path, kind: str, n: int) -> list[dict]:
    from geopix.testing import versioned_tileset

    suffix = {"pmtiles": ".pmtiles", "mbtiles": ".mbtiles"}[kind]
    versions = []
    for v in range(n):
        path = tmp / f"v{v}{suffix}"
        tiles = versioned_tileset(path, kind, v)
        versions.append({"path": path, "tiles": tiles, "inode": path.stat().st_ino, "blob": path.read_bytes()})
    return versions


def run(args: argparse.Namespace, tmp: Path) -> dict:
    versions = build_versions(tmp, args.kind, args.swaps + 1)
    served = tmp / f"served.{args.kind}"
    os.link(versions[0]["path"], served)  # the same inode as version 0: its ETag names it
    by_bytes = {data: (v, zxy) for v, ver in enumerate(versions) for zxy, data in ver["tiles"].items()}
    by_inode = {ver["inode"]: v for v, ver in enumerate(versions)}
    addresses = list(versions[0]["tiles"])

    cmd = [sys.executable, "-m", "geopix", "serve", str(served), "--host", "127.0.0.1", "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    port = int(line.split(" at ", 1)[1].split()[0].rstrip("/").rsplit(":", 1)[1])

    published: list[tuple[float, float]] = [(0.0, 0.0)]  # version v: (just before, just after) its rename
    lock = threading.Lock()
    counter = [0]  # requests started
    done = [0]  # answers received
    answers: list[Answer] = []
    start = threading.Barrier(args.clients + 2)
    deadline = [0.0]

    def swapper() -> None:
        start.wait()
        for v in range(1, args.swaps + 1):
            while done[0] < v * args.requests // (args.swaps + 1) and time.perf_counter() < deadline[0]:
                time.sleep(0.005)  # each version gets its share of the requests
            link = tmp / f"next.{args.kind}"
            os.link(versions[v]["path"], link)  # keep the version file; publish a second name of it
            before = time.perf_counter()
            os.replace(link, served)
            published.append((before, time.perf_counter()))

    def ask(conn: http.client.HTTPConnection, rng: random.Random) -> tuple[str, str, int | None, bool]:
        roll = rng.random()
        if roll < 0.10:
            conn.request("GET", "/tilejson.json")
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                return "tilejson", str(r.status), None, False
            tj = json.loads(body)
            v = int(tj["name"].removeprefix("v"))
            return "tilejson", "200", v, tj["attribution"] == f"version {v}"
        if roll < 0.25 and args.kind == "pmtiles":
            size = len(versions[0]["blob"])
            a = rng.randrange(0, size - 1)
            b = min(a + rng.randrange(1, 65536), size - 1)
            conn.request("GET", "/tiles.pmtiles", headers={"Range": f"bytes={a}-{b}"})
            r = conn.getresponse()
            body = r.read()
            if r.status != 206:
                return "range", str(r.status), None, False
            v = by_inode.get(int(r.getheader("ETag").strip('"').split("-")[0], 16))
            total = int(r.getheader("Content-Range").rsplit("/", 1)[1])
            right = v is not None and total == len(versions[v]["blob"]) and body == versions[v]["blob"][a : b + 1]
            return "range", "206", v, right
        zxy = rng.choice(addresses)
        conn.request("GET", "/tiles/{}/{}/{}.png".format(*zxy))
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            return "tile", str(r.status), None, False
        v, at = by_bytes.get(body, (None, None))
        return "tile", "200", v, at == zxy

    def client(i: int) -> None:
        rng = random.Random(i)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
        mine = []
        start.wait()
        while time.perf_counter() < deadline[0]:
            with lock:
                if counter[0] >= args.requests:
                    break
                counter[0] += 1
            t0 = time.perf_counter()
            try:
                kind, status, v, right = ask(conn, rng)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
                kind, status, v, right = "?", type(exc).__name__, None, False
            mine.append(Answer(i, kind, status, t0, time.perf_counter(), v, right))
            with lock:
                done[0] += 1
            time.sleep(args.think_s * rng.random())  # spread a client's requests over the swaps
        conn.close()
        with lock:
            answers.extend(mine)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
    threads.append(threading.Thread(target=swapper, daemon=True))
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    deadline[0] = t0 + args.time_limit
    start.wait()
    for t in threads:
        t.join(args.time_limit + TIMEOUT_S)
    wall = time.perf_counter() - t0
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    return check(answers, published, wall, args, err)


def check(answers: list[Answer], published: list[tuple[float, float]], wall: float, args, log: str) -> dict:
    statuses: dict[str, int] = {}
    wrong = stale = 0
    per_version: dict[int, int] = {}
    for a in answers:
        statuses[a.status] = statuses.get(a.status, 0) + 1
        if a.status not in ("200", "206"):
            continue
        if a.version is None or not a.right:
            wrong += 1
            continue
        per_version[a.version] = per_version.get(a.version, 0) + 1
        v = a.version
        published_before_end = v < len(published) and published[v][0] <= a.ended
        replaced_before_start = v + 1 < len(published) and published[v + 1][1] < a.started
        stale += not published_before_end or replaced_before_start
    backwards = 0
    for c in range(args.clients):
        seen = [a.version for a in sorted(answers, key=lambda a: a.started) if a.client == c and a.version is not None]
        backwards += sum(1 for x, y in itertools.pairwise(seen) if y < x)
    unavailable = statuses.get("503", 0)
    errors = sum(n for s, n in statuses.items() if s not in ("200", "206", "503"))
    lat = sorted(a.ended - a.started for a in answers)
    return {
        "kind": args.kind,
        "clients": args.clients,
        "requests": len(answers),
        "swaps": len(published) - 1,
        "seconds": round(wall, 2),
        "rps": round(len(answers) / wall, 1) if wall else 0.0,
        "p50_ms": round(lat[len(lat) // 2] * 1000, 1) if lat else None,
        "p99_ms": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000, 1) if lat else None,
        "statuses": statuses,
        "errors": errors,
        "unavailable_503": unavailable,
        "wrong_bytes": wrong,
        "not_current_when_asked": stale,
        "went_backwards": backwards,
        "answers_per_version": dict(sorted(per_version.items())),
        "kinds": {k: sum(1 for a in answers if a.kind == k) for k in ("tile", "tilejson", "range")},
        "server_log": [ln for ln in log.splitlines() if ln.strip()],
        "answers": [asdict(a) for a in answers] if args.keep_answers else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--swaps", type=int, default=10)
    ap.add_argument("--think-s", type=float, default=0.1, help="a client's pause after an answer: up to this")
    ap.add_argument("--kind", choices=["pmtiles", "mbtiles"], default="pmtiles")
    ap.add_argument("--time-limit", type=float, default=120.0)
    ap.add_argument("--keep-answers", action="store_true", help="every answer in the JSON")
    ap.add_argument("--json", type=Path, default=Path("load_serve_swap.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="geopix-swap-") as tmp:
        res = run(args, Path(tmp))
    print(
        f"{res['kind']}: {res['requests']} requests from {res['clients']} clients in {res['seconds']} s "
        f"({res['rps']} req/s, p50 {res['p50_ms']} ms, p99 {res['p99_ms']} ms) while the archive was replaced "
        f"{res['swaps']} times: statuses {res['statuses']}; errors {res['errors']}, 503 {res['unavailable_503']}, "
        f"wrong bytes {res['wrong_bytes']}, not current when asked {res['not_current_when_asked']}, "
        f"went backwards {res['went_backwards']}; answers per version {res['answers_per_version']}; "
        f"kinds {res['kinds']}; server log: {res['server_log']}"
    )
    write_json(args.json, res | {"machine": machine()})
    bad = res["errors"] + res["wrong_bytes"] + res["not_current_when_asked"] + res["went_backwards"]
    sys.exit(1 if bad or res["swaps"] < args.swaps else 0)


if __name__ == "__main__":
    main()
