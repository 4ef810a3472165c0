"""Tile-set formats: each module's writer and reader round-trip, TileJSON, the GeoTIFF reader's zooms."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import mercantile
import numpy as np
import pytest
from PIL import Image

from geopix.errors import InputNotFoundError, TileFormatError, TilesetError
from geopix.pyramid import PyramidConfig, build_pyramid
from geopix.tilesets import FileByteSource, Tile, folder, mbtiles, open_tileset, output_kind, pmtiles
from geopix.tilesets.codec import JPEG_BACKGROUND, decode_tile, encode_tile, media_type
from geopix.tilesets.tilejson import centre_zoom, make_tilejson
from tests.test_pyramid import lonlat_bounds, make_map

BOUNDS = (15.0, 47.84, 15.02, 47.86)


def sample_tiles() -> list[Tile]:
    """Distinct tiles over BOUNDS at z14-16 (different bytes each), in PMTiles order."""
    from pmtiles.tile import zxy_to_tileid

    tiles = []
    for t in mercantile.tiles(*BOUNDS, [14, 15, 16]):
        rgba = np.zeros((4, 8, 8), np.uint8)
        rgba[0], rgba[1], rgba[2], rgba[3] = t.x % 256, t.y % 256, t.z, 255
        tiles.append(Tile(t.z, t.x, t.y, encode_tile(rgba, "png")))
    return sorted(tiles, key=lambda t: zxy_to_tileid(t.z, t.x, t.y))


def tilejson_for(fmt: str = "png") -> dict:
    return make_tilejson(
        name="rt", tiles_url="{z}/{x}/{y}." + fmt, bounds=BOUNDS, minzoom=14, maxzoom=16, attribution="© test", fmt=fmt
    )


@pytest.mark.parametrize("module,name", [(folder, "dir"), (pmtiles, "t.pmtiles"), (mbtiles, "t.mbtiles")])
def test_round_trip(module, name: str, tmp_path: Path) -> None:
    """What a format module writes, its reader gives back, byte for byte; absent tiles are None."""
    tiles = sample_tiles()
    dst = tmp_path / name
    module.write(dst, iter(tiles), tilejson_for())
    with open_tileset(dst) as ts:
        assert ts.kind == output_kind(dst) and ts.format == "png"
        assert (ts.minzoom, ts.maxzoom) == (14, 16)
        for t in tiles:
            assert ts.get(t.z, t.x, t.y) == t.data
            assert decode_tile(ts.get(t.z, t.x, t.y))[0, 0, 0] == t.x % 256
        first = tiles[0]
        assert ts.get(first.z, first.x + 50, first.y) is None  # inside the zooms, no tile
        assert ts.get(3, 0, 0) is None  # outside the zooms
        tj = ts.tilejson("http://example.org/t/{z}/{x}/{y}.png")
    assert tj["tilejson"] == "3.0.0" and tj["tiles"] == ["http://example.org/t/{z}/{x}/{y}.png"]
    assert tj["bounds"] == pytest.approx(list(BOUNDS), abs=1e-6)
    assert tj["center"][2] == centre_zoom(14, 16) == 15  # the same centre zoom from every format
    assert tj["attribution"] == "© test" and tj["name"] == "rt"
    assert "--base-url" not in tj["description"]  # the folder's hosting note is not served back


def test_folder_iter_tiles_is_in_pmtiles_order(tmp_path: Path) -> None:
    tiles = sample_tiles()
    folder.write(tmp_path / "d", reversed(tiles), tilejson_for())
    assert list(folder.iter_tiles(tmp_path / "d", range(14, 17), "png")) == tiles


def test_mbtiles_rows_are_tms(tmp_path: Path) -> None:
    import sqlite3

    mbtiles.write(tmp_path / "t.mbtiles", [Tile(2, 1, 0, b"north")], tilejson_for())
    con = sqlite3.connect(tmp_path / "t.mbtiles")
    assert con.execute("SELECT zoom_level, tile_column, tile_row FROM tiles").fetchall() == [(2, 1, 3)]
    con.close()
    assert mbtiles.tms_row(2, 0) == 3 and mbtiles.tms_row(2, mbtiles.tms_row(2, 1)) == 1


def test_pmtiles_reads_through_any_byte_source(tmp_path: Path) -> None:
    """The reader only calls ``read(offset, length)``: a remote source can stand in for the file."""
    tiles = sample_tiles()
    pmtiles.write(tmp_path / "t.pmtiles", tiles, tilejson_for())
    blob = (tmp_path / "t.pmtiles").read_bytes()
    calls = []

    class Remote:
        def read(self, offset: int, length: int) -> bytes:
            calls.append((offset, length))
            return blob[offset : offset + length]

        def close(self) -> None:
            calls.append("closed")

    ts = pmtiles.PMTilesTileSet(Remote(), name="remote")
    assert all(ts.get(t.z, t.x, t.y) == t.data for t in tiles)
    ts.close()
    assert calls[-1] == "closed" and len(calls) > len(tiles)


def test_pmtiles_leaf_directories(tmp_path: Path) -> None:
    """An archive big enough to need leaf directories reads the same as pmtiles' own Reader."""
    from pmtiles.reader import MmapSource, Reader
    from pmtiles.tile import Compression, TileType, zxy_to_tileid
    from pmtiles.writer import Writer

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
    src = pmtiles.PMTilesTileSet(FileByteSource(path))
    with open(path, "rb") as f:
        reader = Reader(MmapSource(f))
        assert reader.header()["leaf_directory_length"] > 0
        present = set(tiles)
        for x, y in [*tiles[::97], (1, 1), (4095, 4094)]:
            assert src.get(z, x, y) == reader.get(z, x, y)
            assert src.get(z, x, y) == (f"{x},{y}".encode() * (1 + (x * y) % 7) if (x, y) in present else None)
    src.close()


def test_geotiff_answers_only_within_its_zooms(tmp_path: Path) -> None:
    """Tiled on request like the archives: no tile (None) outside minzoom..maxzoom."""
    map_tif = make_map(tmp_path / "map.tif", 200)
    with open_tileset(map_tif) as ts:
        assert ts.kind == "geotiff" and ts.minzoom <= ts.maxzoom
        w, s, e, n = lonlat_bounds(map_tif)
        t = mercantile.tile((w + e) / 2, s + (n - s) / 4, ts.maxzoom)
        assert ts.get(t.z, t.x, t.y) is not None
        assert ts.get(ts.maxzoom + 1, t.x * 2, t.y * 2) is None
        tj = ts.tilejson("http://h/tiles/{z}/{x}/{y}.png")
        assert tj["center"][2] == centre_zoom(ts.minzoom, ts.maxzoom)
        assert "tiny model" in tj["attribution"]


def test_base_url_makes_folder_tilejson_absolute(tmp_path: Path) -> None:
    map_tif = make_map(tmp_path / "map.tif", 200)
    cfg = PyramidConfig(minzoom=15, maxzoom=16, base_url="https://example.org/maps/city/")
    build_pyramid(map_tif, tmp_path / "tiles", cfg, scheduler="sync")
    tj = json.loads((tmp_path / "tiles" / "tilejson.json").read_text())
    assert tj["tiles"] == ["https://example.org/maps/city/{z}/{x}/{y}.png"]
    assert "--base-url" not in tj["description"]
    with pytest.raises(TileFormatError, match="--base-url"):
        PyramidConfig(base_url="maps/city")


def test_unreadable_paths(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        open_tileset(tmp_path / "missing.pmtiles")
    with pytest.raises(TilesetError, match="tilejson"):
        open_tileset(tmp_path)  # a folder that is not a tile set
    (tmp_path / "bad.pmtiles").write_bytes(b"not a pmtiles archive at all" * 10)
    with pytest.raises(TilesetError):
        open_tileset(tmp_path / "bad.pmtiles")
    (tmp_path / "bad.mbtiles").write_bytes(b"nor sqlite" * 100)
    with pytest.raises(TilesetError):
        open_tileset(tmp_path / "bad.mbtiles")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(TilesetError):
        open_tileset(tmp_path / "x.txt")


def test_cli_tiles_base_url(tmp_path: Path) -> None:
    from geopix.cli import main

    map_tif = make_map(tmp_path / "map.tif", 200)
    out = tmp_path / "site"
    args = ["tiles", str(map_tif), str(out), "--zoom", "15-16", "--scheduler", "sync", "--no-progress"]
    assert main([*args, "--base-url", "http://127.0.0.1:9000/site"]) == 0
    tj = json.loads((out / "tilejson.json").read_text())
    assert tj["tiles"] == ["http://127.0.0.1:9000/site/{z}/{x}/{y}.png"]
    assert main([*args, "--overwrite", "--base-url", "site/"]) == TileFormatError.exit_code


# ---- archives behind a URL (issue 15), against the Range HTTP server and moto's S3 ----------
def _archive(path: Path) -> list[Tile]:
    """The sample tiles, each padded to 1 kB (distinct bytes), so most lie past the first 16 KiB."""
    rng = np.random.default_rng(0)
    tiles = [t._replace(data=t.data + rng.bytes(1000)) for t in sample_tiles()]
    pmtiles.write(path, tiles, tilejson_for())
    return tiles


def test_remote_pmtiles_reads_the_local_bytes_with_few_requests(http_server, http_root: Path) -> None:
    """Header and root directory come in the first request and are kept: then one GET per tile."""
    tiles = _archive(http_root / "remote.pmtiles")
    http_server.reset_counts()
    with open_tileset(f"{http_server.url}/remote.pmtiles") as ts, open_tileset(http_root / "remote.pmtiles") as local:
        opened = http_server.requests
        assert opened <= 2  # the first 16 KiB (header, root directory), perhaps the metadata
        assert ts.kind == "pmtiles"
        assert ts.tilejson("x/{z}/{x}/{y}.png") == local.tilejson("x/{z}/{x}/{y}.png")
        for t in tiles:
            assert ts.get(t.z, t.x, t.y) == t.data
        fetched = http_server.requests - opened
        assert len(tiles) - 16 <= fetched <= len(tiles)  # one GET per tile, none for those in the first 16 KiB
        assert ts.get(16, 0, 0) is None  # no tile: answered from the cached directory
        assert http_server.requests - opened == fetched


def test_remote_pmtiles_leaf_directories_are_cached(s3_bucket: str, tmp_path: Path) -> None:
    from pmtiles.tile import Compression, TileType, zxy_to_tileid
    from pmtiles.writer import Writer

    from geopix.testservers import upload_to_s3

    z, rng = 12, np.random.default_rng(1)
    tiles = [(int(i % 4096), int(i // 4096)) for i in rng.choice(4096 * 4096, size=20000, replace=False)]
    path = tmp_path / "big.pmtiles"
    with open(path, "wb") as f:
        w = Writer(f)
        for x, y in sorted(tiles, key=lambda t: zxy_to_tileid(z, *t)):
            w.write_tile(zxy_to_tileid(z, x, y), f"{x},{y}".encode())
        w.finalize({"tile_type": TileType.PNG, "tile_compression": Compression.NONE}, {"name": "big"})
    upload_to_s3(path, f"s3://{s3_bucket}/big.pmtiles")
    with open_tileset(f"s3://{s3_bucket}/big.pmtiles") as ts:
        assert ts._header["leaf_directory_length"] > 0
        for x, y in tiles[::500]:
            assert ts.get(z, x, y) == f"{x},{y}".encode()
        assert ts._dirs  # leaf directories decoded once and kept


def test_remote_archive_errors(http_server, http_root: Path, s3_endpoint: str) -> None:
    """404, 403, a missing bucket, no Range support, no server: the remote-raster errors and codes."""
    import socket

    from geopix.errors import RemoteAccessError, RemoteProtocolError, RemoteUnreachableError
    from geopix.testservers import RangeHTTPServer

    _archive(http_root / "big_enough.pmtiles")
    host = http_server.url.split("://")[1]
    with pytest.raises(InputNotFoundError, match=r"missing\.pmtiles does not exist \(HTTP 404\)"):
        open_tileset(f"{http_server.url}/missing.pmtiles")
    with pytest.raises(RemoteAccessError, match="credentials") as denied:
        open_tileset(f"http://alice:hunter2@{host}/forbidden/t.pmtiles")
    assert "hunter2" not in str(denied.value) and "alice" not in str(denied.value)
    with pytest.raises(InputNotFoundError, match=r"no-such-bucket.*bucket does not exist"):
        open_tileset("s3://no-such-bucket/t.pmtiles")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RemoteUnreachableError, match=f"127.0.0.1:{port}"):
        open_tileset(f"http://127.0.0.1:{port}/t.pmtiles")
    with RangeHTTPServer(http_root, ranges=False) as plain, pytest.raises(RemoteProtocolError, match="Range"):
        open_tileset(f"{plain.url}/big_enough.pmtiles")  # the whole file came back for the first 16 KiB
    with pytest.raises(TilesetError, match="SQLite"):
        open_tileset(f"{http_server.url}/t.mbtiles")
    with pytest.raises(TilesetError, match=r"\.pmtiles archives and GeoTIFFs"):
        open_tileset(f"{http_server.url}/tiles/")


@pytest.mark.parametrize(
    "key,value,words",
    [
        ("bounds", "a,b", "bounds = 'a,b' must be four numbers"),
        ("bounds", "15,47", "bounds = '15,47' must be four numbers"),
        ("bounds", "15,47,14,48", "is not a box on the globe"),
        ("minzoom", "x", "minzoom = 'x' must be a whole number 0-30"),
        ("maxzoom", "99", "maxzoom = '99' must be a whole number 0-30"),
        ("minzoom", "17", "minzoom 17 is above maxzoom 16"),
        ("center", "15.01", "center = '15.01' must be lon,lat or lon,lat,zoom"),
        ("center", "15,47,z", "center = '15,47,z' must be lon,lat or lon,lat,zoom"),
        ("tileSize", "big", "tileSize = 'big' must be a whole number"),
    ],
)
def test_mbtiles_metadata_checked_at_open(
    key: str, value: str, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """#9: a bad metadata row is refused when the file is opened, naming the file, the row and the value
    (exit 21 from ``geopix serve``), instead of a 500 per TileJSON or an "unexpected ValueError"."""
    import sqlite3

    from geopix.cli import main
    from geopix.serve import bind

    path = tmp_path / "bad.mbtiles"
    mbtiles.write(path, sample_tiles(), tilejson_for())
    con = sqlite3.connect(path)
    con.execute("UPDATE metadata SET value=? WHERE name=?", (value, key))
    if key == "tileSize" or con.total_changes == 0:
        con.execute("INSERT OR REPLACE INTO metadata VALUES (?, ?)", (key, value))
    con.commit()
    con.close()
    with pytest.raises(TilesetError, match=re.escape(f"{path} metadata: ") + ".*" + re.escape(words)):
        open_tileset(path)
    busy = bind("127.0.0.1", 0)  # were the file accepted, the server would stop at the port (35), not serve forever
    try:
        assert main(["serve", str(path), "--port", str(busy.getsockname()[1])]) == TilesetError.exit_code
    finally:
        busy.close()
    err = capsys.readouterr().err
    assert str(path) in err and words in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "change,words",
    [
        ({"bounds": [15, 47]}, "bounds = [15, 47] must be four numbers"),
        ({"minzoom": "x"}, "minzoom = 'x' must be a whole number"),
        ({"center": [15, "n", 3]}, "center = [15, 'n', 3]"),
        ({"tileSize": 1.5}, "tileSize = 1.5 must be a whole number"),
    ],
)
def test_folder_tilejson_checked_at_open(change: dict, words: str, tmp_path: Path) -> None:
    """#9 for folders: the same checks on ``tilejson.json``, naming it."""
    folder.write(tmp_path / "d", sample_tiles(), tilejson_for())
    tj_path = tmp_path / "d" / "tilejson.json"
    tj_path.write_text(json.dumps({**json.loads(tj_path.read_text()), **change}))
    with pytest.raises(TilesetError, match=re.escape(f"{tj_path}: ") + ".*" + re.escape(words)):
        open_tileset(tmp_path / "d")


def test_live_tileset_keeps_a_replaced_version_for_its_readers(tmp_path: Path) -> None:
    """A version renamed over stays readable (its own file) until its last lease ends, then it is closed."""
    import os

    from geopix.testing import versioned_tileset
    from geopix.tilesets.live import LiveTileSet

    path = tmp_path / "t.pmtiles"
    v1 = versioned_tileset(path, "pmtiles", 1)
    zxy = next(iter(v1))
    live = LiveTileSet(path, open_tileset)
    old = live.lease()
    v2 = versioned_tileset(tmp_path / "new.pmtiles", "pmtiles", 2)
    os.replace(tmp_path / "new.pmtiles", path)
    with live.lease() as new:
        assert (new.number, new.tileset.get(*zxy)) == (2, v2[zxy])
    assert old.tileset.get(*zxy) == v1[zxy] and old.unchanged()
    old.release()
    with pytest.raises(OSError):  # closed with its last reader
        old.tileset.get(*zxy)
    live.close()


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_damage_spots_empty_cut_and_foreign_tiles(fmt: str) -> None:
    from geopix.tilesets.codec import damage

    rgba = np.random.default_rng(0).integers(0, 256, (4, 32, 32), dtype=np.uint8)
    data = encode_tile(rgba, fmt)
    assert damage(data, fmt) is None
    assert "empty" in damage(b"", fmt)
    assert "cut-short" in damage(data[: len(data) - 20], fmt)
    assert "is not a" in damage(encode_tile(rgba, "png" if fmt != "png" else "jpg"), fmt)


# ---- the tile codec ------------------------------------------------------------------------------
def _flat_tile() -> np.ndarray:
    """Flat grey areas (which JPEG at quality 100 keeps exactly) at alpha 255, 128 and 0."""
    t = np.zeros((4, 16, 16), np.uint8)
    t[:3], t[:3, :, 8:] = 200, 60
    t[3], t[3, 8:], t[3, 12:] = 255, 128, 0
    return t


def _noise_tile(opaque: bool) -> np.ndarray:
    t = np.random.default_rng(0).integers(0, 256, (4, 32, 32), dtype=np.uint8)
    if opaque:
        t[3] = 255
    return t


def _opened(data: bytes) -> tuple[str, str]:
    with Image.open(io.BytesIO(data)) as im:
        return im.format, im.mode


@pytest.mark.parametrize("opaque", [True, False])
def test_png_tiles_are_lossless_and_keep_alpha_only_when_needed(opaque: bool) -> None:
    rgba = _noise_tile(opaque)
    data = encode_tile(rgba, "png")
    assert _opened(data) == ("PNG", "RGB" if opaque else "RGBA")  # opaque tiles drop the alpha channel
    back = decode_tile(data)
    assert back.dtype == np.uint8 and np.array_equal(back, rgba)  # always 4 channels back


def test_jpeg_tiles_composite_transparency_on_white() -> None:
    t = _flat_tile()
    data = encode_tile(t, "jpg", quality=100)
    assert _opened(data) == ("JPEG", "RGB") and media_type("jpg") == "image/jpeg"
    a = t[3] / 255.0
    want = np.round(t[:3] * a + np.array(JPEG_BACKGROUND)[:, None, None] * (1 - a))
    back = decode_tile(data)
    assert np.array_equal(back[:3], want) and (back[3] == 255).all()


@pytest.mark.parametrize("opaque", [True, False])
def test_webp_tiles(opaque: bool) -> None:
    t = _flat_tile()
    if opaque:
        t[3] = 255
    data = encode_tile(t, "webp")
    assert _opened(data) == ("WEBP", "RGB" if opaque else "RGBA") and media_type("webp") == "image/webp"
    assert np.abs(decode_tile(data).astype(int) - t).max() <= 2  # lossy, but not for flat colours


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
def test_quality_trades_size_for_fidelity(fmt: str) -> None:
    rgba = _noise_tile(opaque=True)
    low, high = encode_tile(rgba, fmt, quality=30), encode_tile(rgba, fmt, quality=95)
    assert len(low) < len(high)
    err = [np.abs(decode_tile(d).astype(int) - rgba).mean() for d in (low, high)]
    assert err[1] < err[0]
    assert encode_tile(rgba, fmt) == encode_tile(rgba, fmt, quality=PyramidConfig().quality)  # one default


def test_unknown_tile_format() -> None:
    assert media_type("png") == "image/png"
    with pytest.raises(TileFormatError, match="'gif' is unknown; expected one of png, webp, jpg"):
        media_type("gif")


# ---- from mutation testing (docs/testing.md): codec.damage, which the server asks of every tile ----


@pytest.mark.parametrize(("fmt", "name"), [("png", "PNG"), ("jpg", "JPEG"), ("webp", "WebP")])
def test_damage_names_what_is_wrong_with_a_tile(fmt: str, name: str) -> None:
    from geopix.tilesets.codec import damage, encode_tile

    rgba = np.full((4, 64, 64), 255, np.uint8)
    rgba[:3] = 120
    rgba[:3, ::3, ::5] = 30  # some detail, so the file has a body to cut
    whole = encode_tile(rgba, fmt, 90)
    other = encode_tile(rgba, "png" if fmt != "png" else "jpg", 90)
    assert damage(whole, fmt) is None
    assert damage(b"", fmt) == "is empty (0 bytes)"
    assert damage(other, fmt) == f"is not a {name} image"
    cut = whole[: len(whole) // 2]
    if fmt == "webp":
        assert damage(cut, fmt) == f"is a cut-short WebP image ({len(cut)} of {len(whole)} bytes)"
        assert damage(b"RIFF" + whole[4:8] + b"WAVE" + whole[12:], fmt) == "is not a WebP image"
        assert damage(whole[:4] + b"\0\0\0\0" + whole[8:], fmt) is None  # declared 8 bytes: whole
    else:
        assert damage(cut, fmt).startswith(f"is a cut-short {name} image ({len(cut)} bytes")
        # the end marker must be at the end: 100 bytes after it are a file that kept going
        assert damage(whole + b"\0" * 100, fmt) is not None
        assert damage(whole + b"\0" * 10, fmt) is None  # a little padding after it is fine
