"""The map-making commands: ``geopix render`` (a raster), ``predict`` (plain images), ``info`` (the render it
would be) and ``demo``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from geopix.cli.app import app, interrupted_says
from geopix.cli.options import (
    Bands,
    BatchSize,
    Dashboard,
    Device,
    Model,
    Overlap,
    Overwrite,
    Precision,
    Resample,
    Scheduler,
    ShowProgress,
    Threads,
    TileSize,
    Workers,
    parse_bands,
)
from geopix.cli.progress import progress_bar
from geopix.config import InferConfig, RenderConfig, TileConfig
from geopix.errors import EmptyResultWarning

_TILES = TileConfig()  # the library's defaults, so the CLI cannot drift from them


def _summary(result, extra: list[str] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="geopix render", show_header=False)
    t.add_row("output", str(result.map_path))
    t.add_row("size", f"{result.width} × {result.height} px")
    t.add_row(
        "tiles",
        f"{result.tiles} planned, {result.tiles_run} run, {result.tiles_cached} shared between blocks, "
        f"{result.tiles_skipped} skipped (no data)",
    )
    resumed = f" ({result.blocks_resumed} already done by an interrupted run)" if result.blocks_resumed else ""
    t.add_row("blocks", f"{result.blocks}{resumed}")
    t.add_row("time", f"{result.seconds:.1f} s")
    t.add_row("precision", result.precision)
    t.add_row("throughput", f"{result.tiles_per_second:.2f} tiles/s, {result.megapixels_per_second:.2f} Mpx/s")
    t.add_row("stages (worker-seconds)", ", ".join(f"{k} {v:.1f}" for k, v in result.stage_seconds.items()))
    for line in extra or []:
        t.add_row("", line)
    Console(stderr=True).print(t)


@app.command("render")
def render_cmd(
    inputs: list[str] = typer.Argument(
        ...,
        metavar="INPUT...",
        help="Aerial raster (uint8/uint16 RGB): a path, http(s)://, s3://, gs://, az:// or /vsi… URL, a VRT, "
        "a STAC Item (.json), or several files / a glob (mosaicked).",
    ),
    output_dir: str = typer.Option(
        ..., "--output", "-o", help="Output folder or object-store URL (s3://bucket/run); map.tif is written there."
    ),
    asset: str = typer.Option(None, help="STAC Item asset to render (default: the RGB/visual one)."),
    model: Model = "sat2map",
    tile_size: TileSize = 256,
    overlap: Overlap = _TILES.overlap,
    batch_size: BatchSize = 8,
    chunk_size: int = typer.Option(1024, help="Output block size in pixels (one Dask task, one zarr chunk)."),
    device: Device = "auto",
    precision: Precision = "auto",
    workers: Workers = None,
    threads: Threads = None,
    scheduler: Scheduler = None,
    dashboard: Dashboard = False,
    scheduler_file: Path = typer.Option(
        None, help="Scheduler file written by `dask scheduler --scheduler-file` (else $DASK_SCHEDULER_ADDRESS)."
    ),
    aoi: Path = typer.Option(None, help="GeoJSON area of interest (any CRS); limits the work and the output."),
    bands: Bands = None,
    resample: Resample = True,
    output_resolution: str = typer.Option("source", help="source (the input grid) or model (the model's grid)."),
    allow_no_crs: bool = typer.Option(False, help="Accept a raster without CRS (output is not georeferenced)."),
    overwrite: Overwrite = False,
    keep_zarr: bool = typer.Option(False, help="Keep the intermediate zarr block store."),
    force: bool = typer.Option(False, help="Discard an unfinished render of a different job in OUTPUT/map.zarr."),
    match_colors: bool = typer.Option(
        True, "--match-colors/--no-match-colors", help="Match the input's colours to the model's training imagery."
    ),
    cog: bool = typer.Option(True, "--cog/--no-cog", help="Write a Cloud-Optimized GeoTIFF with overviews."),
    progress: ShowProgress = True,
    xyz: Path = typer.Option(
        None, help="Also write web tiles: a folder, or a name ending .pmtiles/.mbtiles (relative to -o)."
    ),
    memory_budget: str = typer.Option(
        "auto", help="Memory the render may use, e.g. 8G; auto: 80 % of what is available at the start."
    ),
) -> None:
    """Render an aerial GeoTIFF into a seamless, georeferenced map raster (OUTPUT/map.tif)."""
    from geopix.budget import parse_size
    from geopix.mosaic import resolve_input
    from geopix.pipeline import render
    from geopix.process import freeze_gc

    freeze_gc()  # a render's modules are imported: collections need not walk their objects
    cfg = RenderConfig(
        input=resolve_input(inputs, asset),
        output_dir=output_dir,
        model=model,
        tiles=TileConfig(tile_size, overlap, chunk_size),
        infer=InferConfig(device=device, batch_size=batch_size, threads=threads, precision=precision),
        bands=parse_bands(bands),
        aoi=aoi,
        resample=resample,
        output_resolution=output_resolution,
        workers=workers,
        scheduler=scheduler,
        scheduler_file=scheduler_file,
        dashboard=dashboard,
        allow_no_crs=allow_no_crs,
        overwrite=overwrite,
        keep_zarr=keep_zarr,
        force=force,
        match_colors=match_colors,
        cog=cog,
        xyz=xyz,
        memory_budget=None if memory_budget == "auto" else parse_size(memory_budget),
    )
    with progress_bar(progress) as bar:
        result = render(cfg, on_progress=bar)
    _summary(result, [f"web tiles: {result.tiles_path}"] if result.tiles_path else None)
    if result.empty:
        raise EmptyResultWarning(
            f"{result.map_path} is empty (all transparent): every pixel of the input is masked (nodata, alpha or "
            "mask band) or outside --aoi; check the input's nodata value, --bands and --aoi"
        )


@app.command("predict")
def predict_cmd(
    in_dir: Path = typer.Argument(..., help="Folder of PNG/JPEG images (any size)."),
    out_dir: Path = typer.Argument(..., help="Output folder; one PNG per input, named by its stem."),
    model: Model = "sat2map",
    tile_size: TileSize = 256,
    overlap: Overlap = _TILES.overlap,
    batch_size: BatchSize = 8,
    device: Device = "auto",
    precision: Precision = "auto",
    overwrite: Overwrite = False,
) -> None:
    """Map a folder of plain images with the same tiling and blending as render."""
    from geopix.images import predict

    written = predict(
        in_dir,
        out_dir,
        model=model,
        tiles=TileConfig(tile_size, overlap, max(1024, tile_size)),
        infer=InferConfig(device=device, batch_size=batch_size, precision=precision),
        overwrite=overwrite,
        progress=lambda p: typer.echo(f"wrote {p}", err=True),
    )
    typer.echo(f"{len(written)} images written to {out_dir}")


@app.command("info")
def info_cmd(
    input: str = typer.Argument(
        ...,
        help="A raster: a path, URL, /vsi… name or STAC Item; or a model (sat2map, a .safetensors "
        "checkpoint) to show what its checkpoint says of itself.",
    ),
    model: Model = "sat2map",
    tile_size: TileSize = 256,
    overlap: Overlap = _TILES.overlap,
    bands: Bands = None,
    resample: Resample = True,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show size, CRS, ground resolution, tile count and an estimated render time (or describe a model)."""
    from geopix.models.registry import describe_model, is_model_name

    if is_model_name(input):
        data = describe_model(input)
    else:
        from geopix.describe import info
        from geopix.mosaic import resolve_input

        data = info(resolve_input(input), model, TileConfig(tile_size, overlap, 1024), parse_bands(bands), resample)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=str(input), show_header=False)
    for k, v in data.items():
        t.add_row(k, str(v))
    Console().print(t)


@app.command("demo")
def demo_cmd(
    output_dir: Path = typer.Option(Path("geopix-demo"), "--output", "-o", help="Where the map and tiles go."),
    model: Model = "sat2map",
    workers: Workers = None,
    progress: ShowProgress = True,
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Then show the result in the viewer."),
    open_browser: bool = typer.Option(False, "--open", help="Also open the viewer in the default web browser."),
    port: int = typer.Option(8000, "--port", help="Viewer port (0: any free port)."),
) -> None:
    """Render a real aerial scene shipped with geopix (Nairobi, OpenAerialMap CC BY 4.0) and show it in the viewer."""
    from geopix.demo import demo

    with progress_bar(progress) as bar:
        result = demo(output_dir, model=model, workers=workers, on_progress=bar)
    _summary(result.render, [f"input: {result.aerial}", f"web tiles: {result.tiles}"])
    if not serve:
        typer.echo(f"view it with: geopix serve {result.tiles} --source {result.aerial}")
        return
    from geopix.serve import ServeConfig
    from geopix.serve import serve as run_server

    def ready(url: str) -> None:
        typer.echo(f"viewer: {url} (the map over the aerial; the slider fades between them) — Ctrl-C to stop")
        if open_browser:
            import webbrowser

            webbrowser.open(url)

    with interrupted_says(f"stopped serving {result.tiles}"):
        run_server(ServeConfig(path=result.tiles, port=port, source=result.aerial), on_ready=ready)
