"""Options several commands share, declared once (``Annotated`` aliases), so their names, defaults'
help and parsing cannot drift apart between commands.  Values are checked by the configs they go
into (``geopix.config``), not here."""

from __future__ import annotations

from typing import Annotated

import typer

from geopix.errors import BandError

Model = Annotated[str, typer.Option("--model", "-m", help="Registry name (sat2map) or checkpoint path.")]
TileSize = Annotated[int, typer.Option("--tile-size", help="Model window size in pixels (multiple of 256).")]
Overlap = Annotated[
    int,
    typer.Option(
        "--overlap", help="Overlap between neighbouring windows, blended smoothly (see benchmarks/README.md)."
    ),
]
BatchSize = Annotated[
    int,
    typer.Option(
        "--batch-size", help="Tiles (eval: images) per forward pass; render and predict at int8 pass at most 2."
    ),
]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N.")]
Precision = Annotated[
    str,
    typer.Option(
        "--precision",
        help="fp32 | bf16 | fp16 | int8 | auto (int8 on AVX2/VNNI/AMX CPUs with geopix[int8] installed when the "
        "model's int8 passes its quality gate, else bf16 where native: CUDA, CPUs with AVX512-BF16/AMX).",
    ),
]
Workers = Annotated[
    int | None,
    typer.Option("--workers", help="Local Dask worker processes (default: one in-process worker, a thread per core)."),
]
Dashboard = Annotated[
    bool,
    typer.Option(
        "--dashboard",
        help="Serve the local cluster's Dask dashboard (on 127.0.0.1) and print its link; without it the "
        "cluster starts 0.5 s sooner. A remote cluster's link is printed either way.",
    ),
]
Threads = Annotated[int | None, typer.Option("--threads", help="Torch threads per worker (default: cores / workers).")]
Scheduler = Annotated[
    str | None,
    typer.Option(
        "--scheduler", help="Existing Dask scheduler (tcp://host:port or a scheduler .json); 'sync' runs in-process."
    ),
]
Bands = Annotated[str | None, typer.Option("--bands", help="1-based R,G,B band numbers, e.g. 1,2,3.")]
Resample = Annotated[
    bool, typer.Option("--resample/--no-resample", help="Resample to the model's ground resolution before inference.")
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]
ShowProgress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")]
SourceResolution = Annotated[
    float | None,
    typer.Option(
        "--source-resolution",
        help="Metres per pixel of the dataset images as stored (default: 0.9 for the maps layout, else 1.0).",
    ),
]
Layers = Annotated[
    list[str],
    typer.Option(
        "--layer",
        help="Vector labels: PATH (classes from OSM/SpaceNet tags), PATH=CLASS (all one class) or PATH:FIELD (repeat).",
    ),
]
ValueMap = Annotated[
    list[str] | None, typer.Option("--map", help="A field or tag value → class, VALUE=CLASS (repeat).")
]


def parse_bands(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise BandError(f"--bands {text!r} must be comma-separated band numbers, e.g. --bands 1,2,3") from None


# The options both dataset builders (dataset vectors, dataset labels) cut their pairs by.
PairResolution = Annotated[
    float | None, typer.Option("--resolution", help="Metres per pixel of the pairs (default: the model's).")
]
PairTile = Annotated[int, typer.Option("--tile", help="Tile side in pixels.")]
PairStride = Annotated[int | None, typer.Option("--stride", help="Step between tiles (default: half a tile).")]
MatchColors = Annotated[bool, typer.Option("--match-colors/--no-match-colors", help="Colour-match as render does.")]
