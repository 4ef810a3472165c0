"""Evaluation: metric functions against hand-computed values, the protocol, the report and ``geopix eval``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geopix.cli import main
from geopix.config import EvalConfig
from geopix.errors import DatasetError, GeopixError, OptionError
from geopix.evaluate import (
    MetricAccumulator,
    class_masks,
    evaluate,
    l1,
    pixel_accuracy,
    psnr,
    resize_eval,
    rmse,
    ssim,
)
from geopix.models.registry import load_model
from geopix.testing import random_checkpoint, synthetic_maps_dataset

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BEIGE, ROAD, PARK, WATER = (232, 229, 222), (255, 255, 255), (202, 223, 170), (176, 207, 254)
KEYS = {"acc_5", "acc_10", "rmse", "l1", "psnr", "ssim", "iou_road", "iou_park", "iou_water", "miou"}


def _map(h: int = 8, w: int = 8) -> np.ndarray:
    """A tiny map: beige, a road row, a park block and a water block."""
    img = np.empty((h, w, 3), np.uint8)
    img[...] = BEIGE
    img[0] = ROAD
    img[2:4, 0:4] = PARK
    img[5:8, 4:8] = WATER
    return img


@pytest.fixture(scope="module")
def maps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_maps_dataset(tmp_path_factory.mktemp("maps"), n_train=1, n_val=3, size=256)


@pytest.fixture(scope="module")
def palette_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("ckpt") / "pal.safetensors", ngf=4, head="palette")


# ---- metric functions ---------------------------------------------------------------------------
def test_identical_images_score_perfectly() -> None:
    img = _map()
    assert pixel_accuracy(img, img, 5) == 1.0
    assert rmse(img, img) == 0.0 and l1(img, img) == 0.0
    assert psnr(img, img) == math.inf
    assert ssim(np.tile(img, (4, 4, 1)), np.tile(img, (4, 4, 1))) == pytest.approx(1.0)
    acc = MetricAccumulator()
    acc.add(img, img)
    res = acc.result()
    assert res["iou_road"] == res["iou_park"] == res["iou_water"] == res["miou"] == 1.0


def test_shifted_image_has_known_errors() -> None:
    real = np.full((4, 4, 3), 100, np.uint8)
    fake = real.copy()
    fake[..., 0] += 10  # red off by 10 everywhere: Σ diff² = 16 px * 100, over 16 px → 100
    assert rmse(real, fake) == pytest.approx(10.0)
    assert l1(real, fake) == pytest.approx(10 / 3)
    assert psnr(real, fake) == pytest.approx(10 * math.log10(255**2 / (100 / 3)))
    assert pixel_accuracy(real, fake, 10) == 0.0  # |diff| = 10 is not < 10
    assert pixel_accuracy(real, fake, 11) == 1.0
    fake[..., 1] += 10  # now two channels off by 10: Σ diff² / px = 200
    assert rmse(real, fake) == pytest.approx(math.sqrt(200))
    half = real.copy()
    half[:2] = 0  # half the pixels off by 100 in all channels
    assert pixel_accuracy(real, half, 5) == 0.5
    assert rmse(real, half) == pytest.approx(math.sqrt(8 * 3 * 100**2 / 16))


def test_ssim_drops_for_different_structure() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert ssim(a, b) < 0.2
    assert ssim(a, a) == pytest.approx(1.0)


def test_classes_are_the_nearest_style_colour() -> None:
    building, highway = (242, 240, 234), (247, 158, 38)
    m = class_masks(np.array([[ROAD, PARK, WATER, BEIGE, (250, 250, 249), building, highway]], np.uint8))
    assert m["road"].tolist() == [[True, False, False, False, True, False, True]]
    assert m["park"].tolist() == [[False, True, False, False, False, False, False]]
    assert m["water"].tolist() == [[False, False, True, False, False, False, False]]


def test_iou_sums_over_the_split_and_skips_absent_classes() -> None:
    real = np.full((2, 4, 3), BEIGE, np.uint8)
    real[0] = ROAD  # 4 road pixels
    fake = np.full_like(real, BEIGE)
    fake[0, :2] = ROAD  # 2 of them found
    acc = MetricAccumulator()
    acc.add(real, fake)
    acc.add(real, real)  # split-wide: I = 2 + 4, U = 4 + 4
    res = acc.result()
    assert res["iou_road"] == pytest.approx(6 / 8)
    assert math.isnan(res["iou_park"]) and math.isnan(res["iou_water"])
    assert res["miou"] == pytest.approx(6 / 8)
    assert res["acc_5"] == pytest.approx((6 / 8 + 1) / 2)


def test_empty_accumulator_is_an_error() -> None:
    with pytest.raises(DatasetError):
        MetricAccumulator().result()


def test_resize_is_bilinear_to_256() -> None:
    img = np.zeros((600, 600, 3), np.uint8)
    img[:, 300:] = 200
    out = resize_eval(img)
    assert out.shape == (256, 256, 3)
    expect = np.asarray(Image.fromarray(img).resize((256, 256), Image.BILINEAR))
    np.testing.assert_array_equal(out, expect)


# ---- the protocol -------------------------------------------------------------------------------
def test_evaluate_writes_report_and_samples(maps: Path, palette_ckpt: Path, tmp_path: Path) -> None:
    report = evaluate(model=palette_ckpt, data=maps, out_dir=tmp_path, device="cpu", batch_size=2)
    assert report.n_images == 3 and report.split == "val" and report.direction == "AtoB"
    # 256 px stored at 1 m/px, model trained at 2 m/px → the model sees 128 px.
    assert report.input_size == 128
    assert set(report.metrics) == KEYS == set(report.baseline)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["metrics"]["rmse"] == pytest.approx(report.metrics["rmse"])
    assert saved["baseline_color"] == [232, 229, 222]
    with Image.open(tmp_path / "samples.png") as im:
        assert im.size == (3 * 256, 3 * 256)  # input | output | target, one row per image


def test_baseline_is_scored_with_the_same_protocol(maps: Path, palette_ckpt: Path) -> None:
    from geopix.data.pairs import find_pairs, read_pair

    report = evaluate(model=palette_ckpt, data=maps, device="cpu", baseline_color=(10, 20, 30), limit=2)
    acc = MetricAccumulator()
    for ref in find_pairs(maps, "val")[:2]:
        _, b = read_pair(ref)
        acc.add(resize_eval(b), np.full((256, 256, 3), (10, 20, 30), np.uint8))
    assert report.baseline == pytest.approx(acc.result(), nan_ok=True)
    assert report.n_images == 2


def test_batching_does_not_change_eval_mode_scores(maps: Path, palette_ckpt: Path) -> None:
    one = evaluate(model=palette_ckpt, data=maps, device="cpu", batch_size=1)
    three = evaluate(model=palette_ckpt, data=maps, device="cpu", batch_size=3)
    assert one.metrics == pytest.approx(three.metrics, nan_ok=True)


def test_train_mode_batchnorm_differs_and_leaves_model_intact(maps: Path, tmp_path: Path) -> None:
    ckpt = random_checkpoint(tmp_path / "t.safetensors", ngf=4)
    model = load_model(ckpt)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    ev = evaluate(loaded=model, data=maps, device="cpu")
    tr = evaluate(loaded=model, data=maps, device="cpu", bn_mode="train")
    assert tr.bn_mode == "train" and ev.metrics["l1"] != tr.metrics["l1"]
    for k, v in model.net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not model.net.training


def test_model_resolution_sets_the_input_size(maps: Path, tmp_path: Path) -> None:
    ckpt = random_checkpoint(tmp_path / "r.safetensors", ngf=4, ground_resolution_m=0.5)
    report = evaluate(model=ckpt, data=maps, device="cpu", limit=1)
    assert report.input_size == 512  # 256 px at 1 m → 512 px at 0.5 m/px
    report = evaluate(model=ckpt, data=maps, device="cpu", limit=1, source_resolution_m=0.25)
    assert report.input_size == 128


def test_a_config_is_the_call_its_keywords_make(maps: Path, palette_ckpt: Path) -> None:
    by_keywords = evaluate(model=palette_ckpt, data=maps, device="cpu", limit=2, batch_size=2)
    by_config = evaluate(EvalConfig(palette_ckpt, maps, device="cpu", limit=2, batch_size=2))
    assert by_config.metrics == pytest.approx(by_keywords.metrics, nan_ok=True)
    assert (by_config.n_images, by_config.input_size) == (by_keywords.n_images, by_keywords.input_size) == (2, 128)


def test_bad_arguments_raise(maps: Path, palette_ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(GeopixError, match="bn-mode"):
        evaluate(model=palette_ckpt, data=maps, bn_mode="both")
    with pytest.raises(DatasetError):
        evaluate(model=palette_ckpt, data=tmp_path / "missing")
    with pytest.raises(GeopixError, match="baseline"):
        evaluate(model=palette_ckpt, data=maps, baseline_color=(0, 0, 300))


# ---- the CLI --------------------------------------------------------------------------------------
def test_cli_eval_writes_report(maps: Path, palette_ckpt: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ev"
    code = main(["eval", str(palette_ckpt), str(maps), "--limit", "2", "--out", str(out), "--device", "cpu"])
    assert code == 0
    text = capsys.readouterr().out
    assert "rmse" in text and str(out / "report.json") in text
    report = json.loads((out / "report.json").read_text())
    assert report["n_images"] == 2 and set(report["metrics"]) == KEYS


def test_cli_eval_defaults_next_to_the_checkpoint(maps: Path, tmp_path: Path) -> None:
    ckpt = random_checkpoint(tmp_path / "run" / "generator.safetensors", ngf=4)
    assert main(["eval", str(ckpt), str(maps), "--limit", "1", "--bn-mode", "train", "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "run" / "eval-val" / "report.json").read_text())["bn_mode"] == "train"


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        (["--baseline-color", "1,2"], "--baseline-color '1,2' must be R,G,B"),
        (["--bn-mode", "frozen"], "--bn-mode 'frozen' must be one of eval, train"),
        (["--direction", "sideways"], "--direction 'sideways' must be one of AtoB, BtoA"),
        (["--batch-size", "0"], "--batch-size 0 must be at least 1"),
        (["--limit", "0"], "--limit 0 must be at least 1"),
    ],
)
def test_cli_eval_option_errors(maps: Path, palette_ckpt: Path, tmp_path: Path, capsys, option, needle) -> None:
    out = tmp_path / "o"
    assert main(["eval", str(palette_ckpt), str(maps), "-o", str(out), *option]) == OptionError.exit_code
    assert needle in capsys.readouterr().err and not out.exists()


# ---- the real data --------------------------------------------------------------------------------
@pytest.mark.slow
def test_random_checkpoint_on_real_maps(tmp_path: Path) -> None:
    val = SHARED / "data" / "maps" / "val"
    if not val.is_dir():
        pytest.skip(f"{val} is absent (the shared data is only on the developers' machines)")
    ckpt = random_checkpoint(tmp_path / "r.safetensors", ngf=4, head="palette", ground_resolution_m=0.9 * 600 / 286)
    report = evaluate(model=ckpt, data=SHARED / "data" / "maps", limit=3, device="cpu", out_dir=tmp_path / "out")
    # the maps layout is known to be 0.9 m/px: no --source-resolution needed for the 286-px scale
    assert report.n_images == 3 and report.input_size == 286 and report.source_resolution_m == 0.9
    assert set(report.metrics) == KEYS == set(report.baseline)
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert 0.0 <= saved["metrics"]["acc_10"] <= 1.0 and saved["metrics"]["rmse"] > 0
    # The real maps are mostly beige: the constant baseline gets a sizeable share right.
    assert saved["baseline"]["acc_10"] > 0.2


def test_default_eval_folder_is_the_documented_one(palette_ckpt: Path) -> None:
    """docs/training.md: eval-SPLIT/ beside a checkpoint file, runs/eval/NAME-SPLIT/ for a registry name."""
    from geopix.cli.evaluate import _default_out

    assert _default_out(str(palette_ckpt), "val") == palette_ckpt.parent / "eval-val"
    assert _default_out("sat2map", "train") == Path("runs/eval/sat2map-train")
    doc = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    assert "`eval-SPLIT/` next to a checkpoint file" in doc and "`runs/eval/NAME-SPLIT/`" in doc
