"""The training commands: ``geopix train`` (a run, resumable) and ``geopix export`` (its checkpoint, for shipping)."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from geopix.cli.app import app
from geopix.cli.options import Device, ShowProgress, SourceResolution
from geopix.cli.progress import progress_bar
from geopix.config import PRESETS, TrainConfig
from geopix.errors import OptionError, OutputExistsError
from geopix.recipes import RECIPES


def _command_line(ctx: typer.Context) -> str:
    """The command as given, in canonical form (options the user set, in declaration order)."""
    parts = ["geopix", ctx.info_name or "train"]
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if source is None or source.name != "COMMANDLINE":
            continue
        value = ctx.params[param.name]
        if param.param_type_name == "argument":
            parts.append(str(value))
        elif getattr(param, "is_flag", False):
            parts.append(param.opts[0] if value else param.secondary_opts[0])
        else:
            parts += [param.opts[0], str(value)]
    return shlex.join(parts)


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    data: Path = typer.Argument(..., help="Dataset folder: maps layout (train/*.jpg, A|B side by side) or A/ and B/."),
    run_dir: Path = typer.Option(Path("runs/train"), "--run-dir", "-o", help="Where checkpoints and logs go."),
    preset: str = typer.Option(None, help=f"Option set to start from: {', '.join(PRESETS)} (default pix2pix)."),
    recipe: str = typer.Option(
        None,
        help=f"Rebuild a shipped model, every stage and the export: {', '.join(RECIPES)}; other options "
        "override every stage.",
    ),
    direction: str = typer.Option(None, help="AtoB (aerial→map) or BtoA."),
    ngf: int = typer.Option(None, help="Generator width (64 in the paper)."),
    ndf: int = typer.Option(None, help="Discriminator width."),
    norm: str = typer.Option(None, help="batch | instance | none."),
    head: str = typer.Option(None, help="tanh (RGB) | palette (classify into the map's colours)."),
    palette_size: int = typer.Option(None, help="Number of palette colours (palette head)."),
    gan_mode: str = typer.Option(None, help="vanilla | lsgan | none."),
    lambda_l1: float = typer.Option(None, help="Weight of the L1 loss (tanh head)."),
    batch_size: int = typer.Option(None, help="Images per step."),
    lr: float = typer.Option(None, help="Adam learning rate."),
    epochs: int = typer.Option(None, help="Epochs at constant learning rate."),
    epochs_decay: int = typer.Option(None, help="Epochs of linear decay to zero."),
    load_size: int = typer.Option(None, help="Resize images to this before cropping."),
    load_size_max: int = typer.Option(None, help="Scale jitter: draw each sample's load size up to this."),
    crop_size: int = typer.Option(None, help="Random crop size (multiple of 256 for unet_256)."),
    colour_jitter: float = typer.Option(None, help="Jitter the input photo's colours by up to this fraction."),
    sharpness_jitter: float = typer.Option(
        None, help="Sharpen or blur the input photo at random, up to this strength (0..1)."
    ),
    rotate: bool = typer.Option(None, "--rotate/--no-rotate", help="Add 90° rotations to the flips."),
    source_resolution: SourceResolution = None,
    max_images: int = typer.Option(None, help="Use only the first N training pairs."),
    replay: Path = typer.Option(None, help="A second dataset (e.g. ../shared/data/maps) mixed into every epoch."),
    replay_ratio: float = typer.Option(None, help="Share of each epoch's samples drawn from --replay (0..1)."),
    place_samples: int = typer.Option(
        None, help="DATA holds places (one pairs folder each): samples drawn from every place per epoch."
    ),
    seed: int = typer.Option(None, help="Random seed."),
    init_from: str = typer.Option(None, help="Start from these weights (registry name or checkpoint): fine-tuning."),
    device: Device = None,
    workers: int = typer.Option(None, help="DataLoader worker processes."),
    threads: int = typer.Option(None, help="Torch CPU threads."),
    save_every: int = typer.Option(None, help="Save a checkpoint every N epochs."),
    sample_every: int = typer.Option(None, help="Write a sample grid every N epochs."),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN_DIR/state.pt exactly."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run already in RUN_DIR (else refused)."),
    progress: ShowProgress = True,
) -> None:
    """Train pix2pix (or the palette variant) and write a self-describing checkpoint."""
    options = {
        "direction": direction,
        "ngf": ngf,
        "ndf": ndf,
        "norm": norm,
        "head": head,
        "palette_size": palette_size,
        "gan_mode": gan_mode,
        "lambda_l1": lambda_l1,
        "batch_size": batch_size,
        "lr": lr,
        "epochs": epochs,
        "epochs_decay": epochs_decay,
        "load_size": load_size,
        "load_size_max": load_size_max,
        "crop_size": crop_size,
        "colour_jitter": colour_jitter,
        "sharpness_jitter": sharpness_jitter,
        "rotate": rotate,
        "max_images": max_images,
        "replay": replay,
        "replay_ratio": replay_ratio,
        "place_samples": place_samples,
        "seed": seed,
        "init_from": init_from,
        "device": device,
        "workers": workers,
        "threads": threads,
        "save_every": save_every,
        "sample_every": sample_every,
    }
    options["source_resolution_m"] = source_resolution
    run = {"data": data, "run_dir": run_dir, "resume": resume, "overwrite": overwrite}
    run["command"] = _command_line(ctx)
    if recipe is not None:
        from geopix.recipes import train_recipe

        if preset is not None or init_from is not None:
            extra = f"--preset {preset}" if preset is not None else f"--init-from {init_from}"
            raise OptionError(f"--recipe {recipe} sets the preset and starting weights of each stage; drop {extra}")
        overrides = {k: v for k, v in {**options, **run}.items() if v is not None}
        with progress_bar(progress) as bar:
            path = train_recipe(recipe, data, run_dir, overrides, on_progress=bar)
        typer.echo(f"generator checkpoint: {path}")
        return
    from geopix.train import train

    preset = preset or "pix2pix"
    if preset not in PRESETS:
        raise OptionError(f"--preset {preset!r} is unknown; choose one of {', '.join(PRESETS)}")
    given = {k: v for k, v in options.items() if v is not None}  # unset: the preset's, else the default
    cfg = TrainConfig(**{**PRESETS[preset], **run, **given})
    with progress_bar(progress) as bar:
        path = train(cfg, on_progress=bar)
    typer.echo(f"generator checkpoint: {path}")


def _class_offsets(items: list[str]) -> dict[str, float]:
    """``["building=1", "road=0.5"]`` → ``{"building": 1.0, "road": 0.5}`` (a repeated class adds up)."""
    offsets: dict[str, float] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep:
            raise OptionError(f"--class-bias {item!r}: write CLASS=VALUE (e.g. building=0.25 or road=0.75)")
        try:
            offsets[name] = offsets.get(name, 0.0) + float(raw)
        except ValueError:
            raise OptionError(f"--class-bias {item!r}: {raw!r} is not a number") from None
    return offsets


@app.command("export")
def export_cmd(
    src: str = typer.Argument(
        ..., help="A registry name (sat2map) or a generator checkpoint (e.g. RUN_DIR/generator.safetensors)."
    ),
    dst: Path = typer.Argument(..., help="Where to write the shippable checkpoint."),
    half: bool = typer.Option(True, "--half/--full", help="Store weights as fp16 (about half the size)."),
    ground_resolution: float = typer.Option(None, help="Correct the metres per pixel the model expects."),
    direction: str = typer.Option(None, help="Set AtoB or BtoA."),
    note: Path = typer.Option(None, help="A JSON file (e.g. an eval report) to record as the training note."),
    input_stats: Path = typer.Option(None, help="Dataset folder: record its input colour statistics."),
    palette_sharpness: float = typer.Option(
        None, help="Palette decoding: 0 = argmax colour, k > 0 = colours weighted by softmax(k · logits)."
    ),
    keep_class: bool = typer.Option(
        None,
        "--keep-class/--no-keep-class",
        help="Palette decoding: blends stop before another class's colour (default: as in SRC).",
    ),
    class_bias: list[str] = typer.Option(
        None,
        help="Palette decoding: add VALUE to the logits of CLASS's colours, CLASS=VALUE (repeat; e.g. building=1; "
        "road = every road class); replaces SRC's offsets.",
    ),
    class_bias_decides: bool = typer.Option(
        None,
        "--class-bias-decides/--no-class-bias-decides",
        help="Palette decoding with --keep-class: the offsets choose each pixel's class only; its colour "
        "blends the unshifted logits within that class (drawn just inside it, not in its full colour; "
        "default: as in SRC).",
    ),
    average_with: str = typer.Option(
        None,
        help="Average the weights with this checkpoint or registry name of the same architecture "
        "(e.g. the model a fine-tune started from).",
    ),
    average_weight: float = typer.Option(
        0.5, min=0.0, max=1.0, help="Share of --average-with's weights in the average (0..1)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace DST if it exists."),
    fmt: str = typer.Option(
        "safetensors",
        "--format",
        help="safetensors (a geopix checkpoint) | onnx (RGB 0..255 in, map RGB out, self-describing; runs on "
        "ONNX Runtime without geopix, see docs/cli.md; needs geopix[onnx]).",
    ),
    tile_size: int = typer.Option(256, "--tile-size", help="--format onnx: the tile side recorded in its metadata."),
) -> None:
    """Re-save a checkpoint for shipping (fp16, corrected metadata, optionally averaged with another), or
    export it as a self-describing ONNX model."""
    import json

    from geopix.models.checkpoint import load_checkpoint
    from geopix.models.export import export_checkpoint, is_geopix_model
    from geopix.models.registry import resolve_model
    from geopix.output import refuse_foreign, refuse_input

    source = resolve_model(src)
    inputs = [source, *([resolve_model(average_with)] if average_with else []), *([note] if note else [])]
    refuse_input([dst], inputs, "DST")  # never its own input, --overwrite or not
    if dst.exists() and not overwrite:
        raise OutputExistsError(f"{dst} already exists; pass --overwrite to replace it or choose another DST")
    refuse_foreign(dst, is_geopix_model, "a geopix model file", "DST")
    # SRC's own metadata, read here only where an option builds on it (export_checkpoint reads it too).
    needs_spec = (input_stats is not None and direction is None) or note is not None
    spec = load_checkpoint(source).spec if needs_spec else None
    overrides: dict[str, object] = {}
    if ground_resolution is not None:
        overrides["ground_resolution_m"] = ground_resolution
    if direction is not None:
        overrides["direction"] = direction
    if palette_sharpness is not None:
        overrides["palette_sharpness"] = palette_sharpness
    if keep_class is not None:
        overrides["palette_keep_class"] = keep_class
    if class_bias_decides is not None:
        overrides["palette_bias_decides"] = class_bias_decides
    if input_stats is not None:
        from geopix.data.pairs import find_pairs, input_statistics

        pairs = find_pairs(input_stats, "train")
        overrides["input_stats"] = input_statistics(pairs, direction or spec.direction)
    if note is not None:
        training = json.loads(spec.training or "{}")
        training["note"] = json.loads(note.read_text())
        overrides["training"] = json.dumps(training)
    if fmt not in ("safetensors", "onnx"):
        raise OptionError(f"--format {fmt!r} must be safetensors or onnx")
    options = {
        "average_with": average_with,
        "average_weight": average_weight,
        "class_bias": _class_offsets(class_bias) if class_bias else None,
        **overrides,
    }
    if fmt == "onnx":
        import tempfile

        from geopix.models.onnx_export import export_onnx, onnx_modules

        onnx_modules()  # the clear error before any work
        with tempfile.TemporaryDirectory() as tmp:
            model = load_checkpoint(export_checkpoint(source, Path(tmp) / "m.safetensors", half=False, **options))
        path = export_onnx(model.spec, model.net, dst, tile_size)
    else:
        path = export_checkpoint(source, dst, half=half, **options)
    typer.echo(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
