"""The tile server: routes, content types, caching, CORS, empty tiles, traversal attempts."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import mercantile
import numpy as np
import pytest

from geopix.errors import InputNotFoundError, TilesetError
from geopix.pyramid import PyramidConfig, build_pyramid, decode_tile
from geopix.serve import make_server
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


class Server:
    def __init__(self, path: Path, **kwargs: object) -> None:
        self.httpd = make_server(path, port=0, **kwargs)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def get(self, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request(method, path)  # http.client sends the path as is: no normalisation of ../ or %2e
        r = conn.getresponse()
        body = r.read()
        conn.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


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
        assert "max-age" in headers["cache-control"]
        assert "access-control-allow-origin" not in headers
        assert body == (tilesets["dir"] / f"{t.z}/{t.x}/{t.y}.png").read_bytes()
    # a tile address inside the world but without a tile: 204 (empty), never an error
    for path in ["/tiles/3/0/0.png", *(f"/tiles/{t.z}/{t.x}/{t.y}.png" for t in empty)]:
        status, _, body = server.get(path)
        assert (status, body) == (204, b"")
    status, headers, body = server.get("/tilejson.json")
    assert status == 200 and headers["content-type"] == "application/json"
    tj = json.loads(body)
    assert tj["tilejson"] == "3.0.0" and (tj["minzoom"], tj["maxzoom"]) == ZOOM
    assert tj["tiles"] == [f"http://127.0.0.1:{server.port}/tiles/{{z}}/{{x}}/{{y}}.png"]
    assert tj["bounds"] == pytest.approx(list(lonlat_bounds(tilesets["map"])), abs=1e-6)
    status, headers, body = server.get("/")
    assert status == 200 and headers["content-type"].startswith("text/html") and b"viewer.js" in body
    for name, ctype in (("viewer.js", "text/javascript"), ("viewer.css", "text/css")):
        status, headers, _ = server.get(f"/static/{name}")
        assert status == 200 and headers["content-type"].startswith(ctype)
    status, headers, body = server.get(f"/tiles/{present[0].z}/{present[0].x}/{present[0].y}.png", "HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0


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
        "/tiles/16/1/1.webp",  # wrong extension for this tileset
        "/tiles/1/5/0.png",  # x outside the zoom's 2**z columns
        "/tiles/-1/0/0.png",
        "/source/16/1/1.png",  # no --source given
        "/source/tilejson.json",
        "/nope",
    ],
)
def test_not_found_and_traversal(server: Server, path: str) -> None:
    status, _, body = server.get(path)
    assert status == 404, path
    assert b"do not serve" not in body and b"import" not in body


@pytest.mark.parametrize("server", [("dir", {"cors": True})], indirect=True)
def test_cors(server: Server, tilesets: dict[str, Path]) -> None:
    (t, *_), _ = some_tiles(tilesets)
    for path in (f"/tiles/{t.z}/{t.x}/{t.y}.png", "/tilejson.json"):
        _, headers, _ = server.get(path)
        assert headers["access-control-allow-origin"] == "*"


def test_geotiff_served_dynamically_with_source(tilesets: dict[str, Path]) -> None:
    """A GeoTIFF is tiled on request (rio-tiler); ``source=`` adds the aerial layer for the swipe."""
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
        assert headers["cache-control"].startswith("public")
        # the dynamic tile agrees with the pre-built one (both warp the same raster)
        dyn = decode_tile(body)
        assert np.mean((built[3] > 0) != (dyn[3] > 0)) < 0.02
        both = (built[3] == 255) & (dyn[3] == 255)
        assert both.mean() > 0.2
        assert np.abs(built[:3].astype(int) - dyn[:3].astype(int))[:, both].mean() < 3
        # the tile at the north-west corner (the masked quarter) is empty; one far outside has no data
        w, _, _, n = lonlat_bounds(map_tif)
        corner = mercantile.tile(w + 1e-7, n - 1e-7, 18)
        assert s.get(f"/tiles/18/{corner.x}/{corner.y}.png")[0] == 204
        assert s.get(f"/tiles/{t.z}/{t.x - 5}/{t.y}.png")[0] == 204
        status, headers, _ = s.get(f"/source/{t.z}/{t.x}/{t.y}.png")
        assert status == 200 and headers["content-type"] == "image/png"
        status, _, body = s.get("/viewer.json")
        assert json.loads(body)["source"] == "/source/tilejson.json"
        status, _, body = s.get("/source/tilejson.json")
        assert status == 200 and "/source/{z}/{x}/{y}.png" in json.loads(body)["tiles"][0]
        assert s.get("/tiles/30/0/0.png")[0] == 204  # far past the max zoom: nothing rendered
    finally:
        s.close()


def test_unservable_paths(tmp_path: Path, tilesets: dict[str, Path]) -> None:
    with pytest.raises(InputNotFoundError):
        make_server(tmp_path / "missing.pmtiles", port=0)
    with pytest.raises(TilesetError, match="tilejson"):
        make_server(tmp_path, port=0)  # a folder that is not a tileset
    (tmp_path / "bad.pmtiles").write_bytes(b"not a pmtiles archive at all" * 10)
    with pytest.raises(TilesetError):
        make_server(tmp_path / "bad.pmtiles", port=0)
    (tmp_path / "bad.mbtiles").write_bytes(b"nor sqlite" * 100)
    with pytest.raises(TilesetError):
        make_server(tmp_path / "bad.mbtiles", port=0)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(TilesetError):
        make_server(tmp_path / "x.txt", port=0)
    with pytest.raises(TilesetError, match="--source"):
        make_server(tilesets["dir"], port=0, source=tilesets["pmtiles"])


def test_pmtiles_leaf_directories(tmp_path: Path) -> None:
    """An archive big enough to need leaf directories reads the same as pmtiles' own Reader."""
    from pmtiles.reader import MmapSource, Reader
    from pmtiles.tile import Compression, TileType, zxy_to_tileid
    from pmtiles.writer import Writer

    from geopix.serve import PMTilesSource

    z = 12
    rng = np.random.default_rng(0)
    ids = rng.choice(4096 * 4096, size=30000, replace=False)  # random ids: directories compress badly
    tiles = [(int(i % 4096), int(i // 4096)) for i in ids]
    path = tmp_path / "big.pmtiles"
    with open(path, "wb") as f:
        w = Writer(f)
        for x, y in sorted(tiles, key=lambda t: zxy_to_tileid(z, *t)):
            w.write_tile(zxy_to_tileid(z, x, y), f"{x},{y}".encode() * (1 + (x * y) % 7))
        w.finalize({"tile_type": TileType.PNG, "tile_compression": Compression.NONE}, {"name": "big"})
    src = PMTilesSource(path)
    with open(path, "rb") as f:
        reader = Reader(MmapSource(f))
        assert reader.header()["leaf_directory_length"] > 0
        present = set(tiles)
        for x, y in [*tiles[::97], (1, 1), (4095, 4094)]:
            assert src.get(z, x, y) == reader.get(z, x, y)
            assert src.get(z, x, y) == (f"{x},{y}".encode() * (1 + (x * y) % 7) if (x, y) in present else None)
    src.close()
