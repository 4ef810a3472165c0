"""The web-tile commands: ``geopix tiles`` builds a pyramid, ``geopix serve`` shows it (tile server and viewer)."""

from __future__ import annotations

from pathlib import Path

import typer

from geopix.cli.app import app, interrupted_says
from geopix.cli.options import Dashboard, Overwrite, Scheduler, ShowProgress, Workers
from geopix.cli.progress import progress_bar


@app.command("tiles")
def tiles_cmd(
    map_path: str = typer.Argument(
        ..., help="Map GeoTIFF (e.g. OUT/map.tif from geopix render): a path, or an http(s)://, s3://, gs://, az:// URL"
    ),
    out: Path = typer.Argument(..., help="Output: a folder ({z}/{x}/{y}.ext), or a path ending .pmtiles or .mbtiles."),
    zoom: str = typer.Option(None, "--zoom", help="Zoom range MIN-MAX (e.g. 12-18); default: from the raster."),
    fmt: str = typer.Option("png", "--format", help="Tile image format: png | webp | jpg (jpg: no transparency)."),
    tile_size: int = typer.Option(256, "--tile-size", help="Tile width in pixels: 256 or 512."),
    workers: Workers = None,
    scheduler: Scheduler = None,
    dashboard: Dashboard = False,
    overwrite: Overwrite = False,
    progress: ShowProgress = True,
    base_url: str = typer.Option(
        None,
        "--base-url",
        help="URL the folder will be hosted at (e.g. https://example.org/tiles/): TileJSON tile URLs become absolute.",
    ),
) -> None:
    """Cut a map GeoTIFF into a Web-Mercator XYZ pyramid (folder, PMTiles or MBTiles) with a TileJSON."""
    from geopix.pyramid import PyramidConfig, build_pyramid, parse_zoom

    minzoom, maxzoom = parse_zoom(zoom) if zoom else (None, None)
    config = PyramidConfig(
        minzoom=minzoom, maxzoom=maxzoom, format=fmt, tile_size=tile_size, overwrite=overwrite, base_url=base_url
    )
    with progress_bar(progress) as bar, interrupted_says(f"no tiles written to {out}; rerun the same command"):
        result = build_pyramid(
            map_path, out, config, scheduler=scheduler, workers=workers, on_progress=bar, dashboard=dashboard
        )
    per_zoom = ", ".join(f"z{z}: {n}" for z, n in result.tiles_per_zoom.items())
    typer.echo(
        f"{result.tiles} tiles ({per_zoom}), {result.bytes / 1e6:.1f} MB, zoom {result.minzoom}-{result.maxzoom}, "
        f"{result.seconds:.1f} s → {result.path}"
    )


@app.command("serve")
def serve_cmd(
    path: str = typer.Argument(
        ...,
        help="Tile folder, .pmtiles, .mbtiles, or a GeoTIFF/COG (tiled on request); a .pmtiles or GeoTIFF may be "
        "an http(s)://, s3://, gs://, az:// URL.",
    ),
    port: int = typer.Option(8000, "--port", help="TCP port (0: any free port)."),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Interface to listen on. 0.0.0.0 exposes the tiles, unauthenticated and unencrypted, to every "
        "machine that can reach this one: use it only on a network you trust, with --allowed-host NAME.",
    ),
    cors: list[str] = typer.Option(
        None,
        "--cors",
        help="Origin allowed to fetch tiles from its pages, as browsers send it (https://app.example.org; "
        "repeatable; * for any), with preflight.",
    ),
    allowed_host: list[str] = typer.Option(
        None,
        "--allowed-host",
        help="Host name or address clients may use besides localhost and 127.0.0.1 (repeatable; * for any).",
    ),
    source: str = typer.Option(
        None, "--source", help="Aerial GeoTIFF (a path or URL) to compare against in the viewer."
    ),
) -> None:
    """Serve tiles at /tiles/{z}/{x}/{y}.ext with a TileJSON and an offline MapLibre viewer at /."""
    from geopix.serve import ServeConfig, serve
    from geopix.source import redact

    config = ServeConfig(
        path=path, host=host, port=port, source=source, cors=tuple(cors or ()), allowed_hosts=tuple(allowed_host or ())
    )

    def ready(url: str) -> None:
        typer.echo(f"serving {redact(path)} at {url} (viewer) — Ctrl-C to stop", color=False)

    with interrupted_says(f"stopped serving {path}"):
        serve(config, on_ready=ready)
