"""geopix.source, stac, mosaic: user-typed inputs → GDAL names; STAC Items; mosaics; remote errors (real servers)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from hypothesis import given
from hypothesis import strategies as st

from geopix.cli import main
from geopix.errors import (
    InputNotFoundError,
    MosaicError,
    RemoteAccessError,
    RemoteProtocolError,
    RemoteUnreachableError,
    StacError,
)
from geopix.mosaic import expand, resolve_input
from geopix.read import inspect_raster
from geopix.source import gdal_name, is_remote, redact, url_of
from geopix.testing import synthetic_aerial


# ---- pure naming -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("typed", "name"),
    [
        ("https://example.org/a/b.tif", "/vsicurl/https://example.org/a/b.tif"),
        ("http://127.0.0.1:8000/m.tif", "/vsicurl/http://127.0.0.1:8000/m.tif"),
        ("s3://bucket/key/in.tif", "/vsis3/bucket/key/in.tif"),
        ("gs://bucket/in.tif", "/vsigs/bucket/in.tif"),
        ("az://container/in.tif", "/vsiaz/container/in.tif"),
        ("/vsicurl/https://h/x.tif", "/vsicurl/https://h/x.tif"),
        ("/vsizip//data/a.zip/x.tif", "/vsizip//data/a.zip/x.tif"),
    ],
)
def test_gdal_name_maps_schemes(typed: str, name: str) -> None:
    assert gdal_name(typed) == name
    assert is_remote(name) == (not name.startswith("/vsizip"))


def test_local_paths_become_absolute_strings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert gdal_name("in.tif") == str(tmp_path / "in.tif")
    assert not is_remote(gdal_name("in.tif"))


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(InputNotFoundError, match="ftp"):
        gdal_name("ftp://host/a.tif")


@given(
    user=st.text("abcxyz0123", min_size=1, max_size=8),
    secret=st.text("ABCDEFabcdef0123456789+/", min_size=4, max_size=30),
)
def test_redact_never_shows_credentials(user: str, secret: str) -> None:
    for url in (
        f"https://{user}:{secret}@host/a.tif",
        f"https://host/a.tif?X-Amz-Signature={secret}&X-Amz-Credential={secret}",
        f"https://acct.blob.core.windows.net/c/a.tif?sv=2020&sig={secret}",
    ):
        out = redact(f"cannot read {url}")
        assert secret not in out
        assert "host" in out or "windows.net" in out
    assert url_of(f"/vsicurl/https://{user}:{secret}@host/a.tif") == "https://***@host/a.tif"
    assert url_of("/vsis3/b/k.tif") == "s3://b/k.tif"


# ---- reading over HTTP and S3 ----------------------------------------------------------------
@pytest.fixture(scope="module")
def served(http_root: Path, aerial: Path) -> Path:
    dst = http_root / "in.tif"
    shutil.copy(aerial, dst)
    return dst


def test_http_url_reads_the_same_pixels(http_server, served: Path, aerial: Path) -> None:
    info = inspect_raster(f"{http_server.url}/in.tif")
    assert info.path == f"/vsicurl/{http_server.url}/in.tif"
    local = inspect_raster(aerial)
    assert (info.width, info.height, info.crs) == (local.width, local.height, local.crs)
    assert info.transform == local.transform
    with rasterio.open(info.path) as a, rasterio.open(aerial) as b:
        np.testing.assert_array_equal(a.read(), b.read())


def test_s3_url_reads_the_same_pixels(s3_bucket: str, aerial: Path) -> None:
    from geopix.testservers import upload_to_s3

    upload_to_s3(aerial, f"s3://{s3_bucket}/in.tif")
    info = inspect_raster(f"s3://{s3_bucket}/in.tif")
    assert info.path == f"/vsis3/{s3_bucket}/in.tif"
    with rasterio.open(info.path) as a, rasterio.open(aerial) as b:
        np.testing.assert_array_equal(a.read(), b.read())


# ---- bad remote input: one line naming the URL and the fix, its own exit code ----------------
def _cli_error(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def test_http_404(http_server, served: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    url = f"{http_server.url}/missing.tif"
    with pytest.raises(InputNotFoundError, match=r"missing\.tif"):
        inspect_raster(url)
    code, err = _cli_error(["render", url, "-o", str(tmp_path / "o"), "--no-progress"], capsys)
    assert code == InputNotFoundError.exit_code
    assert url in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_http_403_names_credentials(http_server, http_root: Path, aerial: Path, tmp_path: Path, capsys) -> None:
    url = f"{http_server.url}/forbidden/in.tif"
    with pytest.raises(RemoteAccessError, match="credentials"):
        inspect_raster(url)
    code, err = _cli_error(["render", url, "-o", str(tmp_path / "o")], capsys)
    assert code == RemoteAccessError.exit_code and url in err
    assert not (tmp_path / "o").exists()


def test_credentials_in_the_url_never_printed(http_server, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    host = http_server.url.split("://")[1]
    code, err = _cli_error(["render", f"http://alice:hunter2@{host}/forbidden/in.tif", "-o", str(tmp_path)], capsys)
    assert code == RemoteAccessError.exit_code
    assert "hunter2" not in err and "alice" not in err


def test_connection_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RemoteUnreachableError, match=f"127.0.0.1:{port}"):
        inspect_raster(f"http://127.0.0.1:{port}/in.tif")


def test_timeout(http_server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "1")
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "0")
    with pytest.raises(RemoteUnreachableError, match="GDAL_HTTP_TIMEOUT"):
        inspect_raster(f"{http_server.url}/stall/in.tif")


def test_server_without_range_support(http_root: Path, served: Path) -> None:
    from geopix.testservers import RangeHTTPServer

    with RangeHTTPServer(http_root, ranges=False) as plain, pytest.raises(RemoteProtocolError, match="Range"):
        inspect_raster(f"{plain.url}/in.tif")


def test_missing_bucket(s3_endpoint: str) -> None:
    with pytest.raises(InputNotFoundError, match="no-such-bucket"):
        inspect_raster("s3://no-such-bucket/in.tif")


# ---- STAC Items ------------------------------------------------------------------------------
def _stac_item(path: Path, assets: dict[str, tuple[str, list[str]]]) -> Path:
    import datetime

    import pystac

    item = pystac.Item(
        id="scene",
        geometry={"type": "Point", "coordinates": [15.0, 47.8]},
        bbox=[15.0, 47.8, 15.0, 47.8],
        datetime=datetime.datetime(2024, 6, 1, tzinfo=datetime.timezone.utc),
        properties={},
    )
    for key, (href, roles) in assets.items():
        item.add_asset(key, pystac.Asset(href=href, media_type=pystac.MediaType.COG, roles=roles))
    path.write_text(json.dumps(item.to_dict(include_self_link=False)))
    return path


def test_stac_item_picks_the_visual_asset(http_server, served: Path, http_root: Path, tmp_path: Path) -> None:
    item = _stac_item(
        http_root / "item.json",
        {"nir": (f"{http_server.url}/nir.tif", ["data"]), "visual": (f"{http_server.url}/in.tif", ["visual"])},
    )
    # a local Item file and the same Item over HTTP both resolve to the served COG
    assert resolve_input(str(item)) == f"/vsicurl/{http_server.url}/in.tif"
    assert resolve_input(f"{http_server.url}/item.json") == f"/vsicurl/{http_server.url}/in.tif"
    assert resolve_input(str(item), asset="nir") == f"/vsicurl/{http_server.url}/nir.tif"


def test_stac_relative_href_is_made_absolute(http_server, served: Path, http_root: Path) -> None:
    _stac_item(http_root / "rel.json", {"image": ("./in.tif", ["data"])})
    assert resolve_input(f"{http_server.url}/rel.json") == f"/vsicurl/{http_server.url}/in.tif"


def test_stac_without_rgb_asset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    item = _stac_item(tmp_path / "item.json", {"nir": ("nir.tif", ["data"]), "swir": ("swir.tif", ["data"])})
    with pytest.raises(StacError, match="--asset"):
        resolve_input(str(item))
    with pytest.raises(StacError, match="nir, swir"):
        resolve_input(str(item), asset="red")
    code, err = _cli_error(["render", str(item), "-o", str(tmp_path / "o")], capsys)
    assert code == StacError.exit_code and "item.json" in err


def test_stac_collection_is_refused(tmp_path: Path) -> None:
    doc = tmp_path / "collection.json"
    doc.write_text(json.dumps({"type": "Collection", "id": "c"}))
    with pytest.raises(StacError, match="not a STAC Item"):
        resolve_input(str(doc))


# ---- mosaics ---------------------------------------------------------------------------------
def split_2x2(src: Path, folder: Path) -> list[Path]:
    """Cut ``src`` into four GeoTIFF quarters (same CRS, grid and band layout)."""
    from rasterio.windows import Window
    from rasterio.windows import transform as wtransform

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    with rasterio.open(src) as ds:
        h2, w2, hh, ww = ds.height // 2, ds.width // 2, ds.height - ds.height // 2, ds.width - ds.width // 2
        for i, (r, c, h, w) in enumerate([(0, 0, h2, w2), (0, w2, h2, ww), (h2, 0, hh, w2), (h2, w2, hh, ww)]):
            win = Window(c, r, w, h)
            profile = ds.profile | {"width": w, "height": h, "transform": wtransform(win, ds.transform)}
            profile.pop("blockxsize", None), profile.pop("blockysize", None)
            profile["tiled"] = False
            dst = folder / f"q{i}.tif"
            with rasterio.open(dst, "w", **profile) as q:
                q.write(ds.read(window=win))
            out.append(dst)
    return out


def test_mosaic_of_four_quarters_reads_as_the_whole(aerial: Path, tmp_path: Path) -> None:
    quarters = split_2x2(aerial, tmp_path / "q")
    for typed in ([str(p) for p in quarters], str(tmp_path / "q" / "q*.tif")):
        name = resolve_input(typed)
        assert name.startswith("<VRTDataset")
        with rasterio.open(name) as m, rasterio.open(aerial) as whole:
            assert (m.crs, m.transform, m.width, m.height) == (whole.crs, whole.transform, whole.width, whole.height)
            np.testing.assert_array_equal(m.read(), whole.read())


def test_mosaic_of_remote_files(http_server, http_root: Path, aerial: Path) -> None:
    quarters = split_2x2(aerial, http_root / "quarters")
    name = resolve_input([f"{http_server.url}/quarters/{p.name}" for p in quarters])
    assert is_remote(name)
    with rasterio.open(name) as m, rasterio.open(aerial) as whole:
        np.testing.assert_array_equal(m.read(), whole.read())


def test_mosaic_with_mixed_crs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = synthetic_aerial(tmp_path / "a.tif", 64, crs="EPSG:32633")
    b = synthetic_aerial(tmp_path / "b.tif", 64, crs="EPSG:32632", origin=(500128.0, 5300000.0))
    with pytest.raises(MosaicError, match=r"different CRSs.*gdalwarp"):
        resolve_input([str(a), str(b)])
    code, err = _cli_error(["render", str(tmp_path / "*.tif"), "-o", str(tmp_path / "o")], capsys)
    assert code == MosaicError.exit_code and "b.tif" in err
    assert not (tmp_path / "o").exists()


def test_glob_matching_nothing(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="matches no file"):
        resolve_input(str(tmp_path / "none*.tif"))


def test_a_file_whose_name_looks_like_a_glob(aerial: Path, tmp_path: Path) -> None:
    odd = tmp_path / "scene[1].tif"
    shutil.copy(aerial, odd)
    assert resolve_input(str(odd)) == str(odd)


def test_s3_glob_lists_the_bucket_sorted(s3_bucket: str, aerial: Path, tmp_path: Path) -> None:
    from geopix.testservers import upload_to_s3

    quarters = split_2x2(aerial, tmp_path / "q")
    for p in reversed(quarters):  # uploaded out of order: the listing is sorted
        upload_to_s3(p, f"s3://{s3_bucket}/globbed/{p.name}")
    upload_to_s3(quarters[0], f"s3://{s3_bucket}/globbed/other/{quarters[0].name}")  # not matched by q*.tif
    assert expand([f"s3://{s3_bucket}/globbed/q*.tif"]) == [f"s3://{s3_bucket}/globbed/{p.name}" for p in quarters]
    name = resolve_input(f"s3://{s3_bucket}/globbed/q*.tif")
    assert name.startswith("<VRTDataset") and f"/vsis3/{s3_bucket}/globbed/q0.tif" in name
    with rasterio.open(name) as m, rasterio.open(resolve_input(str(tmp_path / "q" / "q*.tif"))) as local:
        assert (m.crs, m.transform, m.width, m.height) == (local.crs, local.transform, local.width, local.height)
        np.testing.assert_array_equal(m.read(), local.read())


def test_s3_glob_matching_nothing(s3_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pattern = f"s3://{s3_bucket}/nowhere/*.tif"
    with pytest.raises(InputNotFoundError, match=re.escape(pattern) + " matches no object"):
        resolve_input(pattern)
    code, err = _cli_error(["render", pattern, "-o", str(tmp_path / "o")], capsys)
    assert code == InputNotFoundError.exit_code and pattern in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()
    code, err = _cli_error(["render", "s3://no-such-bucket/*.tif", "-o", str(tmp_path / "o")], capsys)
    assert code == InputNotFoundError.exit_code and "no-such-bucket" in err and len(err.splitlines()) == 1


def test_http_urls_are_never_globbed() -> None:
    """``?`` starts a URL's query (a pre-signed URL has one): the URL is passed on as typed."""
    url = "https://example.org/a.tif?X-Amz-Signature=abc&x=[1]"
    assert expand([url]) == [url]


# ---- issue 26 case 11: one remote-timeout diagnosis -------------------------------------------
@pytest.fixture
def faulty_server(http_root: Path, served: Path):
    """The header of in.tif is served; reads from byte 200 000 on stall or fail with HTTP 500."""
    from geopix.testservers import RangeHTTPServer

    for d in ("stalls", "fails"):
        (http_root / d).mkdir(exist_ok=True)
        shutil.copy(served, http_root / d / "in.tif")
    faults = {"/stalls/": "stall>200000", "/fails/": "500>200000"}
    with RangeHTTPServer(http_root, faults=faults, stall_s=60) as server:
        yield server


def _read_corner(url: str) -> None:
    from geopix.read import damaged_is_an_error

    name = gdal_name(url)
    with rasterio.open(name) as src, damaged_is_an_error(name, " at the corner"):
        src.read(window=((500, 600), (600, 700)))


def test_a_stalled_pixel_read_is_a_timeout_and_is_not_retried(faulty_server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stall ends within GDAL_HTTP_TIMEOUT, once: GDAL_HTTP_MAX_RETRY adds no request (before: each
    stalled request timed out 1 + 4 times, a --source tile took 240 s at the 60 s default)."""
    from geopix.process import configure_gdal

    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "2")
    monkeypatch.delenv("GDAL_HTTP_LOW_SPEED_TIME", raising=False)
    configure_gdal()
    url = f"{faulty_server.url}/stalls/in.tif"
    hits = []
    for retries in ("0", "4"):
        monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", retries)
        with rasterio.open(gdal_name(url)) as src:
            faulty_server.reset_counts()
            with pytest.raises(rasterio.errors.RasterioIOError):
                src.read(1, window=((520, 530), (650, 660)))
        hits.append(faulty_server.faults_hit)
    assert hits[0] >= 1 and hits[1] == hits[0]
    with pytest.raises(RemoteUnreachableError, match="did not answer in time"):
        _read_corner(url)


def test_an_http_500_on_pixel_reads_is_a_server_error_not_damage(
    faulty_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "0")
    with pytest.raises(RemoteUnreachableError, match=r"server failed \(HTTP 500\)") as err:
        _read_corner(f"{faulty_server.url}/fails/in.tif")
    assert "damaged" not in str(err.value) and err.value.exit_code == 46
