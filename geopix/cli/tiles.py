"""``geopix tiles`` (web-tile pyramid) and ``geopix serve`` (local tile server and viewer)."""

from __future__ import annotations

from pathlib import Path

import typer

from geopix.cli import app


@app.command("tiles")
def tiles_cmd(
    map_path: Path = typer.Argument(..., help="Map GeoTIFF (e.g. OUT/map.tif from geopix render)."),
    out: Path = typer.Argument(..., help="Output: a folder ({z}/{x}/{y}.ext), or a path ending .pmtiles or .mbtiles."),
    zoom: str = typer.Option(None, "--zoom", help="Zoom range MIN-MAX (e.g. 12-18); default: from the raster."),
    fmt: str = typer.Option("png", "--format", help="Tile image format: png | webp | jpg (jpg: no transparency)."),
    tile_size: int = typer.Option(256, "--tile-size", help="Tile width in pixels: 256 or 512."),
    workers: int = typer.Option(None, "--workers", help="Local Dask worker processes (default: up to 2)."),
    scheduler: str = typer.Option(None, "--scheduler", help="Dask scheduler address or file, or 'sync'."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Cut a map GeoTIFF into a Web-Mercator XYZ pyramid (folder, PMTiles or MBTiles) with a TileJSON."""
    from geopix.pyramid import PyramidConfig, build_pyramid, parse_zoom

    minzoom, maxzoom = parse_zoom(zoom) if zoom else (None, None)
    config = PyramidConfig(minzoom=minzoom, maxzoom=maxzoom, format=fmt, tile_size=tile_size, overwrite=overwrite)
    result = build_pyramid(map_path, out, config, scheduler=scheduler, workers=workers, progress=progress)
    per_zoom = ", ".join(f"z{z}: {n}" for z, n in result.tiles_per_zoom.items())
    typer.echo(
        f"{result.tiles} tiles ({per_zoom}), {result.bytes / 1e6:.1f} MB, zoom {result.minzoom}-{result.maxzoom}, "
        f"{result.seconds:.1f} s → {result.path}"
    )


@app.command("serve")
def serve_cmd(
    path: Path = typer.Argument(..., help="Tile folder, .pmtiles, .mbtiles, or a GeoTIFF/COG (tiled on request)."),
    port: int = typer.Option(8000, "--port", help="TCP port (0: any free port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0: all)."),
    cors: bool = typer.Option(False, "--cors", help="Send Access-Control-Allow-Origin: * for other web apps."),
    source: Path = typer.Option(None, "--source", help="Aerial GeoTIFF to compare against in the viewer (swipe)."),
) -> None:
    """Serve tiles at /tiles/{z}/{x}/{y}.ext with a TileJSON and an offline viewer at /."""
    from geopix.deps import require
    from geopix.serve import serve

    if path.suffix.lower() in (".tif", ".tiff"):
        require("rio_tiler", f"serving {path.name} (a GeoTIFF tiled on request)")
    if source is not None:
        require("rio_tiler", "--source (the aerial tiled on request)")

    def ready(url: str) -> None:
        typer.echo(f"serving {path} at {url} (viewer) — Ctrl-C to stop", color=False)

    try:
        serve(path, host=host, port=port, cors=cors, source=source, on_ready=ready)
    except KeyboardInterrupt:
        typer.echo("stopped")
