"""``geopix eval`` (score a model on a paired split) and ``geopix dataset make`` (cut pairs)."""

from __future__ import annotations

from pathlib import Path

import typer

from geopix.cli import app
from geopix.errors import GeopixError

dataset_app = typer.Typer(help="Build paired training data.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")


def _parse_color(text: str) -> tuple[int, int, int]:
    try:
        rgb = tuple(int(v) for v in text.split(","))
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise GeopixError(f"--baseline-color {text!r} must be R,G,B with values in 0..255, e.g. 232,229,222")
    return rgb  # type: ignore[return-value]


def _default_out(model: str, split: str) -> Path:
    """Next to a checkpoint file (its run directory); under runs/eval for a registry name."""
    path = Path(model)
    if path.is_file():
        return path.parent / f"eval-{split}"
    return Path("runs/eval") / f"{path.name}-{split}"


@app.command("eval")
def eval_cmd(
    model: str = typer.Argument(..., help="Registry name or checkpoint path (.safetensors or the authors' .pth)."),
    data: Path = typer.Argument(..., help="Dataset folder: maps layout (val/*.jpg, A|B side by side) or A/ and B/."),
    split: str = typer.Option("val", help="Which split to score."),
    limit: int = typer.Option(None, help="Score only the first N pairs."),
    out: Path = typer.Option(
        None,
        "--out",
        "-o",
        help="Where report.json and samples.png go (default: eval-SPLIT/ beside a checkpoint file, "
        "runs/eval/NAME-SPLIT/ for a registry name).",
    ),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    batch_size: int = typer.Option(8, help="Images per forward pass."),
    bn_mode: str = typer.Option("eval", help="eval (running statistics) | train (per-batch statistics)."),
    direction: str = typer.Option(None, help="AtoB or BtoA; default: the checkpoint's."),
    source_resolution: float = typer.Option(
        None, help="Metres per pixel of the dataset images as stored (default: 0.9 for the maps layout, else 1.0)."
    ),
    baseline_color: str = typer.Option("232,229,222", help="R,G,B of the constant-image baseline."),
) -> None:
    """Score a generator on a paired split (accuracy@5/10, RMSE, L1, PSNR, SSIM, class IoU)."""
    from rich.console import Console
    from rich.table import Table

    from geopix.evaluate import evaluate

    color = _parse_color(baseline_color)
    out_dir = out if out is not None else _default_out(model, split)
    report = evaluate(
        model,
        data,
        split=split,
        direction=direction,
        limit=limit,
        device=device,
        out_dir=out_dir,
        batch_size=batch_size,
        source_resolution_m=source_resolution,
        baseline_color=color,
        bn_mode=bn_mode,
    )
    table = Table(title=f"{report.n_images} {split} pairs, input {report.input_size}px, BatchNorm {bn_mode} mode")
    table.add_column("metric")
    table.add_column("model", justify="right")
    table.add_column(f"baseline {','.join(map(str, color))}", justify="right")
    for key, value in report.metrics.items():
        table.add_row(key, f"{value:.4f}", f"{report.baseline[key]:.4f}")
    Console().print(table)
    typer.echo(f"report: {report.files['report']}")


@dataset_app.command("make")
def dataset_make_cmd(
    out: Path = typer.Argument(..., help="Output folder; pairs go to OUT/A/NAME.png and OUT/B/NAME.png."),
    source: Path = typer.Option(..., "--source", help="Aerial GeoTIFF (the grid pairs are cut on)."),
    target: Path = typer.Option(..., "--target", help="Map GeoTIFF covering it, in any CRS."),
    tile: int = typer.Option(256, help="Tile side in pixels."),
    stride: int = typer.Option(256, help="Step between tiles in pixels."),
    resolution: float = typer.Option(None, help="Resample to this many metres per pixel first."),
) -> None:
    """Cut co-registered aerial and map rasters into aligned A/B training pairs."""
    from geopix.data.cut import make_pairs

    n = make_pairs(source, target, out, tile=tile, stride=stride, resolution_m=resolution)
    typer.echo(f"{n} pairs written to {out}")
