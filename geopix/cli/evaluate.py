"""The dataset commands: ``geopix dataset make/vectors/labels`` build paired data, ``geopix eval`` scores a model on it
(or on labelled rasters)."""

from __future__ import annotations

from pathlib import Path

import typer

from geopix.cli.app import app, interrupted_says
from geopix.cli.options import (
    BatchSize,
    Device,
    Layers,
    MatchColors,
    Model,
    Overwrite,
    PairResolution,
    PairStride,
    PairTile,
    ShowProgress,
    SourceResolution,
    ValueMap,
)
from geopix.cli.progress import progress_bar
from geopix.errors import GeopixError, OptionError

dataset_app = typer.Typer(help="Build paired training data.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")


def _parse_color(text: str) -> tuple[int, int, int]:
    try:
        rgb = tuple(int(v) for v in text.split(","))
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise OptionError(f"--baseline-color {text!r} must be R,G,B with values in 0..255, e.g. 232,229,222")
    return rgb  # type: ignore[return-value]


def _default_out(model: str, split: str) -> Path:
    """Next to a checkpoint file (its run directory); under runs/eval for a registry name."""
    path = Path(model)
    if path.is_file():
        return path.parent / f"eval-{split}"
    return Path("runs/eval") / f"{path.name}-{split}"


def _value_map(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        value, sep, cls = item.rpartition("=")
        if not sep or not value:
            raise GeopixError(f"--map {item!r} must be VALUE=CLASS, e.g. --map Forest=park")
        out[value] = cls
    return out


def _eval_real(
    model: str,
    data: Path | None,
    rasters: list[Path],
    layers: list[str],
    maps: list[str],
    out: Path | None,
    device: str,
    precision: str = "fp32",
) -> None:
    """``geopix eval`` on georeferenced (raster, vectors) sets: render, classify, score per class."""
    from rich.console import Console
    from rich.table import Table

    from geopix.config import RealEvalConfig
    from geopix.fidelity import evaluate_sets

    if rasters:
        if not layers:
            raise GeopixError("--raster needs at least one --layer (the vector labels of the same ground)")
        sets = ({"name": rasters[0].stem, "rasters": tuple(rasters), "layers": tuple(layers), "map": _value_map(maps)},)
    else:
        sets = data
    out_dir = out if out is not None else _default_out(model, "real")
    cfg = RealEvalConfig(model, sets, out_dir, device=device, precision=precision)
    with interrupted_says("no report written; rerun the same command"):
        report = evaluate_sets(cfg)
    for line in report.warnings:
        typer.secho(f"warning: {line}", err=True, fg=typer.colors.YELLOW)
    table = Table(title=f"{model}: IoU / precision / recall on the classes the labels cover")
    table.add_column("set")
    groups = [g for g in ("building", "road", "park", "water") if any(g in v for v in report.sets.values())]
    for g in groups:
        table.add_column(g, justify="right")
    for name, scores in report.sets.items():
        cells = [
            f"{scores[g]['iou']:.3f} / {scores[g]['precision']:.2f} / {scores[g]['recall']:.2f}" if g in scores else "–"
            for g in groups
        ]
        table.add_row(name, *cells)
    table.add_row("mean IoU", *[f"{report.mean[g]:.3f}" if g in report.mean else "–" for g in groups])
    Console().print(table)
    typer.echo(f"report: {report.files['report']}")


def _has_known_masks(data: Path) -> bool:
    """Pairs made by ``geopix dataset vectors/labels`` (known masks), or a folder of such places."""
    from geopix.data.pairs import find_places

    return (data / "M").is_dir() or find_places(data) is not None


def _eval_pairs(model: str, data: Path, out: Path | None, device: str, batch_size: int, progress: bool) -> None:
    """``geopix eval`` on labelled pairs: IoU per class group from the known masks, per place."""
    from rich.console import Console
    from rich.table import Table

    from geopix.output import written_whole
    from geopix.pair_fidelity import GROUPS, evaluate_pairs

    with progress_bar(progress) as bar, interrupted_says("no report written; rerun the same command"):
        report = evaluate_pairs(model, data, device=device, batch_size=batch_size, on_progress=bar)
    out = out if out is not None else _default_out(model, "pairs")
    out.mkdir(parents=True, exist_ok=True)
    with written_whole(out / "report.json") as tmp:
        tmp.write_text(report.to_json() + "\n")
    table = Table(title=f"{model}: IoU / precision / recall per place (labelled pairs, {sum(report.pairs.values())})")
    table.add_column("place")
    groups = [g for g in GROUPS if g in report.mean]
    for g in groups:
        table.add_column(g, justify="right")
    for name, scores in report.places.items():
        table.add_row(
            name,
            *[
                f"{scores[g]['iou']:.3f} / {scores[g]['precision']:.2f} / {scores[g]['recall']:.2f}"
                if g in scores
                else "–"
                for g in groups
            ],
        )
    table.add_row("mean IoU", *[f"{report.mean[g]:.3f}" for g in groups])
    Console().print(table)
    typer.echo(f"report: {out / 'report.json'}")


@app.command("eval")
def eval_cmd(
    model: str = typer.Argument(..., help="Registry name or checkpoint path (.safetensors or the authors' .pth)."),
    data: Path = typer.Argument(
        None,
        help="Dataset folder (maps layout, or A/ and B/), or a .json file of georeferenced (raster, vectors) sets.",
    ),
    raster: list[Path] = typer.Option(None, "--raster", help="Score renders of this georeferenced raster (repeat)."),
    layer: Layers = None,
    value_map: ValueMap = None,
    split: str = typer.Option("val", help="Which split to score."),
    limit: int = typer.Option(None, help="Score only the first N pairs."),
    out: Path = typer.Option(
        None,
        "--out",
        "-o",
        help="Where report.json and samples.png go (default: eval-SPLIT/ beside a checkpoint file, "
        "runs/eval/NAME-SPLIT/ for a registry name).",
    ),
    device: Device = "auto",
    batch_size: BatchSize = 8,
    bn_mode: str = typer.Option("eval", help="eval (running statistics) | train (per-batch statistics)."),
    direction: str = typer.Option(None, help="AtoB or BtoA; default: the checkpoint's."),
    source_resolution: SourceResolution = None,
    baseline_color: str = typer.Option("232,229,222", help="R,G,B of the constant-image baseline."),
    progress: ShowProgress = True,
    precision: str = typer.Option(
        "fp32",
        "--precision",
        help="fp32 | bf16 | fp16 | int8: what the generator runs in (scores compare models, so never auto).",
    ),
) -> None:
    """Score a generator on a paired split (accuracy@5/10, RMSE, L1, PSNR, SSIM, class IoU),
    or on georeferenced rasters with vector labels (--raster/--layer or a sets .json: IoU per class)."""
    if raster or (data is not None and data.suffix.lower() == ".json"):
        _eval_real(model, data, raster or [], layer or [], value_map or [], out, device, precision)
        return
    if data is None:
        raise GeopixError("pass DATA (a paired dataset folder or a sets .json) or --raster with --layer")
    if _has_known_masks(data):
        _eval_pairs(model, data, out, device, batch_size, progress)
        return
    from rich.console import Console
    from rich.table import Table

    from geopix.config import EvalConfig
    from geopix.evaluate import evaluate

    color = _parse_color(baseline_color)
    cfg = EvalConfig(
        model,
        data,
        split=split,
        direction=direction,
        limit=limit,
        device=device,
        out_dir=out if out is not None else _default_out(model, split),
        batch_size=batch_size,
        source_resolution_m=source_resolution,
        baseline_color=color,
        bn_mode=bn_mode,
        precision=precision,
    )
    with progress_bar(progress) as bar, interrupted_says("no report written; rerun the same command"):
        report = evaluate(cfg, on_progress=bar)
    table = Table(title=f"{report.n_images} {split} pairs, input {report.input_size}px, BatchNorm {bn_mode} mode")
    table.add_column("metric")
    table.add_column("model", justify="right")
    table.add_column(f"baseline {','.join(map(str, color))}", justify="right")
    for key, value in report.metrics.items():
        table.add_row(key, f"{value:.4f}", f"{report.baseline[key]:.4f}")
    Console().print(table)
    typer.echo(f"report: {report.files['report']}")


def _class_list(text: str) -> tuple[str, ...]:
    """``--covers building, road`` → ``("building", "road")``."""
    return tuple(c.strip() for c in text.split(","))


def _say_pairs(result, out: Path, note: str = "") -> None:
    """The one line both dataset builders end with: pairs, resolution, what is labelled."""
    drawn = ", ".join(f"{k} {v}" for k, v in result.class_pixels.items() if v)
    typer.echo(
        f"{result.pairs} pairs at {result.resolution_m:.2f} m/px written to {out} "
        f"({result.known_share:.0%} of pixels labelled; covers {', '.join(result.covers)}{note}; pixels: {drawn})"
    )


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
    from geopix.config import CutConfig
    from geopix.data.cut import make_pairs

    cfg = CutConfig(source, target, out, tile=tile, stride=stride, resolution_m=resolution)
    with interrupted_says(f"the pairs written so far are complete in {out}; rerun the same command to redo them all"):
        n = make_pairs(cfg)
    typer.echo(f"{n} pairs written to {out}")


@dataset_app.command("vectors")
def dataset_vectors_cmd(
    out: Path = typer.Argument(..., help="Output folder; pairs go to OUT/A, OUT/B and OUT/M (known masks)."),
    raster: list[Path] = typer.Option(..., "--raster", help="Aerial GeoTIFF (repeat for several)."),
    layer: Layers = ...,  # required here
    value_map: ValueMap = None,
    covers: str = typer.Option(
        None, help="Classes the layers label completely, comma-separated (default: those they contain)."
    ),
    model: Model = "sat2map",
    resolution: PairResolution = None,
    tile: PairTile = 256,
    stride: PairStride = None,
    match_colors: MatchColors = True,
    overwrite: Overwrite = False,
) -> None:
    """Turn aerial rasters plus vector layers (GeoJSON, GPKG, Shapefile, .osm.pbf) into training pairs."""
    from geopix.config import VectorPairsConfig
    from geopix.data.vector_pairs import make_vector_pairs

    cfg = VectorPairsConfig(
        tuple(raster),
        tuple(layer),
        out,
        model=model,
        resolution_m=resolution,
        tile=tile,
        stride=stride,
        value_map=_value_map(value_map),
        covers=frozenset(_class_list(covers)) if covers else None,
        match_colors=match_colors,
        overwrite=overwrite,
    )
    with interrupted_says(f"no pairs written ({out} untouched); rerun the same command"):
        result = make_vector_pairs(cfg)
    for line in result.warnings:
        typer.secho(f"warning: {line}", err=True, fg=typer.colors.YELLOW)
    _say_pairs(result, out)


@dataset_app.command("labels")
def dataset_labels_cmd(
    out: Path = typer.Argument(..., help="Output folder; pairs go to OUT/A, OUT/B and OUT/M (known masks)."),
    images: list[Path] = typer.Argument(
        ..., help="Aerial images (GeoTIFF, or plain TIFF/PNG/JPEG with --source-resolution)."
    ),
    labels: list[Path] = typer.Option(
        ..., "--labels", help="Class raster files or folders, matched to the images by file stem (repeat)."
    ),
    codes: Path = typer.Option(
        ...,
        "--codes",
        help='Code table JSON: {"codes": {"0": "background", "1": "building", "255": "unknown"}} '
        '(optional "covers" and "incomplete"); see docs/vectors.md.',
    ),
    covers: str = typer.Option(
        None, help="Classes the labels cover, comma-separated (default: those the code table names)."
    ),
    incomplete: bool = typer.Option(
        False,
        "--incomplete",
        help="The covered classes are only partly traced: the background code means unknown, not 'none of these'.",
    ),
    source_resolution: float = typer.Option(
        None, "--source-resolution", help="Metres per pixel of images without georeferencing (needed for them)."
    ),
    model: Model = "sat2map",
    resolution: PairResolution = None,
    tile: PairTile = 256,
    stride: PairStride = None,
    match_colors: MatchColors = True,
    overwrite: Overwrite = False,
) -> None:
    """Turn aerial images plus class rasters (a segmentation data set) into training pairs."""
    from geopix.config import LabelPairsConfig
    from geopix.data.label_pairs import make_label_pairs

    cfg = LabelPairsConfig(
        tuple(images),
        tuple(labels),
        codes,
        out,
        covers=_class_list(covers) if covers else None,
        incomplete=incomplete,
        source_resolution_m=source_resolution,
        model=model,
        resolution_m=resolution,
        tile=tile,
        stride=stride,
        match_colors=match_colors,
        overwrite=overwrite,
    )
    with interrupted_says(f"no pairs written ({out} untouched); rerun the same command"):
        result = make_label_pairs(cfg)
    _say_pairs(result, out, "; incomplete: background is unknown" if result.incomplete else "")
