"""``geopix train`` end to end for both presets: files written, checkpoint metadata, resume, errors."""

from __future__ import annotations

import csv
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geopix.cli import main
from geopix.errors import DatasetError, OptionError, OutputExistsError, ResumeError
from geopix.models.registry import load_model
from geopix.testing import synthetic_maps_dataset

#: Colours the synthetic maps are drawn in: background, buildings, roads, vegetation, water.
SCENE_COLOURS = np.array([(232, 229, 222), (242, 240, 234), (255, 255, 255), (202, 223, 170), (176, 207, 254)])
TINY = ["--ngf", "4", "--ndf", "4", "--batch-size", "2", "--threads", "1", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_maps_dataset(tmp_path_factory.mktemp("maps"), n_train=4, n_val=1, size=256)


def _run(data: Path, run: Path, *extra: str) -> int:
    return main(["train", str(data), "--run-dir", str(run), *TINY, *extra])


def test_pix2pix_preset(data: Path, tmp_path: Path, capsys) -> None:
    assert _run(data, tmp_path, "--epochs", "1", "--epochs-decay", "1") == 0
    assert f"generator checkpoint: {tmp_path / 'generator.safetensors'}" in capsys.readouterr().out
    for name in ("generator.safetensors", "state.pt", "log.csv", "samples_epoch001.png", "samples_epoch002.png"):
        assert (tmp_path / name).exists(), name
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(float(r["D"]) > 0 and float(r["G_gan"]) > 0 and float(r["G_l1"]) > 0 for r in rows)
    assert float(rows[-1]["lr"]) == 0.0  # linear decay reaches zero at the last epoch
    with Image.open(tmp_path / "samples_epoch002.png") as im:
        assert im.size == (3 * 256, 4 * 256)  # input | output | target for 4 images
    model = load_model(tmp_path / "generator.safetensors")
    spec = model.spec
    assert (spec.head, spec.direction, spec.ngf, spec.palette, spec.use_dropout) == ("tanh", "AtoB", 4, (), True)
    # 256 px stored at 1 m/px, resized to the recipe's 286 px load size.
    assert spec.ground_resolution_m == pytest.approx(256 / 286)
    training = json.loads(spec.training)
    assert training["epochs"] == 2 and training["config"]["gan_mode"] == "vanilla"
    out = model.net(torch.zeros(1, 3, 256, 256))
    assert out.shape == (1, 3, 256, 256)


def test_palette_preset(data: Path, tmp_path: Path) -> None:
    code = _run(
        data, tmp_path, "--preset", "palette", "--palette-size", "4", "--epochs", "1", "--epochs-decay", "0",
        "--direction", "AtoB", "--source-resolution", "0.5", "--load-size", "256",
    )  # fmt: skip
    assert code == 0
    assert (tmp_path / "samples_epoch001.png").exists()
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert rows[0]["D"] == rows[0]["G_gan"] == "" and float(rows[0]["G_ce"]) > 0  # no GAN in this recipe
    assert not any(k.startswith("D") for k in torch.load(tmp_path / "state.pt", weights_only=True))
    spec = load_model(tmp_path / "generator.safetensors").spec
    assert spec.head == "palette" and spec.output_nc == 4 and spec.use_dropout is False
    assert spec.ground_resolution_m == pytest.approx(0.5)
    assert len(spec.palette) == 4 and len(set(spec.palette)) == 4
    dist = np.linalg.norm(np.array(spec.palette)[:, None] - SCENE_COLOURS[None], axis=-1).min(1)
    assert (dist < 25).all(), spec.palette  # k-means found the map's own flat colours
    assert json.loads(spec.training)["config"]["batch_size"] == 2  # the option overrides the preset


def test_btoa_direction_is_recorded(data: Path, tmp_path: Path) -> None:
    args = ["--preset", "palette", "--palette-size", "3", "--epochs", "1", "--epochs-decay", "0", "--direction", "BtoA"]
    assert _run(data, tmp_path, *args) == 0
    spec = load_model(tmp_path / "generator.safetensors").spec
    assert spec.direction == "BtoA" and len(spec.palette) == 3
    # Targets are now aerial photos: no palette colour is the maps' white.
    assert all(c != (255, 255, 255) for c in spec.palette)


def test_resume_via_cli(data: Path, tmp_path: Path) -> None:
    assert _run(data, tmp_path, "--preset", "palette", "--epochs", "1", "--epochs-decay", "0") == 0
    first = load_model(tmp_path / "generator.safetensors")
    assert _run(data, tmp_path, "--preset", "palette", "--epochs", "2", "--epochs-decay", "0", "--resume") == 0
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    second = load_model(tmp_path / "generator.safetensors")
    assert json.loads(second.spec.training)["epochs"] == 2
    assert any(not torch.equal(a, b) for a, b in zip(first.net.parameters(), second.net.parameters(), strict=True))
    # Changing the architecture under --resume is refused with the resume exit code.
    code = _run(data, tmp_path, "--preset", "palette", "--ngf", "8", "--epochs", "3", "--resume")
    assert code == ResumeError.exit_code


def test_bad_options(data: Path, tmp_path: Path, capsys) -> None:
    """Each refused before anything is written, with the option error's own exit code."""
    for option, needle in [
        (["--preset", "nope"], "--preset 'nope' is unknown; choose one of pix2pix, palette"),
        (["--direction", "sideways"], "--direction 'sideways' must be one of AtoB, BtoA"),
        (["--norm", "group"], "--norm 'group' must be one of batch, instance, none"),
        (["--head", "sigmoid"], "--head 'sigmoid' must be one of tanh, palette"),
        (["--gan-mode", "wgan"], "--gan-mode 'wgan' must be one of vanilla, lsgan, none"),
        (["--crop-size", "200"], "--crop-size 200 must be a multiple of 256"),
        (["--lr", "nan"], "--lr must be a number"),
    ]:
        assert _run(data, tmp_path / "r", *option) == OptionError.exit_code, option
        assert needle in capsys.readouterr().err, option
        assert not (tmp_path / "r").exists()
    assert main(["train", str(tmp_path / "missing"), "--run-dir", str(tmp_path / "r"), *TINY]) == DatasetError.exit_code


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_existing_run_is_refused_and_left_untouched(data: Path, tmp_path: Path) -> None:
    fast = ["--preset", "palette", "--palette-size", "3", "--epochs-decay", "0"]
    umask = os.umask(0o022)
    try:
        assert _run(data, tmp_path, *fast, "--epochs", "2") == 0
    finally:
        os.umask(umask)
    for name in ("state.pt", "generator.safetensors", "log.csv"):  # cluster workers of another user read them
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    (tmp_path / "notes.txt").write_text("mine")  # not the run's: --overwrite must keep it
    before = _snapshot(tmp_path)
    assert _run(data, tmp_path, *fast, "--epochs", "1") == OutputExistsError.exit_code
    assert _snapshot(tmp_path) == before  # state.pt, log.csv, samples: byte for byte
    assert _run(data, tmp_path, *fast, "--epochs", "1", "--resume", "--overwrite") == OptionError.exit_code
    # --overwrite replaces the run: a fresh log and samples, nothing stale, the user's file kept
    assert _run(data, tmp_path, *fast, "--epochs", "1", "--overwrite") == 0
    assert [r["epoch"] for r in csv.DictReader((tmp_path / "log.csv").open())] == ["1"]
    assert not (tmp_path / "samples_epoch002.png").exists() and (tmp_path / "notes.txt").read_text() == "mine"
    assert json.loads(load_model(tmp_path / "generator.safetensors").spec.training)["epochs"] == 1


def test_export_refuses_to_overwrite(data: Path, tmp_path: Path) -> None:
    assert _run(data, tmp_path / "run", "--preset", "palette", "--epochs", "1", "--epochs-decay", "0") == 0
    src, dst = tmp_path / "run" / "generator.safetensors", tmp_path / "shipped.safetensors"
    assert main(["export", str(src), str(dst), "--palette-sharpness", "2"]) == 0  # an older export
    older = dst.read_bytes()
    assert main(["export", str(src), str(dst)]) == OutputExistsError.exit_code
    assert dst.read_bytes() == older
    assert main(["export", str(src), str(dst), "--palette-sharpness", "8", "--overwrite"]) == 0
    assert load_model(dst).spec.palette_sharpness == 8


def test_the_command_is_recorded_in_the_checkpoint(data: Path, tmp_path: Path) -> None:
    assert _run(data, tmp_path, "--preset", "palette", "--epochs", "1", "--epochs-decay", "0") == 0
    training = json.loads(load_model(tmp_path / "generator.safetensors").spec.training)
    assert training["command"].startswith(f"geopix train {data} --run-dir {tmp_path} --preset palette ")
    assert "--epochs 1 --epochs-decay 0" in training["command"] and "--no-progress" in training["command"]


def test_replay_reaches_the_training(data: Path, tmp_path: Path) -> None:
    """``--replay``/``--replay-ratio`` were once parsed and then dropped on the way to the config
    (a fine-tune silently ran without the maps): every epoch must hold the replayed samples."""
    one = ["--preset", "palette", "--epochs", "1", "--epochs-decay", "0", "--batch-size", "4"]
    # 4 pairs give one batch of 4; with 4 more replayed (ratio 0.5) the epoch has two.
    assert _run(data, tmp_path / "mixed", *one, "--replay", str(data), "--replay-ratio", "0.5") == 0
    config = json.loads(load_model(tmp_path / "mixed" / "generator.safetensors").spec.training)["config"]
    assert (config["replay"], config["replay_ratio"]) == (str(data), 0.5)
    assert main(["train", str(data), "--run-dir", str(tmp_path / "bad"), *TINY, "--replay-ratio", "1"]) == (
        OptionError.exit_code
    )


def test_export_takes_a_registry_name(tmp_path: Path) -> None:
    dst = tmp_path / "sat2map_0.9.safetensors"
    assert main(["export", "sat2map", str(dst), "--ground-resolution", "0.9"]) == 0
    shipped, exported = load_model("sat2map"), load_model(dst)
    assert exported.spec.ground_resolution_m == 0.9
    assert exported.spec.palette == shipped.spec.palette
    assert main(["export", "no-such-model", str(tmp_path / "x.safetensors")]) != 0
    assert not (tmp_path / "x.safetensors").exists()
