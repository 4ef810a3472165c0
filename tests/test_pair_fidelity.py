"""Scores from known masks: what counts as truth, what is unknown, per place, and through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geopix import style
from geopix.cli import main
from geopix.data.rasterize import ALL_CLASSES
from geopix.errors import DatasetError
from geopix.pair_fidelity import PlaceCounts, evaluate_pairs, kind_name, labelled_places
from geopix.testing import random_checkpoint

BIT = {c.name: 1 << c.index for c in style.CLASSES}
IDX = {c.name: c.index for c in style.CLASSES}
ROADS = BIT["minor_road"] | BIT["arterial"] | BIT["highway"]


def test_truth_negatives_and_unknowns_follow_the_allowed_sets() -> None:
    allowed = np.array(
        [
            BIT["building"],  # a building: truth for building
            BIT["building"],
            ALL_CLASSES & ~BIT["building"],  # a building-only set's background: not a building
            ALL_CLASSES & ~ROADS,  # a road-only set's background: building unknown, road negative
            ROADS,  # a road (any road class)
            0,  # unknown
            BIT["park"] | BIT["background"],  # vegetation: park and background both unknown
        ],
        np.uint8,
    )
    drawn = np.array(
        [IDX["building"], IDX["park"], IDX["building"], IDX["building"], IDX["arterial"], IDX["building"], IDX["water"]]
    )
    acc = PlaceCounts()
    acc.add(drawn, allowed)
    tp, fp, fn, known = acc.groups["building"]
    # Known about buildings: the two buildings, both backgrounds that exclude them, the road and the
    # vegetation (neither may be a building); the road-only set's background may be one: unknown.
    assert (tp, fp, fn, known) == (1, 1, 1, 5)
    assert acc.groups["road"] == [1, 0, 0, 5]  # the arterial is a road; the building-only background is unknown
    assert acc.groups["water"][1] == 1  # vegetation may not be water: drawn as water it is a false positive
    scores = acc.scores()
    assert scores["building"]["iou"] == pytest.approx(1 / 3) and "park" not in scores  # no park truth here
    confusion = acc.confusion()
    assert confusion["background|park"] == {"water": 1.0}  # and the confusion table says what it was drawn as
    assert kind_name(BIT["park"] | BIT["background"]) == "background|park"
    assert confusion[kind_name(ROADS)] == {"arterial": 1.0}


@pytest.fixture
def places(tmp_path: Path) -> Path:
    root = tmp_path / "places"
    rng = np.random.default_rng(0)
    for name, bits in (("built", BIT["building"]), ("roads", ROADS)):
        d = root / name
        for sub in ("A", "B", "M"):
            (d / sub).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(d / "A" / f"{i}.png")
            Image.fromarray(np.zeros((256, 256, 3), np.uint8)).save(d / "B" / f"{i}.png")
            m = np.full((256, 256), ALL_CLASSES & ~bits, np.uint8)
            m[:64] = bits
            Image.fromarray(m).save(d / "M" / f"{i}.png")
        (d / "dataset.json").write_text(json.dumps({"resolution_m": 2.0}))
    return root


def test_every_place_is_scored_on_what_it_labels(places: Path, tmp_path: Path) -> None:
    model = random_checkpoint(tmp_path / "g.safetensors", head="palette")
    report = evaluate_pairs(str(model), places)
    assert report.pairs == {"built": 3, "roads": 3}
    assert set(report.places) == {"built", "roads"}
    # Each place has truth for its own group only; the other group has no truth pixel there.
    assert "road" not in report.places["built"] and "building" not in report.places["roads"]
    for name, group in (("built", "building"), ("roads", "road")):
        assert report.places[name][group]["truth_share"] == pytest.approx(0.25)
    assert set(report.mean) >= {"building", "road"}


def test_pairs_without_masks_cannot_be_scored(tmp_path: Path) -> None:
    d = tmp_path / "plain"
    for sub in ("A", "B"):
        (d / sub).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / sub / "0.png")
    with pytest.raises(DatasetError, match="without known masks"):
        labelled_places(d)


def test_cli_eval_of_places_writes_the_report(places: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = random_checkpoint(tmp_path / "g.safetensors", head="palette")
    out = tmp_path / "eval"
    assert main(["eval", str(model), str(places), "-o", str(out), "--device", "cpu", "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["places"]) == {"built", "roads"} and "confusion" in report
    assert "built" in capsys.readouterr().out
