"""Named recipes rebuild the shipped models: the docs quote them, and following the docs works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geopix.config import TrainConfig
from geopix.models.registry import REGISTRY, load_model
from geopix.recipes import RECIPES, recipe_commands
from geopix.style import palette_bias
from geopix.testing import synthetic_maps_dataset
from geopix.train import train
from tests.docs_blocks import ROOT, blocks, make_workspace, run

MODEL_CARD = ROOT / "docs" / "model-card.md"
TRAINING = ROOT / "docs" / "training.md"


def test_every_shipped_model_has_a_recipe_and_the_registry_points_to_it() -> None:
    for name, entry in REGISTRY.items():
        assert name in RECIPES and entry.train_options == f"--recipe {name}"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_the_model_card_quotes_each_recipe(name: str) -> None:
    card = MODEL_CARD.read_text()
    assert f"geopix train data/maps --recipe {name} -o runs/{name}" in card
    for line in recipe_commands(name):
        assert line in card, f"docs/model-card.md no longer quotes `{line}` (geopix/recipes.py changed?)"


def test_training_md_quotes_the_sat2map_expansion() -> None:
    text = TRAINING.read_text()
    assert all(line in text for line in recipe_commands("sat2map"))


def test_the_maps_layout_defaults_to_0_9_m_per_px(tmp_path: Path) -> None:
    data = synthetic_maps_dataset(tmp_path / "maps", n_train=2, n_val=0, size=600)  # 1200×600, like the maps
    cfg = TrainConfig(
        data=data, run_dir=tmp_path / "run", ngf=4, ndf=4, batch_size=2, epochs=1, epochs_decay=0,
        device="cpu", threads=1, bn_recal_batches=1, sample_every=99,
    )  # fmt: skip
    spec = load_model(train(cfg)).spec
    assert spec.ground_resolution_m == pytest.approx(0.9 * 600 / 286)
    assert json.loads(spec.training)["config"]["source_resolution_m"] == 0.9


@pytest.mark.slow
def test_the_smoke_run_in_training_md_matches_the_shipped_sat2map(tmp_path: Path) -> None:
    """docs/training.md's smoke block, to the letter, on a stand-in maps dataset."""
    (smoke,) = [b for b in blocks(TRAINING) if "--recipe sat2map --max-images" in b.code]
    ws = make_workspace(tmp_path)
    proc = run(smoke, ws)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (line,) = smoke.commands()
    out = Path(line.split(" -o ")[1].split()[0])
    made, shipped = load_model(ws / out / "generator.safetensors").spec, load_model("sat2map").spec
    fields = ("ground_resolution_m", "palette_sharpness", "palette_keep_class", "head", "ngf", "num_downs", "norm")
    for field in (*fields, "direction"):
        assert getattr(made, field) == getattr(shipped, field), field
    assert len(made.palette) == len(shipped.palette) and made.use_dropout == shipped.use_dropout
    offsets = dict(RECIPES["sat2map"].class_bias)  # the decoding's prior shift, by class, in both files
    assert made.palette_bias == palette_bias(made.palette, offsets) and any(made.palette_bias)
    assert shipped.palette_bias == palette_bias(shipped.palette, offsets)
    training = json.loads(made.training)
    assert training["recipe"] == "sat2map" and training["command"].startswith("geopix train data/maps")
    assert "--recipe sat2map" in training["command"] and training["export"]["palette_sharpness"] == 8
    assert training["export"]["class_bias"] == dict(RECIPES["sat2map"].class_bias)
    assert training["export"]["average_with"] == f"{out}/stage2/export.safetensors"
    assert training["recipe_commands"] == recipe_commands("sat2map", "data/maps", str(out))


def test_recipe_option_errors_before_any_work(tmp_path: Path) -> None:
    from geopix.cli import main
    from geopix.errors import OptionError

    data = synthetic_maps_dataset(tmp_path / "maps", n_train=1, n_val=0, size=64)
    run = tmp_path / "run"
    assert main(["train", str(data), "--recipe", "nope", "-o", str(run)]) == OptionError.exit_code
    assert (
        main(["train", str(data), "--recipe", "sat2map", "--preset", "palette", "-o", str(run)])
        == OptionError.exit_code
    )
    assert (
        main(["train", str(data), "--recipe", "sat2map", "--init-from", "sat2map", "-o", str(run)])
        == OptionError.exit_code
    )
    assert not run.exists()
