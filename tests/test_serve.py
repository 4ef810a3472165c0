"""The tile server over real HTTP (uvicorn in a thread): routes, caching, ETag/304, Range/206,
CORS preflight, 204 vs 404, the Host allow-list, HEAD, traversal attempts."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mercantile
import numpy as np
import pytest

from geopix.cli import main
from geopix.errors import OptionError, PortInUseError, TilesetError
from geopix.pyramid import PyramidConfig, build_pyramid
from geopix.serve import ServeConfig, bind, close_app, make_app, uvicorn_config
from geopix.testing import versioned_tileset
from geopix.tilesets import TileSet, open_tileset
from geopix.tilesets.codec import decode_tile
from tests.test_pyramid import lonlat_bounds, make_map

ZOOM = (15, 16)


@pytest.fixture(scope="module")
def tilesets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve")
    map_tif = make_map(root / "map.tif", 200)
    cfg = PyramidConfig(minzoom=ZOOM[0], maxzoom=ZOOM[1])
    out = {"map": map_tif}
    for kind, name in (("dir", "tiles"), ("pmtiles", "t.pmtiles"), ("mbtiles", "t.mbtiles")):
        out[kind] = build_pyramid(map_tif, root / name, cfg, scheduler="sync").path
    (root / "secret.txt").write_text("do not serve")
    return out


def http_get(
    port: int,
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    timeout: float = 30,
) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection: (status, lower-cased headers, body)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    conn.request(method, path, headers=headers or {})  # the path goes as is: no normalisation of ../ or %2e
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, body


@contextlib.contextmanager
def cli_server(*args: object) -> Iterator[tuple[subprocess.Popen, int]]:
    """``geopix serve ARGS --port 0`` in a subprocess (a crash there cannot take pytest down): (process, port)."""
    cmd = [sys.executable, "-m", "geopix", "serve", *map(str, args), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert " at " in line, line + proc.stderr.read()
        yield proc, int(line.split(" at ", 1)[1].split()[0].rstrip("/").rsplit(":", 1)[1])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


class Server:
    """``geopix serve``'s app on uvicorn in a thread, on a free port."""

    def __init__(self, path: Path, tiles: TileSet | None = None, **kwargs: object) -> None:
        import uvicorn

        self.config = ServeConfig(path=path, port=0, **kwargs)
        self.sock = bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.app = make_app(self.config, tiles)
        self.uv = uvicorn.Server(uvicorn_config(self.app, self.config))  # the settings `geopix serve` runs with
        self.thread = threading.Thread(target=self.uv.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.uv.started and time.monotonic() < deadline:
            time.sleep(0.01)

    def get(
        self, path: str, method: str = "GET", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        return http_get(self.port, path, method, headers)

    def close(self) -> None:
        self.uv.should_exit = True
        self.thread.join(10)
        close_app(self.app)


@pytest.fixture
def server(request: pytest.FixtureRequest, tilesets: dict[str, Path]) -> Iterator[Server]:
    kind, kwargs = request.param
    s = Server(tilesets[kind], **kwargs)
    yield s
    s.close()


def some_tiles(tilesets: dict[str, Path]) -> tuple[list[mercantile.Tile], list[mercantile.Tile]]:
    """(tiles written in the folder, tiles of the data bounds that are empty) at the max zoom."""
    z = ZOOM[1]
    root = tilesets["dir"]
    present = sorted(mercantile.Tile(int(p.parent.name), int(p.stem), z) for p in (root / str(z)).glob("*/*.png"))
    empty = sorted(set(mercantile.tiles(*lonlat_bounds(tilesets["map"]), [z])) - set(present))
    return present, empty


@pytest.mark.parametrize("server", [("dir", {}), ("pmtiles", {}), ("mbtiles", {})], indirect=True)
def test_tiles_tilejson_and_viewer(server: Server, tilesets: dict[str, Path]) -> None:
    present, empty = some_tiles(tilesets)
    assert present
    for t in present:
        status, headers, body = server.get(f"/tiles/{t.z}/{t.x}/{t.y}.png")
        assert status == 200
        assert headers["content-type"] == "image/png"
        assert headers["cache-control"] == "public, max-age=3600"
        assert "access-control-allow-origin" not in headers
        assert body == (tilesets["dir"] / f"{t.z}/{t.x}/{t.y}.png").read_bytes()
    # a tile address inside the world without a tile: 204 (empty), cached briefly; never an error
    for path in ["/tiles/3/0/0.png", *(f"/tiles/{t.z}/{t.x}/{t.y}.png" for t in empty)]:
        status, headers, body = server.get(path)
        assert (status, body, headers["cache-control"]) == (204, b"", "public, max-age=60")
    status, headers, body = server.get("/tilejson.json")
    assert status == 200 and headers["content-type"] == "application/json"
    tj = json.loads(body)
    assert tj["tilejson"] == "3.0.0" and (tj["minzoom"], tj["maxzoom"]) == ZOOM
    assert tj["tiles"] == [f"http://127.0.0.1:{server.port}/tiles/{{z}}/{{x}}/{{y}}.png"]  # absolute
    assert tj["bounds"] == pytest.approx(list(lonlat_bounds(tilesets["map"])), abs=1e-6)
    assert tj["center"][2] == 16 and "tiny model" in tj["attribution"]
    status, headers, body = server.get("/")
    assert status == 200 and headers["content-type"].startswith("text/html") and b"viewer.js" in body
    for name, ctype in (
        ("viewer.js", "text/javascript"),
        ("viewer.css", "text/css"),
        ("vendor/maplibre-gl.mjs", "text/javascript"),
        ("vendor/maplibre-gl-worker.mjs", "text/javascript"),
        ("vendor/pmtiles.js", "text/javascript"),
    ):
        status, headers, _ = server.get(f"/static/{name}")
        assert status == 200 and headers["content-type"].startswith(ctype), name
    viewer = json.loads(server.get("/viewer.json")[2])
    assert viewer["tilejson"] == f"http://127.0.0.1:{server.port}/tilejson.json" and viewer["source"] is None
    assert (viewer["pmtiles"] is not None) == (server.config.path.suffix == ".pmtiles")


@pytest.mark.parametrize("server", [("pmtiles", {})], indirect=True)
def test_etag_304_and_head(server: Server, tilesets: dict[str, Path]) -> None:
    (t, *_), _ = some_tiles(tilesets)
    path = f"/tiles/{t.z}/{t.x}/{t.y}.png"
    status, headers, body = server.get(path)
    etag = headers["etag"]
    assert status == 200 and etag.startswith('"')
    status, headers304, body304 = server.get(path, headers={"If-None-Match": etag})
    assert (status, body304, headers304["etag"]) == (304, b"", etag)
    assert server.get(path, headers={"If-None-Match": '"other", ' + etag})[0] == 304
    assert server.get(path, headers={"If-None-Match": '"stale"'})[0] == 200
    status, head_headers, head_body = server.get(path, "HEAD")
    assert (status, head_body) == (200, b"") and int(head_headers["content-length"]) == len(body)
    assert head_headers["etag"] == etag
    tj_etag = server.get("/tilejson.json")[1]["etag"]
    assert server.get("/tilejson.json", headers={"If-None-Match": tj_etag})[0] == 304


@pytest.mark.parametrize("server", [("pmtiles", {})], indirect=True)
def test_pmtiles_file_range(server: Server, tilesets: dict[str, Path]) -> None:
    """The archive at a stable URL answers Range requests (what the pmtiles JS protocol sends)."""
    blob = tilesets["pmtiles"].read_bytes()
    status, headers, body = server.get("/tiles.pmtiles", headers={"Range": "bytes=0-126"})
    assert status == 206 and body == blob[:127] and body.startswith(b"PMTiles")
    assert headers["content-range"] == f"bytes 0-126/{len(blob)}" and headers["accept-ranges"] == "bytes"
    status, _, body = server.get("/tiles.pmtiles", headers={"Range": f"bytes={len(blob) - 10}-"})
    assert status == 206 and body == blob[-10:]
    status, headers, _ = server.get("/tiles.pmtiles", "HEAD")
    assert status == 200 and int(headers["content-length"]) == len(blob) and "etag" in headers
    assert server.get("/tiles.pmtiles", headers={"Range": f"bytes={len(blob) + 5}-"})[0] == 416


@pytest.mark.parametrize("server", [("dir", {}), ("mbtiles", {})], indirect=True)
def test_no_pmtiles_file_for_other_sets(server: Server) -> None:
    assert server.get("/tiles.pmtiles")[0] == 404


@pytest.mark.parametrize("server", [("dir", {"cors": ("https://maps.example.org",)})], indirect=True)
def test_cors_and_preflight(server: Server, tilesets: dict[str, Path]) -> None:
    (t, *_), _ = some_tiles(tilesets)
    origin = {"Origin": "https://maps.example.org"}
    for path in (f"/tiles/{t.z}/{t.x}/{t.y}.png", "/tilejson.json"):
        status, headers, _ = server.get(path, headers=origin)
        assert status == 200 and headers["access-control-allow-origin"] == "https://maps.example.org"
        assert "ETag" in headers["access-control-expose-headers"]
    # a client that adds a header (MapLibre's transformRequest, Authorization) preflights first
    preflight = {**origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    status, headers, _ = server.get(f"/tiles/{t.z}/{t.x}/{t.y}.png", "OPTIONS", preflight)
    assert status == 200
    assert headers["access-control-allow-origin"] == "https://maps.example.org"
    assert "GET" in headers["access-control-allow-methods"]
    assert "authorization" in headers["access-control-allow-headers"].lower()
    # another origin gets no grant
    status, headers, _ = server.get("/tilejson.json", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in headers
    bad = {**preflight, "Origin": "https://evil.example"}
    assert server.get(f"/tiles/{t.z}/{t.x}/{t.y}.png", "OPTIONS", bad)[0] == 400


@pytest.mark.parametrize("server", [("dir", {})], indirect=True)
def test_host_allow_list(server: Server) -> None:
    for host in ("localhost", f"localhost:{server.port}", f"127.0.0.1:{server.port}"):
        status, _, body = server.get("/tilejson.json", headers={"Host": host})
        assert status == 200 and f"http://{host}/tiles/" in json.loads(body)["tiles"][0]
    for host in ("evil.example", f"rebind.attacker.example:{server.port}", "192.168.1.20"):
        status, _, body = server.get("/tilejson.json", headers={"Host": host})
        assert status == 400 and host.encode() not in body, host


@pytest.mark.parametrize("server", [("dir", {"allowed_hosts": ("tiles.lan",)})], indirect=True)
def test_allowed_host_adds_names(server: Server) -> None:
    status, _, body = server.get("/tilejson.json", headers={"Host": "tiles.lan:8000"})
    assert status == 200 and json.loads(body)["tiles"][0].startswith("http://tiles.lan:8000/tiles/")
    assert server.get("/tilejson.json", headers={"Host": "other.lan"})[0] == 400


@pytest.mark.parametrize("server", [("dir", {})], indirect=True)
@pytest.mark.parametrize(
    "path",
    [
        "/tiles/../secret.txt",
        "/tiles/../../secret.txt",
        "/tiles/%2e%2e/secret.txt",
        "/tiles/%2E%2E%2Fsecret.txt",
        "/tiles/16/..%2f..%2f..%2fsecret.txt",
        "/tiles/16/1/..%2f..%2f..%2f..%2fsecret.png",
        "/tiles/%2e%2e%2f%2e%2e%2fmap.tif",
        "/static/../secret.txt",
        "/static/..%2f..%2fpyramid.py",
        "/static/%2e%2e%2fserve.py",
        "/..%2fsecret.txt",
        "/secret.txt",
        "/tilejson.json/../secret.txt",
        "//etc/passwd",
        "/tiles/16/1/1.txt",
        "/tiles/16/1/1.webp",  # wrong extension for this tile set
        "/tiles/1/5/0.png",  # x outside the zoom's 2**z columns
        "/tiles/-1/0/0.png",
        "/source/16/1/1.png",  # no --source given
        "/source/tilejson.json",
        "/tiles.pmtiles",  # not a PMTiles set
        "/nope",
    ],
)
def test_not_found_and_traversal(server: Server, path: str) -> None:
    status, _, body = server.get(path)
    assert status == 404, path
    assert b"do not serve" not in body and b"import" not in body


def test_geotiff_served_dynamically_with_source(tilesets: dict[str, Path]) -> None:
    """A GeoTIFF is tiled on request (rio-tiler); ``source`` adds the aerial layer for the viewer."""
    map_tif = tilesets["map"]
    aerial = map_tif.with_name("map_src.tif")  # the RGBA aerial make_map started from
    s = Server(map_tif, source=aerial)
    try:
        present, _ = some_tiles(tilesets)
        # the fullest pre-built tile
        t = max(present, key=lambda t: decode_tile((tilesets["dir"] / f"{t.z}/{t.x}/{t.y}.png").read_bytes())[3].sum())
        built = decode_tile((tilesets["dir"] / f"{t.z}/{t.x}/{t.y}.png").read_bytes())
        status, headers, body = s.get(f"/tiles/{t.z}/{t.x}/{t.y}.png")
        assert status == 200 and headers["content-type"] == "image/png"
        assert headers["cache-control"] == "public, max-age=300"
        # the dynamic tile agrees with the pre-built one (both warp the same raster)
        dyn = decode_tile(body)
        assert np.mean((built[3] > 0) != (dyn[3] > 0)) < 0.02
        both = (built[3] == 255) & (dyn[3] == 255)
        assert both.mean() > 0.2
        assert np.abs(built[:3].astype(int) - dyn[:3].astype(int))[:, both].mean() < 3
        assert s.get(f"/tiles/{t.z}/{t.x - 5}/{t.y}.png")[0] == 204  # outside the data
        assert s.get("/tiles/18/0/0.png")[0] == 204  # past the max zoom, as the archives
        status, headers, _ = s.get(f"/source/{t.z}/{t.x}/{t.y}.png")
        assert status == 200 and headers["content-type"] == "image/png"
        viewer = json.loads(s.get("/viewer.json")[2])
        assert viewer["source"] == f"http://127.0.0.1:{s.port}/source/tilejson.json" and viewer["pmtiles"] is None
        status, _, body = s.get("/source/tilejson.json")
        src_tj = json.loads(body)
        assert status == 200 and "/source/{z}/{x}/{y}.png" in src_tj["tiles"][0]
        assert src_tj["attribution"] == "Imagery: map_src.tif"  # the aerial's own credit, not a model's
    finally:
        s.close()


def test_config_errors_and_busy_port(tilesets: dict[str, Path]) -> None:
    with pytest.raises(TilesetError, match="--source"):
        ServeConfig(path=tilesets["dir"], source=tilesets["pmtiles"])
    with pytest.raises(OptionError, match="--cors"):
        ServeConfig(path=tilesets["dir"], cors=("example.org",))
    busy = bind("127.0.0.1", 0)
    try:
        port = busy.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port}"):
            bind("127.0.0.1", port)
        assert main(["serve", str(tilesets["dir"]), "--port", str(port)]) == PortInUseError.exit_code
    finally:
        busy.close()


def test_cli_disconnects_and_graceful_shutdown(tilesets: dict[str, Path]) -> None:
    """``geopix serve`` as users run it: clients vanishing mid-response print nothing; Ctrl-C stops it cleanly."""
    import signal
    import socket
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "geopix", "serve", str(tilesets["pmtiles"]), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        port = int(line.split(" at ", 1)[1].split()[0].rsplit(":", 1)[1].strip("/"))
        for _ in range(20):  # ask for the whole archive and hang up without reading
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /tiles.pmtiles HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
            s.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/tilejson.json")
        assert conn.getresponse().status == 200  # still serving
        conn.close()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (
        proc.returncode == 130 and err.strip().splitlines()[-1] == f"interrupted: stopped serving {tilesets['pmtiles']}"
    )
    assert "Traceback" not in err and "Error" not in err, err


# ---- a remote archive or COG (issue 15): ranged reads from the HTTP and S3 servers ------------
@pytest.fixture(scope="module")
def remote_tilesets(tilesets: dict[str, Path], http_server, http_root: Path, s3_bucket: str) -> dict[str, str]:
    """The PMTiles archive and the map GeoTIFF on the Range HTTP server and in the S3 bucket."""
    import shutil

    from geopix.testservers import upload_to_s3

    (http_root / "serve").mkdir(exist_ok=True)
    out = {}
    for kind in ("pmtiles", "map"):
        name = tilesets[kind].name
        shutil.copy(tilesets[kind], http_root / "serve" / name)
        upload_to_s3(tilesets[kind], f"s3://{s3_bucket}/serve/{name}")
        out[f"http-{kind}"] = f"{http_server.url}/serve/{name}"
        out[f"s3-{kind}"] = f"s3://{s3_bucket}/serve/{name}"
    return out


@pytest.mark.parametrize("where", ["http", "s3"])
@pytest.mark.parametrize("kind", ["pmtiles", "map"])
def test_remote_tiles_are_the_local_bytes(
    kind: str, where: str, tilesets: dict[str, Path], remote_tilesets: dict[str, str]
) -> None:
    """Served from a URL, every tile (and every empty answer) is the one served from the local file."""
    local = Server(tilesets[kind])
    remote = Server(remote_tilesets[f"{where}-{kind}"], source=remote_tilesets[f"{where}-map"])  # --source URL too
    try:
        present, empty = some_tiles(tilesets)
        parents = {mercantile.parent(t) for t in present}
        ok = 0
        for t in [*present, *empty[:5], *parents]:
            path = f"/tiles/{t.z}/{t.x}/{t.y}.png"
            want, got = local.get(path), remote.get(path)
            assert (got[0], got[2]) == (want[0], want[2]), path
            assert got[1].get("cache-control") == want[1].get("cache-control")
            ok += want[0] == 200
        assert ok >= len(present)
        tj_local, tj_remote = json.loads(local.get("/tilejson.json")[2]), json.loads(remote.get("/tilejson.json")[2])
        assert {**tj_remote, "tiles": None} == {**tj_local, "tiles": None}
        viewer = json.loads(remote.get("/viewer.json")[2])
        assert viewer["pmtiles"] is None  # the viewer reads /tiles/… instead
        assert remote.get("/tiles.pmtiles")[0] == 404
        assert viewer["source"] and remote.get("/source/tilejson.json")[0] == 200
        t = present[0]
        status, _, body = remote.get(f"/source/{t.z}/{t.x}/{t.y}.png")
        assert status == 200
        if kind == "map":  # the same GeoTIFF tiled on request, from the local file and by URL
            assert body == local.get(f"/tiles/{t.z}/{t.x}/{t.y}.png")[2]
    finally:
        local.close()
        remote.close()


def test_remote_serve_errors(http_server, s3_bucket: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing archive, a missing bucket, a refusal: one line naming the URL, the remote exit codes."""
    from geopix.errors import InputNotFoundError, RemoteAccessError

    host = http_server.url.split("://")[1]
    cases = [
        (f"{http_server.url}/none.pmtiles", InputNotFoundError.exit_code, "none.pmtiles does not exist"),
        (f"{http_server.url}/none/map.tif", InputNotFoundError.exit_code, "none/map.tif does not exist"),
        ("s3://no-such-bucket/t.pmtiles", InputNotFoundError.exit_code, "bucket does not exist"),
        (f"s3://{s3_bucket}/nothing.pmtiles", InputNotFoundError.exit_code, "nothing.pmtiles does not exist"),
        (f"http://alice:hunter2@{host}/forbidden/t.pmtiles", RemoteAccessError.exit_code, "access denied"),
        (f"http://alice:hunter2@{host}/forbidden/map.tif", RemoteAccessError.exit_code, "access denied"),
    ]
    for url, code, words in cases:
        assert main(["serve", url, "--port", "0"]) == code, url
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1, err
        assert "hunter2" not in err and "alice" not in err


# ---- issue 26: a tile source that cannot lie ----------------------------------------------------
def tile_url(zxy: tuple[int, int, int]) -> str:
    return "/tiles/{}/{}/{}.png".format(*zxy)


def assert_unavailable(answer: tuple[int, dict[str, str], bytes]) -> None:
    """The documented answer while a tile set is being replaced or cut: 503, retry soon, not cached."""
    status, headers, _ = answer
    assert status == 503 and headers["retry-after"] == "1" and headers["cache-control"] == "no-store"


def test_archive_cut_in_place_while_served(tmp_path: Path) -> None:
    """#4: an archive truncated, then rewritten in place under ``geopix serve`` (truncate, cp, rsync --inplace):
    no SIGBUS; 503 on every route while it is cut, its tiles again once it is whole."""
    path = tmp_path / "t.pmtiles"
    tiles = versioned_tileset(path, "pmtiles", 1)
    whole = path.read_bytes()
    with cli_server(path) as (proc, port):
        assert all(http_get(port, tile_url(k))[2] == v for k, v in tiles.items())
        os.truncate(path, len(whole) // 2)  # the same inode, half its bytes: a partial sync
        for zxy in tiles:
            assert_unavailable(http_get(port, tile_url(zxy)))
        assert_unavailable(http_get(port, "/tilejson.json"))
        assert_unavailable(http_get(port, "/tiles.pmtiles", headers={"Range": "bytes=0-126"}))
        with open(path, "r+b") as f:  # the copy goes on, in place, until the file is whole again
            f.write(whole)
        for zxy, data in tiles.items():
            status, _, body = http_get(port, tile_url(zxy))
            assert (status, body) == (200, data)
        assert proc.poll() is None


def test_cut_archive_refused_at_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """#5: a partial download is refused with its name and exit code 21, not served as empty tiles."""
    path = tmp_path / "partial.pmtiles"
    versioned_tileset(path, "pmtiles", 1)
    os.truncate(path, path.stat().st_size - 5000)
    with pytest.raises(TilesetError, match=r"partial\.pmtiles is cut short"):
        open_tileset(path)
    busy = bind("127.0.0.1", 0)  # were the archive accepted, the server would stop here (35), not serve forever
    try:
        assert main(["serve", str(path), "--port", str(busy.getsockname()[1])]) == TilesetError.exit_code
    finally:
        busy.close()
    err = capsys.readouterr().err
    assert "partial.pmtiles is cut short" in err and "tile data up to byte" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["pmtiles", "mbtiles", "dir"])
def test_replaced_tileset_switches_every_route(kind: str, tmp_path: Path) -> None:
    """#6: a tile set replaced atomically while served (a rename, as ``geopix tiles --overwrite`` publishes;
    a folder by switching a symlink): TileJSON, tiles and the archive itself all answer the new one."""
    name = {"pmtiles": "t.pmtiles", "mbtiles": "t.mbtiles", "dir": "tiles"}[kind]
    served = tmp_path / name

    def publish(version: int) -> dict[tuple[int, int, int], bytes]:
        new = tmp_path / f"v{version}-{name}"
        tiles = versioned_tileset(new, kind, version)
        if kind == "dir":
            (tmp_path / "link").symlink_to(new)
            new = tmp_path / "link"
        os.replace(new, served)
        return tiles

    tiles = publish(1)
    s = Server(served)
    etags: list[str] = []
    try:
        for version in (1, 2, 3):
            if version > 1:
                tiles = publish(version)
            tj = json.loads(s.get("/tilejson.json")[2])
            assert (tj["name"], tj["attribution"]) == (f"v{version}", f"version {version}")
            for zxy, data in tiles.items():
                assert s.get(tile_url(zxy))[2] == data
            if kind == "pmtiles":
                status, headers, body = s.get("/tiles.pmtiles")
                assert status == 200 and body == served.read_bytes() and headers["etag"] not in etags
                for old in etags:  # a client holding an older version gets this one whole
                    answer = s.get("/tiles.pmtiles", headers={"Range": "bytes=0-126", "If-Range": old})
                    assert (answer[0], answer[2]) == (200, body)
                etags.append(headers["etag"])
                answer = s.get("/tiles.pmtiles", headers={"Range": "bytes=0-126", "If-Range": headers["etag"]})
                assert (answer[0], answer[2]) == (206, body[:127])
    finally:
        s.close()


@pytest.mark.parametrize("signum", [2, 15])
def test_named_pipe_in_folder_hangs_nothing(signum: int, tmp_path: Path) -> None:
    """#7: a named pipe at a tile's path answers 500 at once; other requests go on; SIGINT/SIGTERM stop the server."""
    root = tmp_path / "tiles"
    tiles = versioned_tileset(root, "dir", 1)
    pipe, *others = tiles
    path = root / "{}/{}/{}.png".format(*pipe)
    path.unlink()
    os.mkfifo(path)
    with cli_server(root) as (proc, port):
        status, headers, _ = http_get(port, tile_url(pipe), timeout=10)
        assert status == 500 and headers["cache-control"] == "no-store"
        for zxy in others:
            assert http_get(port, tile_url(zxy), timeout=10)[2] == tiles[zxy]
        proc.send_signal(signum)
        assert proc.wait(timeout=20) == 128 + signum
    err = proc.stderr.read()
    assert "is not a regular file" in err and "Traceback" not in err


class StalledTiles(TileSet):
    """A tile set whose reads wait until ``release`` (a stalled network mount)."""

    kind, format, minzoom, maxzoom = "dir", "png", 0, 20

    def __init__(self) -> None:
        self.release = threading.Event()
        self.path = Path("stalled")

    def get(self, z: int, x: int, y: int) -> bytes | None:
        self.release.wait(60)
        return None

    def about(self):
        from geopix.tilesets.base import About

        return About(name="stalled")


def test_slow_read_times_out_alone(tmp_path: Path) -> None:
    """#7: a read slower than ``read_timeout_s`` answers 503 (retry, not cached) while other requests are served."""
    stalled = StalledTiles()
    s = Server(tmp_path, tiles=stalled, read_timeout_s=0.5)
    try:
        results: list[tuple[int, dict[str, str], bytes]] = []
        clients = [threading.Thread(target=lambda i=i: results.append(s.get(f"/tiles/3/{i}/0.png"))) for i in range(4)]
        for c in clients:
            c.start()
        assert s.get("/viewer.json")[0] == 200  # the event loop is free while the reads wait
        for c in clients:
            c.join(20)
        assert len(results) == 4
        for answer in results:
            assert_unavailable(answer)
    finally:
        stalled.release.set()
        s.close()


@pytest.mark.parametrize("kind", ["dir", "pmtiles", "mbtiles"])
@pytest.mark.parametrize("damage", ["empty", "cut"])
def test_empty_or_cut_tile_is_never_served_as_good(kind: str, damage: str, tmp_path: Path) -> None:
    """#8 (and #5's tile across a cut): a 0-byte tile (an interrupted copy) or a PNG cut short answers 500,
    not cached, without an ETag; the set's other tiles are served."""
    import sqlite3

    from geopix.tilesets import Tile, mbtiles, pmtiles

    name = {"pmtiles": "t.pmtiles", "mbtiles": "t.mbtiles", "dir": "tiles"}[kind]
    whole = versioned_tileset(tmp_path / "whole", "dir", 1)
    bad, *good = whole
    broken = b"" if damage == "empty" else whole[bad][: len(whole[bad]) // 2]
    if kind == "dir":
        versioned_tileset(tmp_path / name, "dir", 1)
        (tmp_path / name / "{}/{}/{}.png".format(*bad)).write_bytes(broken)
    elif kind == "pmtiles":
        tiles = [Tile(*zxy, broken if zxy == bad else data) for zxy, data in whole.items()]
        pmtiles.write(tmp_path / name, tiles, json.loads((tmp_path / "whole" / "tilejson.json").read_text()))
        if damage == "empty":  # an entry of 0 bytes in the root directory: the archive is refused at open
            with pytest.raises(TilesetError, match="directory has a bad entry: 0 bytes"):
                open_tileset(tmp_path / name)
            return
    else:
        tj = json.loads((tmp_path / "whole" / "tilejson.json").read_text())
        mbtiles.write(tmp_path / name, [Tile(*zxy, data) for zxy, data in whole.items()], tj)
        con = sqlite3.connect(tmp_path / name)
        con.execute(
            "UPDATE tiles SET tile_data=? WHERE zoom_level=? AND tile_column=? AND tile_row=?",
            (broken, bad[0], bad[1], mbtiles.tms_row(bad[0], bad[2])),
        )
        con.commit()
        con.close()
    s = Server(tmp_path / name)
    try:
        status, headers, body = s.get(tile_url(bad))
        assert (status, headers["cache-control"], "etag" in headers) == (500, "no-store", False)
        assert body == b"error\n"
        for zxy in good:
            assert s.get(tile_url(zxy))[2] == whole[zxy]
    finally:
        s.close()


# ---- issue 26 #10: HTTP by the book -------------------------------------------------------------
@pytest.mark.parametrize("server", [("pmtiles", {})], indirect=True)
def test_addresses_outside_the_grid_however_spelled(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    """#10: a coordinate of 5000 digits, 20 digits, Unicode digits, signs or spaces is no address: 404, no traceback."""
    huge = "9" * 5000
    paths = [
        f"/tiles/16/1/{huge}.png",
        f"/tiles/{'1' * 4301}/0/0.png",
        f"/tiles/16/{huge}/1.png",
        f"/source/{huge}/0/0.png",
        "/tiles/16/99999999999999999999/0.png",
        "/tiles/%D9%A1%D9%A6/0/0.png",  # Arabic-Indic "16": str.isdigit() says yes, the grid says no
        "/tiles/+1/0/0.png",
        "/tiles/1/%200/0.png",
        "/tiles/1/0/0.5.png",
        "/tiles/16/0x10/0.png",
    ]
    with caplog.at_level("WARNING"):
        for path in paths:
            status, headers, body = server.get(path)
            assert (status, body, headers["cache-control"]) == (404, b"not found\n", "no-cache"), path
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


@pytest.mark.parametrize("server", [("pmtiles", {})], indirect=True)
def test_method_not_allowed_says_allow(server: Server, tilesets: dict[str, Path]) -> None:
    """#10: 405 answers carry ``Allow`` (RFC 9110 §15.5.6), on the routes and the static files."""
    (t, *_), _ = some_tiles(tilesets)
    for method, path in [
        ("POST", f"/tiles/{t.z}/{t.x}/{t.y}.png"),
        ("DELETE", "/tilejson.json"),
        ("PUT", "/tiles.pmtiles"),
        ("POST", "/static/viewer.js"),
        ("PATCH", "/"),
    ]:
        status, headers, _ = server.get(path, method)
        assert status == 405 and set(headers["allow"].replace(" ", "").split(",")) >= {"GET", "HEAD"}, path


@pytest.mark.parametrize("server", [("pmtiles", {})], indirect=True)
@pytest.mark.parametrize(
    "value", ["bytes=abc", "bytes=5-2", "items=0-9", "bytes=0-" + "9" * 30, "bytes=--1", "bytes=", "bytes 0-9", "=0-9"]
)
def test_invalid_range_is_ignored(server: Server, tilesets: dict[str, Path], value: str) -> None:
    """#10: a ``Range`` that is not a valid byte range set is ignored: 200 with the whole body (RFC 9110 §14.2)."""
    from importlib import resources

    viewer_js = Path(str(resources.files("geopix").joinpath("serve_static/viewer.js"))).read_bytes()
    for path, whole in (("/tiles.pmtiles", tilesets["pmtiles"].read_bytes()), ("/static/viewer.js", viewer_js)):
        status, headers, body = server.get(path, headers={"Range": value})
        assert (status, body) == (200, whole), (path, value)
        assert "content-range" not in headers


@pytest.mark.parametrize("server", [("pmtiles", {})], indirect=True)
def test_several_ranges_get_the_whole_archive(server: Server, tilesets: dict[str, Path]) -> None:
    """The documented rule for /tiles.pmtiles: one range 206, several ranges the whole archive (200)."""
    blob = tilesets["pmtiles"].read_bytes()
    status, _, body = server.get("/tiles.pmtiles", headers={"Range": "bytes=0-9, 20-29"})
    assert (status, body) == (200, blob)
    status, headers, body = server.get("/tiles.pmtiles", headers={"Range": "bytes=-10"})
    assert (status, body, headers["content-range"]) == (
        206,
        blob[-10:],
        f"bytes {len(blob) - 10}-{len(blob) - 1}/{len(blob)}",
    )


def test_cors_origins_normalised_or_refused(tilesets: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """#10: ``--cors`` origins are spelled as browsers send them, or refused (exit 25) if they could never match."""
    cfg = ServeConfig(
        path=tilesets["dir"], cors=("https://App.Example.org/", "https://x.org:443", "http://h:8080", "*")
    )
    assert cfg.cors == ("https://app.example.org", "https://x.org", "http://h:8080", "*")
    for bad in ("https://*.x.org", "http://", "*.x.org", "https://x.org/maps", "ftp://x.org", "https://u@x.org", "x"):
        with pytest.raises(OptionError, match="--cors"):
            ServeConfig(path=tilesets["dir"], cors=(bad,))
        assert main(["serve", str(tilesets["dir"]), "--cors", bad, "--port", "0"]) == OptionError.exit_code
        err = capsys.readouterr().err
        assert bad in err and len(err.strip().splitlines()) == 1
    s = Server(tilesets["dir"], cors=("https://maps.example.org/",))
    try:
        status, headers, _ = s.get("/tilejson.json", headers={"Origin": "https://maps.example.org"})
        assert status == 200 and headers["access-control-allow-origin"] == "https://maps.example.org"
    finally:
        s.close()


def closed_within(sock, seconds: float, drip: bytes = b"") -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (sending ``drip`` every 0.2 s meanwhile)."""
    import select

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if drip:
            try:
                sock.sendall(drip)
            except OSError:
                return True
        if select.select([sock], [], [], 0.2)[0]:
            try:
                if sock.recv(65536) == b"":
                    return True
            except OSError:
                return True
    return False


def test_idle_and_slow_connections_are_closed(tilesets: dict[str, Path]) -> None:
    """#10: a connection that sends nothing, one that drips its headers (slowloris) and an idle keep-alive one
    are closed; past ``max_connections`` a request is answered 503 at once."""
    import socket

    s = Server(tilesets["dir"], header_timeout_s=1, keep_alive_s=1, max_connections=4)
    try:
        idle = socket.create_connection(("127.0.0.1", s.port))
        slow = socket.create_connection(("127.0.0.1", s.port))
        slow.sendall(b"GET /tilejson.json HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert closed_within(idle, 10) and closed_within(slow, 10, drip=b"X-Slow: 1\r\n")
        kept = socket.create_connection(("127.0.0.1", s.port))
        kept.sendall(b"GET /viewer.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert kept.recv(65536).startswith(b"HTTP/1.1 200") and closed_within(kept, 10)
        held = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(3)]
        time.sleep(0.2)
        assert s.get("/viewer.json")[0] == 503  # 3 held + this one reach the limit of 4
        for sock in held:
            sock.close()
        time.sleep(0.2)
        assert s.get("/viewer.json")[0] == 200
        for sock in (idle, slow, kept):
            sock.close()
    finally:
        s.close()


def test_directory_bombs_are_refused(tmp_path: Path) -> None:
    """#10: PMTiles directories are inflated with a limit: a crafted root directory is refused at open, a crafted
    leaf directory is a 500 for the request that reaches it (not 60 MB of RAM, nor a 204 for a damaged archive)."""
    import gzip

    from pmtiles.tile import Compression, Entry, TileType, serialize_directory, serialize_header

    bomb = gzip.compress(bytes(64 << 20), compresslevel=9)  # 64 MiB of zeros in ~64 KB

    def archive(path: Path, root: bytes, leaves: bytes) -> Path:
        tile_data = b"x"
        h = {
            "root_offset": 127, "root_length": len(root), "metadata_offset": 127 + len(root), "metadata_length": 0,
            "leaf_directory_offset": 127 + len(root), "leaf_directory_length": len(leaves),
            "tile_data_offset": 127 + len(root) + len(leaves), "tile_data_length": len(tile_data),
            "addressed_tiles_count": 1, "tile_entries_count": 1, "tile_contents_count": 1, "clustered": True,
            "internal_compression": Compression.GZIP, "tile_compression": Compression.NONE,
            "tile_type": TileType.PNG, "min_zoom": 0, "max_zoom": 4, "min_lon_e7": 0, "min_lat_e7": 0,
            "max_lon_e7": 10_000_000, "max_lat_e7": 10_000_000, "center_zoom": 2, "center_lon_e7": 0,
            "center_lat_e7": 0,
        }  # fmt: skip
        path.write_bytes(serialize_header(h) + root + leaves + tile_data)
        return path

    with pytest.raises(TilesetError, match="decompresses to over"):
        open_tileset(archive(tmp_path / "root.pmtiles", bomb, b""))
    leaf = archive(tmp_path / "leaf.pmtiles", serialize_directory([Entry(0, 0, len(bomb), 0)]), bomb)
    s = Server(leaf)
    try:
        status, headers, _ = s.get("/tiles/2/1/1.png")
        assert (status, headers["cache-control"]) == (500, "no-store")
        assert s.get("/tilejson.json")[0] == 200
    finally:
        s.close()


def test_ipv6_host_prints_a_url_it_accepts(tilesets: dict[str, Path]) -> None:
    """#10: ``geopix serve --host ::1`` prints ``http://[::1]:PORT/``, and its Host check accepts that URL."""
    import socket

    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with cli_server(tilesets["dir"], "--host", "::1") as (_, port):
        url = f"http://[::1]:{port}"
        status, _, body = http_get(port, "/tilejson.json", headers={"Host": f"[::1]:{port}"}, host="::1")
        assert status == 200 and json.loads(body)["tiles"][0].startswith(f"{url}/tiles/")
        assert http_get(port, "/tilejson.json", headers={"Host": f"[::2]:{port}"}, host="::1")[0] == 400


def test_archive_download_cut_mid_body(tmp_path: Path) -> None:
    """#4 during a transfer: /tiles.pmtiles sent whole while the file is cut stops short (its length was
    promised), with one log line and no traceback; the server answers the next request."""
    import socket

    from geopix.tilesets import Tile, pmtiles
    from geopix.tilesets.codec import encode_tile

    rng = np.random.default_rng(0)
    tiles = [Tile(12, x, 0, encode_tile(rng.integers(0, 256, (4, 256, 256), dtype=np.uint8), "png")) for x in range(16)]
    from pmtiles.tile import zxy_to_tileid

    tiles.sort(key=lambda t: zxy_to_tileid(t.z, t.x, t.y))
    path = tmp_path / "big.pmtiles"
    tj = {"name": "big", "format": "png", "bounds": [-180, 80, 180, 85], "center": [0, 82, 12]}
    pmtiles.write(path, tiles, {**tj, "minzoom": 12, "maxzoom": 12, "attribution": "", "description": ""})
    size = path.stat().st_size
    assert size > 3 * (1 << 20)  # several of the server's 1 MiB read steps
    with cli_server(path) as (proc, port):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /tiles.pmtiles HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        got = sock.recv(4096)
        assert got.startswith(b"HTTP/1.1 200") and f"content-length: {size}".encode() in got.lower()
        os.truncate(path, size // 8)
        sock.settimeout(30)
        while chunk := sock.recv(1 << 16):
            got += chunk
        sock.close()
        assert len(got) < size  # cut short: the client sees a body shorter than promised
        assert_unavailable(http_get(port, "/tilejson.json"))
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "/tiles.pmtiles cut off" in err and "Traceback" not in err, err
