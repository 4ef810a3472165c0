"""Training data: dataset layouts, deterministic shared augmentation, and cutting pairs from rasters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.transform import from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject

from geopix.cli import main
from geopix.config import CutConfig
from geopix.data.cut import make_pairs
from geopix.data.pairs import PairDataset, PairRef, find_pairs, read_pair
from geopix.errors import DatasetError, MissingCRSError, TilingError
from geopix.testing import synthetic_aerial, synthetic_maps_dataset


def _save(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def _img(value: int, size: int = 8) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


# ---- layouts ------------------------------------------------------------------------------------
def test_maps_layout_numeric_order_and_split(tmp_path: Path) -> None:
    root = synthetic_maps_dataset(tmp_path, n_train=11, n_val=2, size=32)
    train = find_pairs(root, "train")
    assert [p.name for p in train] == [str(i) for i in range(1, 12)]  # 2 before 10
    assert all(p.b is None for p in train)
    assert len(find_pairs(root, "val")) == 2
    assert len(find_pairs(root / "val", "train")) == 2  # the split folder itself
    a, b = read_pair(train[0])
    assert a.shape == b.shape == (32, 32, 3)
    b2, a2 = read_pair(train[0], "BtoA")
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(b, b2)


@pytest.mark.parametrize("layout", ["split/AB", "AB/split", "AB"])
def test_a_b_folder_layouts(tmp_path: Path, layout: str) -> None:
    def folder(side: str) -> Path:
        return {"split/AB": tmp_path / "train" / side, "AB/split": tmp_path / side / "train", "AB": tmp_path / side}[
            layout
        ]

    for stem, value in (("x1", 10), ("x2", 20)):
        _save(folder("A") / f"{stem}.png", _img(value))
        _save(folder("B") / f"{stem}.png", _img(value + 100))
    _save(folder("A") / "only_a.png", _img(0))
    pairs = find_pairs(tmp_path, "train")
    assert [p.name for p in pairs] == ["x1", "x2"]  # unmatched stems are left out
    a, b = read_pair(pairs[1])
    assert a[0, 0, 0] == 20 and b[0, 0, 0] == 120


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        find_pairs(tmp_path / "nope")
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        find_pairs(tmp_path, "train")
    _save(tmp_path / "ab" / "A" / "1.png", _img(0))
    _save(tmp_path / "ab" / "B" / "2.png", _img(0))
    with pytest.raises(DatasetError, match="share stems"):
        find_pairs(tmp_path / "ab")
    _save(tmp_path / "sz" / "A" / "1.png", _img(0, 8))
    _save(tmp_path / "sz" / "B" / "1.png", _img(0, 16))
    with pytest.raises(DatasetError, match="must match"):
        read_pair(find_pairs(tmp_path / "sz")[0])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "1.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="cannot read"):
        read_pair(find_pairs(tmp_path / "bad")[0])


# ---- augmentation -------------------------------------------------------------------------------
def _coords_pair(tmp_path: Path, size: int = 40) -> PairRef:
    """A = a unique code per pixel; B = the same code plus a constant: any geometric mismatch shows."""
    yy, xx = np.mgrid[0:size, 0:size]
    a = np.stack([yy * 5, xx * 5, np.zeros_like(yy)], -1).astype(np.uint8)
    b = a.copy()
    b[..., 2] = 200
    _save(tmp_path / "A" / "p.png", a)
    _save(tmp_path / "B" / "p.png", b)
    return find_pairs(tmp_path)[0]


def test_augmentation_is_a_function_of_seed_epoch_index(tmp_path: Path) -> None:
    ref = _coords_pair(tmp_path)
    make = lambda seed: PairDataset([ref] * 4, load_size=40, crop_size=32, rotate=True, seed=seed)  # noqa: E731
    d1, d2 = make(7), make(7)
    d1.set_epoch(3), d2.set_epoch(3)
    for i in range(4):
        assert torch.equal(d1[i]["a"], d2[i]["a"]) and torch.equal(d1[i]["b"], d2[i]["b"])
    first = torch.stack([d1[i]["a"] for i in range(4)])
    assert torch.equal(first, torch.stack([d1[i]["a"] for i in range(4)]))  # no hidden state
    seen = {d1[i]["a"].numpy().tobytes() for i in range(4)}
    for epoch in range(4, 12):
        d1.set_epoch(epoch)
        seen |= {d1[i]["a"].numpy().tobytes() for i in range(4)}
    assert len(seen) > 8  # crops, flips and rotations really vary


def test_flips_and_rotations_apply_to_a_and_b_alike(tmp_path: Path) -> None:
    ref = _coords_pair(tmp_path)
    ds = PairDataset([ref], load_size=40, crop_size=32, rotate=True, seed=1)
    kinds = set()
    for epoch in range(80):
        ds.set_epoch(epoch)
        item = ds[0]
        a, b = item["a"], item["b"]
        assert torch.equal(a[:2], b[:2])  # same geometry on both sides
        assert torch.allclose(b[2], torch.full_like(b[2], 200 / 127.5 - 1))
        rows, cols = a[0], a[1]  # source row and column of each output pixel
        if bool(rows[0, 1] != rows[0, 0]):  # transposed: source rows run along output columns
            kinds.add((bool(rows[0, 1] > rows[0, 0]), bool(cols[1, 0] > cols[0, 0]), True))
        else:
            kinds.add((bool(rows[1, 0] > rows[0, 0]), bool(cols[0, 1] > cols[0, 0]), False))
    assert len(kinds) == 8  # all eight dihedral transforms turn up


def test_eval_dataset_is_centre_crop_without_flips(tmp_path: Path) -> None:
    ref = _coords_pair(tmp_path)
    ds = PairDataset([ref], load_size=40, crop_size=32, train=False)
    ds.set_epoch(5)
    a = ((ds[0]["a"] + 1) * 127.5).round()
    assert a[0, 0, 0] == 4 * 5 and a[1, 0, 0] == 4 * 5  # offset (40 - 32) / 2 = 4 in both axes


def test_palette_labels(tmp_path: Path) -> None:
    ref = _coords_pair(tmp_path, size=8)
    palette = [(0, 0, 200), (35, 35, 200)]
    item = PairDataset([ref], load_size=8, crop_size=8, flip=False, palette=palette)[0]
    assert item["label"].shape == (8, 8) and item["label"].dtype == torch.int64
    assert item["label"][0, 0] == 0 and item["label"][7, 7] == 1
    assert item["label"][2, 2] == 0 and item["label"][5, 5] == 1  # (10, 10, 200) vs (25, 25, 200)


def test_crop_larger_than_load_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError):
        PairDataset([_coords_pair(tmp_path)], load_size=32, crop_size=64)
    with pytest.raises(DatasetError, match="load-size-max"):
        PairDataset([_coords_pair(tmp_path)], load_size=40, crop_size=32, load_size_max=36)
    with pytest.raises(DatasetError, match="colour-jitter"):
        PairDataset([_coords_pair(tmp_path)], load_size=40, crop_size=32, colour_jitter=1.5)


def test_scale_jitter_keeps_a_and_b_aligned_and_varies_the_scale(tmp_path: Path) -> None:
    """Each sample's crop covers a different ground extent, identical on both sides."""
    yy, xx = np.mgrid[0:200, 0:200]
    a = np.stack([yy, xx, np.zeros_like(yy)], -1).astype(np.uint8)
    _save(tmp_path / "A" / "p.png", a)
    _save(tmp_path / "B" / "p.png", a)
    ds = PairDataset(find_pairs(tmp_path) * 2, load_size=40, crop_size=32, load_size_max=160, flip=False, seed=3)
    extents = set()
    for epoch in range(20):
        ds.set_epoch(epoch)
        item = ds[epoch % 2]
        assert item["a"].shape == item["b"].shape == (3, 32, 32)
        torch.testing.assert_close(item["a"], item["b"])
        rows = (item["a"][0] + 1) * 127.5
        extents.add(round(float(rows[-1, 0] - rows[0, 0]) / 10))
        ds2 = PairDataset(find_pairs(tmp_path) * 2, load_size=40, crop_size=32, load_size_max=160, flip=False, seed=3)
        ds2.set_epoch(epoch)
        assert torch.equal(ds2[epoch % 2]["a"], item["a"])  # deterministic
    assert len(extents) >= 4  # from ~40 px (load 160) to ~160 px (load 40) of source rows


def test_colour_jitter_changes_the_photo_only(tmp_path: Path) -> None:
    ref = _coords_pair(tmp_path)
    plain = PairDataset([ref], load_size=40, crop_size=32, seed=2)
    jittered = PairDataset([ref], load_size=40, crop_size=32, seed=2, colour_jitter=0.3)
    for epoch in range(5):
        plain.set_epoch(epoch), jittered.set_epoch(epoch)
        assert torch.equal(plain[0]["b"], jittered[0]["b"])  # the map keeps its exact colours
        assert not torch.equal(plain[0]["a"], jittered[0]["a"])
    again = PairDataset([ref], load_size=40, crop_size=32, seed=2, colour_jitter=0.3)
    again.set_epoch(4)
    assert torch.equal(again[0]["a"], jittered[0]["a"])  # deterministic: a fresh dataset, same seed and epoch
    assert torch.equal(
        PairDataset([ref], load_size=40, crop_size=32, train=False, colour_jitter=0.3)[0]["a"],
        PairDataset([ref], load_size=40, crop_size=32, train=False)[0]["a"],
    )  # never at eval


def test_sharpness_jitter_changes_the_photo_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)  # texture: blurring or sharpening a linear ramp changes nothing
    _save(tmp_path / "A" / "p.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    _save(tmp_path / "B" / "p.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    ref = find_pairs(tmp_path)[0]
    plain = PairDataset([ref], load_size=40, crop_size=32, seed=2, colour_jitter=0.3)
    sharp = PairDataset([ref], load_size=40, crop_size=32, seed=2, colour_jitter=0.3, sharpness_jitter=0.5)
    changed = 0
    for epoch in range(6):
        plain.set_epoch(epoch), sharp.set_epoch(epoch)
        assert torch.equal(plain[0]["b"], sharp[0]["b"])  # the map keeps its exact colours
        changed += not torch.equal(plain[0]["a"], sharp[0]["a"])  # same crop, colours; other sharpness
        again = PairDataset([ref], load_size=40, crop_size=32, seed=2, colour_jitter=0.3, sharpness_jitter=0.5)
        again.set_epoch(epoch)
        assert torch.equal(again[0]["a"], sharp[0]["a"])  # deterministic: a fresh dataset, same seed and epoch
    assert changed >= 5
    with pytest.raises(DatasetError, match="--sharpness-jitter"):
        PairDataset([ref], load_size=40, crop_size=32, sharpness_jitter=1.5)
    assert torch.equal(
        PairDataset([ref], load_size=40, crop_size=32, train=False, sharpness_jitter=0.5)[0]["a"],
        PairDataset([ref], load_size=40, crop_size=32, train=False)[0]["a"],
    )  # never at eval


# ---- cutting pairs from rasters -----------------------------------------------------------------
@pytest.fixture(scope="module")
def rasters(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An aerial (UTM, 2 m, nodata top-left quarter) and a "map" of the same ground in Web Mercator.

    The map is the aerial's own pixels reprojected with nearest resampling, over a wider
    area, so an aligned pair has A ≈ B and any misregistration shows as a large difference.
    """
    tmp = tmp_path_factory.mktemp("cut")
    big = synthetic_aerial(tmp / "big.tif", 640, res=2.0, origin=(500000 - 128, 5300000 + 128), seed=3)
    with rasterio.open(big) as ds:
        arr, crs, transform, bounds = ds.read(), ds.crs, ds.transform, ds.bounds
    src = arr[:, 64:576, 64:576].copy()
    src[:, :256, :256] = 0
    profile = {"driver": "GTiff", "width": 512, "height": 512, "count": 3, "dtype": "uint8", "crs": crs}
    with rasterio.open(
        tmp / "aerial.tif", "w", **profile, transform=from_origin(500000, 5300000, 2, 2), nodata=0
    ) as ds:
        ds.write(src)
    t, w, h = calculate_default_transform(crs, "EPSG:3857", 640, 640, *bounds, resolution=3.0)
    dst = np.zeros((3, h, w), np.uint8)
    reproject(arr, dst, src_transform=transform, src_crs=crs, dst_transform=t, dst_crs="EPSG:3857",
              resampling=Resampling.nearest, dst_nodata=0)  # fmt: skip
    profile |= {"width": w, "height": h, "crs": "EPSG:3857", "transform": t, "nodata": 0}
    with rasterio.open(tmp / "map.tif", "w", **profile) as ds:
        ds.write(dst)
    return tmp / "aerial.tif", tmp / "map.tif"


def _pairs(out: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    names = sorted(p.name for p in (out / "A").iterdir())
    assert names == sorted(p.name for p in (out / "B").iterdir())
    return [
        (n, np.asarray(Image.open(out / "A" / n)).astype(int), np.asarray(Image.open(out / "B" / n)).astype(int))
        for n in names
    ]


def test_make_pairs_aligns_and_skips_nodata(rasters: tuple[Path, Path], tmp_path: Path) -> None:
    aerial, mapped = rasters
    assert make_pairs(source=aerial, target=mapped, out_dir=tmp_path) == 3
    pairs = _pairs(tmp_path)
    assert [n for n, _, _ in pairs] == [
        "aerial_000000_000256.png",
        "aerial_000256_000000.png",
        "aerial_000256_000256.png",
    ]
    with rasterio.open(aerial) as ds:
        np.testing.assert_array_equal(pairs[0][1], ds.read(window=((0, 256), (256, 512))).transpose(1, 2, 0))
    for _, a, b in pairs:
        assert a.shape == b.shape == (256, 256, 3)
        aligned = np.abs(a - b).mean()
        shifted = min(np.abs(a[4:-4, 4:-4] - np.roll(b, s, ax)[4:-4, 4:-4]).mean() for s in (-2, 2) for ax in (0, 1))
        assert aligned < 1.0 and shifted > 5 * aligned
    assert len(find_pairs(tmp_path)) == 3  # the output is a training layout


def test_make_pairs_resamples_and_strides(rasters: tuple[Path, Path], tmp_path: Path) -> None:
    aerial, mapped = rasters
    assert make_pairs(source=aerial, target=mapped, out_dir=tmp_path, tile=128, stride=128, resolution_m=4.0) == 3
    assert all(a.shape == (128, 128, 3) for _, a, _ in _pairs(tmp_path))
    # Overlapping tiles: stride 128 over 512 px gives 3 × 3 positions, of which 4 touch the nodata corner.
    assert make_pairs(source=aerial, target=mapped, out_dir=tmp_path / "overlap", tile=256, stride=128) == 5


def test_make_pairs_takes_a_config_as_its_keywords_build(rasters: tuple[Path, Path], tmp_path: Path) -> None:
    aerial, mapped = rasters
    config = CutConfig(aerial, mapped, tmp_path / "config", tile=128, stride=256)
    assert make_pairs(config) == make_pairs(source=aerial, target=mapped, out_dir=tmp_path / "kw", tile=128, stride=256)
    assert [(n, a.tolist(), b.tolist()) for n, a, b in _pairs(tmp_path / "config")] == [
        (n, a.tolist(), b.tolist()) for n, a, b in _pairs(tmp_path / "kw")
    ]


def test_make_pairs_skips_tiles_outside_the_map(rasters: tuple[Path, Path], tmp_path: Path) -> None:
    aerial, mapped = rasters
    with rasterio.open(mapped) as ds:
        profile, data = ds.profile, ds.read()
    # Keep only the map's western half: the eastern aerial tiles are no longer covered.
    w = int(data.shape[2] * 0.6)
    profile |= {"width": w}
    with rasterio.open(tmp_path / "west.tif", "w", **profile) as ds:
        ds.write(data[:, :, :w])
    n = make_pairs(source=aerial, target=tmp_path / "west.tif", out_dir=tmp_path / "out")
    assert n == 1 and [name for name, _, _ in _pairs(tmp_path / "out")] == ["aerial_000256_000000.png"]


def test_make_pairs_errors(rasters: tuple[Path, Path], tmp_path: Path) -> None:
    aerial, mapped = rasters
    elsewhere = synthetic_aerial(tmp_path / "far.tif", 64, origin=(300000.0, 4000000.0))
    with pytest.raises(DatasetError, match="does not overlap"):
        make_pairs(source=aerial, target=elsewhere, out_dir=tmp_path / "o")
    with pytest.raises(DatasetError, match="smaller than"):
        make_pairs(source=aerial, target=mapped, out_dir=tmp_path / "o", tile=1024)
    with pytest.raises(TilingError):
        make_pairs(source=aerial, target=mapped, out_dir=tmp_path / "o", stride=0)
    nocrs = synthetic_aerial(tmp_path / "nocrs.tif", 64, crs=None)
    with pytest.raises(MissingCRSError):
        make_pairs(source=aerial, target=nocrs, out_dir=tmp_path / "o")
    with pytest.raises(DatasetError, match="nodata"):  # one tile, a nodata corner
        make_pairs(source=aerial, target=mapped, out_dir=tmp_path / "o", tile=256, resolution_m=4.0)
    assert not (tmp_path / "o").exists()


def test_cli_dataset_make(rasters: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    aerial, mapped = rasters
    args = ["dataset", "make", "--source", str(aerial), "--target", str(mapped), str(tmp_path / "ds"), "--tile", "256"]
    assert main(args) == 0
    assert "3 pairs" in capsys.readouterr().out
    assert len(list((tmp_path / "ds" / "B").glob("*.png"))) == 3
    assert main([*args[:-2], "--tile", "4096"]) == DatasetError.exit_code
