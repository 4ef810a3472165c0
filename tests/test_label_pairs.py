"""Class rasters → training pairs: the code table, unknown codes, incomplete labels, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin

from geopix import style
from geopix.cli import main
from geopix.data.label_pairs import CodeTable, make_label_pairs, match_labels
from geopix.data.pairs import find_pairs, read_mask
from geopix.data.rasterize import ALL_CLASSES
from geopix.errors import DatasetError, OutputExistsError
from geopix.testing import random_checkpoint, synthetic_aerial

BIT = {c.name: 1 << c.index for c in style.CLASSES}
ROADS = BIT["minor_road"] | BIT["arterial"] | BIT["highway"]
NOT_BUILDING = ALL_CLASSES & ~BIT["building"]
DUBAI = {"1": "building", "2": "road", "3": "water", "4": ["park", "background"], "5": "background", "255": "unknown"}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A palette checkpoint at 2 m/px: pairs take its ground resolution and colour statistics."""
    return random_checkpoint(tmp_path_factory.mktemp("m") / "g.safetensors", head="palette", ground_resolution_m=2.0)


def quadrants(n: int, codes: tuple[int, int, int, int]) -> np.ndarray:
    """An n×n label whose four quadrants (TL, TR, BL, BR) hold ``codes``."""
    lab = np.empty((n, n), np.uint8)
    h = n // 2
    lab[:h, :h], lab[:h, h:], lab[h:, :h], lab[h:, h:] = codes
    return lab


def write_png(path: Path, arr: np.ndarray) -> Path:
    Image.fromarray(arr).save(path)
    return path


def write_label_tif(path: Path, arr: np.ndarray, crs: str | None = "EPSG:32633", res: float = 2.0) -> Path:
    profile = {"driver": "GTiff", "width": arr.shape[1], "height": arr.shape[0], "count": 1, "dtype": "uint8"}
    if crs:
        profile |= {"crs": crs, "transform": from_origin(500000.0, 5300000.0, res, res)}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr[None])
    return path


def plain_image(path: Path, n: int) -> Path:
    """A photo without georeferencing (as many segmentation sets ship)."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (n, n, 3), dtype=np.uint8)).save(path)
    return path


def test_code_table_maps_codes_to_drawn_class_and_allowed_bits() -> None:
    table = CodeTable.parse(DUBAI)
    top, allowed, mapped = table.luts()
    assert table.covers == frozenset(style.CLASS_NAMES)  # every class named: a complete set
    assert top[1] == style.CLASS_NAMES.index("building") and allowed[1] == BIT["building"]
    assert top[2] == style.CLASS_NAMES.index("minor_road") and allowed[2] == ROADS  # any road class
    assert allowed[3] == BIT["water"]
    assert allowed[4] == BIT["park"] | BIT["background"] and top[4] == style.CLASS_NAMES.index("park")
    assert allowed[5] == BIT["background"]
    assert allowed[255] == 0 and mapped[255]  # unknown: named, ignored by the loss
    assert not mapped[0] and not mapped[6]


def test_a_partial_set_says_not_covered_unless_incomplete() -> None:
    codes = {"0": "background", "1": "building"}
    _, allowed, _ = CodeTable.parse(codes).luts()
    assert allowed[0] == NOT_BUILDING  # a building-only set's 0: anything but a building
    # A road may not cross a building, so a labelled building is a building and nothing else.
    assert allowed[1] == BIT["building"]
    _, allowed, _ = CodeTable.parse(codes, incomplete=True).luts()
    assert allowed[0] == 0 and allowed[1] == BIT["building"]  # incomplete: 0 is unknown


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        ({"x": "building"}, "not a label value"),
        ({"300": "building"}, "outside 0..255"),
        ({"1": "house"}, "'house' is not a style class"),
        ({"1": ["unknown", "building"]}, "not a style class"),
        ({"0": "background", "255": "unknown"}, "names no style class"),
    ],
)
def test_bad_code_tables_name_the_entry(codes: dict, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        CodeTable.parse(codes)


def test_georeferenced_pairs_carry_the_labels_on_the_model_grid(tmp_path: Path, model: Path) -> None:
    # 1 m source, model at 2 m: 512 px → 256 px on the work grid, one tile, labels by majority.
    image = synthetic_aerial(tmp_path / "scene.tif", 512, res=1.0)
    write_label_tif(tmp_path / "scene_label.tif", quadrants(512, (1, 2, 3, 255)), res=1.0)
    (tmp_path / "labels").mkdir()
    (tmp_path / "scene_label.tif").rename(tmp_path / "labels" / "scene.tif")
    out = tmp_path / "pairs"
    result = make_label_pairs(
        images=[image], labels=[tmp_path / "labels"], codes=DUBAI, out_dir=out, model=str(model), stride=256
    )
    assert result.pairs == 1 and result.resolution_m == 2.0
    (ref,) = find_pairs(out)
    m = read_mask(ref)
    assert m.shape == (256, 256)
    assert m[10, 10] == BIT["building"] and m[10, 200] == ROADS and m[200, 10] == BIT["water"] and m[200, 200] == 0
    b = np.asarray(Image.open(ref.b))
    assert tuple(b[10, 10]) == style.BY_NAME["building"].colour and tuple(b[200, 10]) == style.BY_NAME["water"].colour
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["resolution_m"] == 2.0 and manifest["codes"]["4"] == ["park", "background"]
    assert result.known_share == pytest.approx(0.75, abs=0.01)


def test_plain_images_need_and_take_a_source_resolution(tmp_path: Path, model: Path) -> None:
    image = plain_image(tmp_path / "a.png", 400)
    (tmp_path / "labels").mkdir()
    write_png(tmp_path / "labels" / "a.png", quadrants(400, (0, 2, 0, 2)))
    codes = {"0": "background", "2": "road"}
    with pytest.raises(DatasetError, match="--source-resolution"):
        make_label_pairs(
            images=[image], labels=[tmp_path / "labels"], codes=codes, out_dir=tmp_path / "x", model=str(model)
        )
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()
    out = tmp_path / "pairs"
    # 0.5 m/px source at a 2 m model: 400 px → 100 px, one (padded) tile.
    make_label_pairs(
        images=[image],
        labels=[tmp_path / "labels"],
        codes=codes,
        out_dir=out,
        model=str(model),
        source_resolution_m=0.5,
    )
    (ref,) = find_pairs(out)
    m = read_mask(ref)
    assert m[10, 10] == ALL_CLASSES & ~ROADS  # a road-only set's 0: anything but a road
    assert m[10, 90] == ROADS
    assert m[150, 150] == 0  # the padding past the 100 px image is unknown


def test_unknown_codes_sizes_and_crs_are_refused_with_nothing_written(tmp_path: Path, model: Path) -> None:
    image = synthetic_aerial(tmp_path / "scene.tif", 256, res=2.0)
    labels = tmp_path / "labels"
    labels.mkdir()
    out = tmp_path / "pairs"

    def attempt(label: np.ndarray, **kw: object) -> None:
        write_label_tif(labels / "scene.tif", label, **kw)
        make_label_pairs(images=[image], labels=[labels], codes=DUBAI, out_dir=out, model=str(model))

    with pytest.raises(DatasetError, match=r"label value\(s\) 7 .*add them"):
        attempt(quadrants(256, (1, 2, 7, 3)))
    with pytest.raises(DatasetError, match=r"is 128×128 px but .* 256×256"):
        attempt(np.ones((128, 128), np.uint8))
    with pytest.raises(DatasetError, match="EPSG:32634"):
        attempt(np.ones((256, 256), np.uint8), crs="EPSG:32634")
    with pytest.raises(DatasetError, match="not on"):
        attempt(np.ones((256, 256), np.uint8), res=2.5)
    assert not out.exists() and not out.with_name("pairs.partial").exists()


def test_a_second_run_into_the_folder_is_refused_without_overwrite(tmp_path: Path, model: Path) -> None:
    image = synthetic_aerial(tmp_path / "scene.tif", 256, res=2.0)
    (tmp_path / "labels").mkdir()
    write_label_tif(tmp_path / "labels" / "scene.tif", quadrants(256, (1, 5, 5, 5)))
    kw = {"images": [image], "labels": [tmp_path / "labels"], "codes": DUBAI, "out_dir": tmp_path / "p"}
    make_label_pairs(**kw, model=str(model))
    with pytest.raises(OutputExistsError, match="--overwrite"):
        make_label_pairs(**kw, model=str(model))
    assert make_label_pairs(**kw, model=str(model), overwrite=True).pairs == 1


def test_labels_are_matched_by_stem(tmp_path: Path) -> None:
    (tmp_path / "l").mkdir()
    for name in ("b.png", "a.png"):
        (tmp_path / "l" / name).write_bytes(b"")
    pairs = match_labels([tmp_path / "a.tif", tmp_path / "b.tif"], [tmp_path / "l"])
    assert [(i.stem, lab.name) for i, lab in pairs] == [("a", "a.png"), ("b", "b.png")]
    with pytest.raises(DatasetError, match=r"no label for .*c\.tif"):
        match_labels([tmp_path / "c.tif"], [tmp_path / "l"])


def test_cli_dataset_labels_reads_a_code_table_file(
    tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = plain_image(tmp_path / "a.png", 256)
    (tmp_path / "labels").mkdir()
    write_png(tmp_path / "labels" / "a.png", quadrants(256, (0, 1, 1, 0)))
    codes = tmp_path / "codes.json"
    codes.write_text(json.dumps({"codes": {"0": "background", "1": "building"}}))
    out = tmp_path / "pairs"
    args = ["dataset", "labels", str(out), str(image), "--labels", str(tmp_path / "labels"), "--codes", str(codes)]
    args += ["--model", str(model), "--source-resolution", "2.0", "--stride", "256"]
    assert main([*args, "--incomplete"]) == 0
    said = capsys.readouterr().out
    assert "1 pairs at 2.00 m/px" in said and "incomplete" in said
    (ref,) = find_pairs(out)
    assert set(np.unique(read_mask(ref))) == {0, BIT["building"]}  # incomplete: background unknown
    assert main([*args, "--overwrite", "--covers", "house"]) == 17
    assert "house" in capsys.readouterr().err
