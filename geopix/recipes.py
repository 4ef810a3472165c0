"""Named training recipes: every stage that rebuilds a shipped model from the maps dataset.

``geopix train DATA --recipe sat2map -o RUN`` trains each stage into ``RUN/<stage>/`` (a later
stage starts from the previous stage's weights, exported as the earlier model was shipped), then
exports ``RUN/generator.safetensors`` with the shipped decoding.  Options given on the command
line override every stage (``--max-images 8 --epochs 1 --epochs-decay 0`` is a smoke run with
the same architecture, resolution and decoding).  The checkpoint's ``training`` metadata records
the recipe, the command and the equivalent plain commands of each stage, which the model card
quotes (``recipe_commands``; ``tests/test_recipes.py`` keeps the two in step).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from geopix.config import PRESETS, ProgressFn, TrainConfig
from geopix.errors import GeopixError, OptionError, OutputExistsError


@dataclass(frozen=True)
class Stage:
    """One ``geopix train`` run: a preset and the options over it (TrainConfig field names)."""

    name: str
    preset: str
    options: tuple[tuple[str, object], ...]
    from_previous: bool = False  # start from the previous stage's exported weights (--init-from)


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    stages: tuple[Stage, ...]
    #: ``geopix export`` settings of the final file (e.g. the palette decoding).
    export: tuple[tuple[str, object], ...] = ()
    half: bool = True  # fp16 weights, as shipped (BatchNorm statistics stay fp32)
    #: Average the last stage's weights with this earlier stage's (``geopix export --average-with``):
    #: a fine-tune keeps what the model it started from knew (WiSE-FT).
    average_with: str | None = None
    average_weight: float = 0.5  # the earlier stage's share
    #: Logit offsets of the final file's palette decoding (``geopix export --class-bias``), by
    #: class or metric group: a prior shift that trades precision for recall.
    class_bias: tuple[tuple[str, float], ...] = ()


RECIPES: dict[str, Recipe] = {
    "sat2map": Recipe(
        "sat2map",
        "palette head at 1.89 m/px, fine-tuned with scale and colour jitter (0.90-1.89 m/px), then at 0.60-1.30 m/px "
        "and averaged with the stage before; declares 1.0, where real imagery reads best within the maps val goals",
        (
            Stage(
                "stage1",
                "palette",
                (("ngf", 32), ("epochs", 8), ("epochs_decay", 12), ("source_resolution_m", 0.9)),
            ),
            Stage(
                "stage2",
                "palette",
                (
                    ("ngf", 32),
                    ("load_size_max", 600),
                    ("colour_jitter", 0.3),
                    ("lr", 2e-4),
                    ("epochs", 14),
                    ("epochs_decay", 14),
                    ("source_resolution_m", 0.9),
                ),
                from_previous=True,
            ),
            Stage(
                "stage3",
                "palette",
                (
                    ("ngf", 32),
                    ("load_size", 414),
                    ("load_size_max", 900),
                    ("colour_jitter", 0.3),
                    ("lr", 1e-4),
                    ("epochs", 5),
                    ("epochs_decay", 5),
                    ("source_resolution_m", 0.9),
                ),
                from_previous=True,
            ),
        ),
        export=(("ground_resolution_m", 1.0), ("palette_sharpness", 8.0), ("palette_keep_class", True)),
        average_with="stage2",
        class_bias=(("building", 0.25), ("road", 0.05)),
    ),
    "map2sat": Recipe(
        "map2sat",
        "the authors' pix2pix recipe B→A, ngf 32, batch 4, 5 + 5 epochs",
        (
            Stage(
                "train",
                "pix2pix",
                (
                    ("direction", "BtoA"),
                    ("ngf", 32),
                    ("batch_size", 4),
                    ("epochs", 5),
                    ("epochs_decay", 5),
                    ("source_resolution_m", 0.9),
                ),
            ),
        ),
    ),
}

#: The exported weights a stage hands to the next one (as the earlier model was shipped: fp16).
HANDOVER = "export.safetensors"


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise OptionError(f"--recipe {name!r} is unknown; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]


def _flag(field: str) -> str:
    names = {
        "source_resolution_m": "source_resolution",
        "ground_resolution_m": "ground_resolution",
        "palette_keep_class": "keep_class",
    }
    return "--" + names.get(field, field).replace("_", "-")


def _option_args(values: Mapping[str, object]) -> list[str]:
    args: list[str] = []
    for key, value in values.items():
        if isinstance(value, bool):
            args.append(_flag(key) if value else "--no-" + _flag(key)[2:])
        else:
            args += [_flag(key), f"{value:g}" if isinstance(value, float) else str(value)]
    return args


def recipe_commands(name: str, data: str = "data/maps", run_dir: str | None = None) -> list[str]:
    """The plain ``geopix train`` / ``geopix export`` commands that ``--recipe NAME`` runs."""
    recipe = get_recipe(name)
    run = run_dir or f"runs/{name}"
    lines, previous = [], None
    half = [] if recipe.half else ["--full"]
    for stage in recipe.stages:
        stage_dir = f"{run}/{stage.name}"
        args = ["geopix", "train", data, "--preset", stage.preset, *_option_args(dict(stage.options))]
        if stage.from_previous:
            args += ["--init-from", f"{previous}/{HANDOVER}"]
        lines.append(shlex.join([*args, "-o", stage_dir]))
        if stage is not recipe.stages[-1]:
            handover = [f"{stage_dir}/generator.safetensors", f"{stage_dir}/{HANDOVER}"]
            lines.append(shlex.join(["geopix", "export", *handover, *half]))
        previous = stage_dir
    final = [f"{previous}/generator.safetensors", f"{run}/generator.safetensors"]
    options = _export_options(recipe, run)
    options.pop("class_bias", None)  # a mapping: one --class-bias flag per class
    bias = [a for name, value in recipe.class_bias for a in ("--class-bias", f"{name}={value:g}")]
    lines.append(shlex.join(["geopix", "export", *final, *_option_args(options), *bias, *half]))
    return lines


def _export_options(recipe: Recipe, run_dir: str | Path) -> dict[str, object]:
    """The final export's settings (``export_checkpoint`` keywords): the recipe's, the weights it
    averages in, the class offsets."""
    options = dict(recipe.export)
    if recipe.average_with is not None:
        options["average_with"] = f"{run_dir}/{recipe.average_with}/{HANDOVER}"
        options["average_weight"] = recipe.average_weight
    if recipe.class_bias:
        options["class_bias"] = dict(recipe.class_bias)
    return options


def train_recipe(
    name: str,
    data: str | Path,
    run_dir: str | Path,
    overrides: Mapping[str, object] | None = None,
    on_progress: ProgressFn | None = None,
) -> Path:
    """Run every stage of recipe ``name`` on ``data`` into ``run_dir``; returns the exported checkpoint.

    ``overrides`` (TrainConfig fields) apply to every stage: ``resume``, ``overwrite``,
    ``max_images``, ``epochs``, ``threads``, ``command`` …
    """
    from geopix.models.checkpoint import load_checkpoint
    from geopix.models.export import export_checkpoint
    from geopix.train import train
    from geopix.train_state import GENERATOR, claim_run_dir

    recipe = get_recipe(name)
    overrides = dict(overrides or {})
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise GeopixError(f"cannot override {sorted(unknown)} in a recipe; known: TrainConfig fields")
    for key in ("data", "run_dir", "recipe", "init_from"):
        overrides.pop(key, None)
    run_dir = Path(run_dir)
    final = run_dir / GENERATOR
    resume, overwrite = bool(overrides.get("resume")), bool(overrides.get("overwrite"))
    if final.exists() and not (resume or overwrite):
        raise OutputExistsError(
            f"{final} already exists (a finished --recipe {name} run); pass --overwrite to replace it, "
            "or choose another --run-dir"
        )
    for stage in recipe.stages:  # refuse before any stage trains, not between stages
        claim_run_dir(run_dir / stage.name, resume=resume, overwrite=overwrite)
    if overwrite:
        for stage in recipe.stages:
            (run_dir / stage.name / HANDOVER).unlink(missing_ok=True)
        final.unlink(missing_ok=True)
    previous: Path | None = None
    generator = None
    for i, stage in enumerate(recipe.stages, 1):
        values = {**PRESETS[stage.preset], **dict(stage.options), **overrides}
        if stage.from_previous:
            values["init_from"] = str(previous)
        cfg = TrainConfig(
            data=Path(data),
            run_dir=run_dir / stage.name,
            recipe=f"{name} {stage.name} ({i}/{len(recipe.stages)})",
            **values,
        )
        generator = train(cfg, on_progress)
        if stage is not recipe.stages[-1]:
            previous = export_checkpoint(generator, run_dir / stage.name / HANDOVER, half=recipe.half)
    assert generator is not None
    training = json.loads(load_checkpoint(generator).spec.training or "{}")
    options = _export_options(recipe, run_dir)
    training |= {
        "recipe": name,
        "command": overrides.get("command"),
        "recipe_commands": recipe_commands(name, str(data), str(run_dir)),
        "export": options | {"half": recipe.half},
    }
    return export_checkpoint(generator, final, half=recipe.half, training=json.dumps(training, default=str), **options)
