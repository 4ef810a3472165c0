"""``geopix render``, ``predict``, ``info`` and ``demo``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from geopix.cli import app
from geopix.config import InferConfig, RenderConfig, TileConfig
from geopix.errors import BandError

_TILES = TileConfig()  # the library's defaults, so the CLI cannot drift from them


def _bands(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise BandError(f"--bands {text!r} must be comma-separated band numbers, e.g. --bands 1,2,3") from None


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
    input: Path = typer.Argument(..., help="Input aerial GeoTIFF (uint8 or uint16, RGB)."),
    output_dir: Path = typer.Option(..., "--output", "-o", help="Output folder; map.tif is written there."),
    model: str = typer.Option("sat2map", "--model", "-m", help="Registry name (sat2map) or checkpoint path."),
    tile_size: int = typer.Option(256, help="Model window size in pixels (multiple of 256)."),
    overlap: int = typer.Option(
        _TILES.overlap, help="Overlap between neighbouring windows, blended smoothly (see benchmarks/README.md)."
    ),
    batch_size: int = typer.Option(8, help="Tiles per forward pass."),
    chunk_size: int = typer.Option(1024, help="Output block size in pixels (one Dask task, one zarr chunk)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    precision: str = typer.Option(
        "auto", help="fp32 | bf16 | fp16 | auto (bf16 where native: CUDA, CPUs with AVX512-BF16/AMX)."
    ),
    workers: int = typer.Option(
        None, help="Local Dask worker processes (default: one in-process worker, a thread per core)."
    ),
    threads: int = typer.Option(None, help="Torch threads per worker (default: cores / workers)."),
    scheduler: str = typer.Option(
        None, help="Existing Dask scheduler (tcp://host:port or a scheduler .json); 'sync' runs in-process."
    ),
    scheduler_file: Path = typer.Option(
        None, help="Scheduler file written by `dask scheduler --scheduler-file` (else $DASK_SCHEDULER_ADDRESS)."
    ),
    aoi: Path = typer.Option(None, help="GeoJSON area of interest (any CRS); limits the work and the output."),
    bands: str = typer.Option(None, help="1-based R,G,B band numbers, e.g. 1,2,3."),
    resample: bool = typer.Option(
        True, "--resample/--no-resample", help="Resample to the model's ground resolution before inference."
    ),
    output_resolution: str = typer.Option("source", help="source (the input grid) or model (the model's grid)."),
    allow_no_crs: bool = typer.Option(False, help="Accept a raster without CRS (output is not georeferenced)."),
    overwrite: bool = typer.Option(False, help="Replace an existing map.tif."),
    keep_zarr: bool = typer.Option(False, help="Keep the intermediate zarr block store."),
    force: bool = typer.Option(False, help="Discard an unfinished render of a different job in OUTPUT/map.zarr."),
    match_colors: bool = typer.Option(
        True, "--match-colors/--no-match-colors", help="Match the input's colours to the model's training imagery."
    ),
    cog: bool = typer.Option(True, "--cog/--no-cog", help="Write a Cloud-Optimized GeoTIFF with overviews."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    xyz: Path = typer.Option(
        None, help="Also write web tiles: a folder, or a name ending .pmtiles/.mbtiles (relative to -o)."
    ),
) -> None:
    """Render an aerial GeoTIFF into a seamless, georeferenced map raster (OUTPUT/map.tif)."""
    from geopix.pipeline import render

    cfg = RenderConfig(
        input=input,
        output_dir=output_dir,
        model=model,
        tiles=TileConfig(tile_size, overlap, chunk_size),
        infer=InferConfig(device=device, batch_size=batch_size, threads=threads, precision=precision),
        bands=_bands(bands),
        aoi=aoi,
        resample=resample,
        output_resolution=output_resolution,
        workers=workers,
        scheduler=scheduler,
        scheduler_file=scheduler_file,
        allow_no_crs=allow_no_crs,
        overwrite=overwrite,
        keep_zarr=keep_zarr,
        force=force,
        match_colors=match_colors,
        cog=cog,
        progress=progress,
        xyz=xyz,
    )
    result = render(cfg)
    _summary(result, [f"web tiles: {result.tiles_path}"] if result.tiles_path else None)


@app.command("predict")
def predict_cmd(
    in_dir: Path = typer.Argument(..., help="Folder of PNG/JPEG images (any size)."),
    out_dir: Path = typer.Argument(..., help="Output folder; one PNG per input, named by its stem."),
    model: str = typer.Option("sat2map", "--model", "-m", help="Registry name or checkpoint path."),
    tile_size: int = typer.Option(256, help="Model window size."),
    overlap: int = typer.Option(_TILES.overlap, help="Window overlap."),
    batch_size: int = typer.Option(8, help="Tiles per forward pass."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    precision: str = typer.Option("auto", help="fp32 | bf16 | fp16 | auto (bf16 where native)."),
    overwrite: bool = typer.Option(False, help="Replace existing outputs."),
) -> None:
    """Map a folder of plain images with the same tiling and blending as render."""
    from geopix.pipeline import predict

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
    input: Path = typer.Argument(..., help="A raster."),
    model: str = typer.Option("sat2map", "--model", "-m", help="Model used for the tile count and estimate."),
    tile_size: int = typer.Option(256),
    overlap: int = typer.Option(_TILES.overlap),
    bands: str = typer.Option(None, help="1-based R,G,B band numbers."),
    resample: bool = typer.Option(True, "--resample/--no-resample"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show size, CRS, ground resolution, tile count and an estimated render time."""
    from geopix.pipeline import info

    data = info(input, model, TileConfig(tile_size, overlap, 1024), _bands(bands), resample)
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
    output_dir: Path = typer.Option(Path("geopix-demo"), "--output", "-o", help="Where the demo scene and map go."),
    model: str = typer.Option("sat2map", "--model", "-m", help="Registry name or checkpoint path."),
    size: int = typer.Option(1024, help="Side of the synthetic scene in pixels."),
    workers: int = typer.Option(None, help="Local Dask worker processes."),
) -> None:
    """Make a synthetic georeferenced aerial scene and render it: a smoke run with no data."""
    from geopix.pipeline import demo

    result = demo(output_dir, model=model, size=size, workers=workers)
    _summary(result, [f"input: {Path(output_dir) / 'demo_aerial.tif'}"])
