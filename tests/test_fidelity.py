"""Real-imagery evaluation: per-class counts on known pixels only, and the whole workflow end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely

from geopix import style
from geopix.cli import main
from geopix.data.rasterize import Labels, allowed_lut
from geopix.errors import GeopixError, VectorClassError
from geopix.fidelity import covered_groups, evaluate_sets, load_sets, read_sets, score_map
from geopix.testing import random_checkpoint, synthetic_aerial

from .conftest import SHARED, need_shared
from .test_vectors import to_wgs84, write_geojson

B, BG, ROAD = style.CLASS_NAMES.index("building"), 0, style.CLASS_NAMES.index("minor_road")


def test_only_classes_the_labels_cover_are_scored_on_known_pixels() -> None:
    lut = allowed_lut(frozenset({"building"}))
    top = np.array([[B, B, BG, BG, BG, BG]], np.uint8)
    allowed = lut[top]
    allowed[0, 5] = 0  # no data there
    labels = Labels(top, allowed)
    pred = np.array([[B, ROAD, B, BG, ROAD, B]], np.uint8)
    groups = covered_groups(frozenset({"building"}))
    assert groups == ["building"]
    s = score_map(pred, labels, groups).scores()["building"]
    # tp 1 (col 0), fn 1 (col 1), fp 1 (col 2); col 5 unknown.
    assert s["iou"] == pytest.approx(1 / 3) and s["precision"] == 0.5 and s["recall"] == 0.5
    assert s["pixels"] == 5


def test_road_truth_under_unlabelled_classes_is_not_scored() -> None:
    """With roads labelled and buildings not, a building pixel is still 'not a road' (roads draw on top)."""
    lut = allowed_lut(frozenset(style.ROAD_CLASSES))
    top = np.array([[ROAD, BG]], np.uint8)
    labels = Labels(top, lut[top])
    s = score_map(np.array([[ROAD, B]], np.uint8), labels, ["road"]).scores()["road"]
    assert s["iou"] == 1.0 and s["pixels"] == 2


def test_load_sets_resolves_paths(tmp_path: Path) -> None:
    (tmp_path / "sets.json").write_text(
        json.dumps(
            {"sets": [{"name": "x", "rasters": ["a.tif"], "layers": ["b.geojson=building"], "map": {"F": "park"}}]}
        )
    )
    (s,) = load_sets(tmp_path / "sets.json")
    assert s.rasters == (tmp_path / "a.tif",) and s.layers[0].cls == "building" and s.value_map == {"F": "park"}
    assert read_sets(tmp_path / "sets.json") == [s]


def test_read_sets_parses_the_plain_values_a_config_holds() -> None:
    (s,) = read_sets([{"name": "x", "rasters": ["a.tif"], "layers": ["b.gpkg:kind"], "covers": ["building"]}])
    assert s.rasters == (Path("a.tif"),) and s.layers[0].path == Path("b.gpkg") and s.layers[0].field == "kind"
    assert s.covers == frozenset({"building"}) and read_sets([s]) == [s]
    with pytest.raises(GeopixError, match="'rasters' is missing or malformed"):
        read_sets([{"name": "x", "layers": []}])
    with pytest.raises(VectorClassError, match="'forest' is not a class"):
        read_sets([{"name": "x", "rasters": [], "layers": ["b.gpkg=forest"]}])


def _tiny_osm(
    path: Path, origin: tuple[float, float], *, width_m: float, roads: int, houses: int, road_step_m: float = 100
) -> Path:
    """An OSM-tagged GeoJSON (EPSG:4326) of east-west residential roads and a row of 20 m houses."""
    x0, y0 = origin
    lines = [
        shapely.LineString([(x0, y0 - road_step_m * k), (x0 + width_m, y0 - road_step_m * k)])
        for k in range(1, roads + 1)
    ]
    boxes = [shapely.box(x0 + 40 * k, y0 - 60, x0 + 40 * k + 20, y0 - 40) for k in range(1, houses + 1)]
    tags = [{"highway": "residential"}] * roads + [{"building": "yes"}] * houses
    return write_geojson(path, [to_wgs84(g) for g in lines + boxes], tags)


def test_vectors_to_fine_tuned_model_to_render_to_eval(tmp_path: Path) -> None:
    """The tutorial's workflow on tiny data: dataset vectors → train --init-from → render → eval."""
    x0, y0, res = 500000.0, 5300000.0, 2.0
    aerial = synthetic_aerial(tmp_path / "ortho.tif", (384, 384), res=res, origin=(x0, y0))
    init = random_checkpoint(tmp_path / "init.safetensors", head="palette", ground_resolution_m=res)
    osm = _tiny_osm(tmp_path / "osm.geojson", (x0, y0), width_m=800, roads=6, houses=14)
    pairs = tmp_path / "pairs"
    args = ["dataset", "vectors", str(pairs), "--raster", str(aerial), "--layer", str(osm), "--model", str(init)]
    assert main(args) == 0
    assert main(args) == 10  # OutputExistsError: a second run into the same folder is refused
    assert len(list((pairs / "M").iterdir())) == 4
    run = tmp_path / "run"
    train_args = ["train", str(pairs), "--preset", "palette", "--init-from", str(init), "--ngf", "4"]
    train_args += ["--palette-size", "4", "--batch-size", "2", "--epochs", "1", "--epochs-decay", "0"]
    train_args += ["--threads", "1", "--device", "cpu", "--no-progress", "-o", str(run)]
    assert main(train_args) == 0
    model = run / "generator.safetensors"
    assert main(["render", str(aerial), "-o", str(tmp_path / "r"), "--model", str(model), "--scheduler", "sync",
                 "--no-progress", "--no-cog"]) == 0  # fmt: skip
    with rasterio.open(aerial) as a, rasterio.open(tmp_path / "r" / "map.tif") as m:
        assert (m.crs, m.transform, m.shape) == (a.crs, a.transform, a.shape)
        assert m.tags()["GEOPIX_MODEL"] == model.name  # drawn by the fine-tune, not the start model
    out = tmp_path / "eval"
    assert main(["eval", str(model), "--raster", str(aerial), "--layer", str(osm), "-o", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    scores = report["sets"]["ortho"]
    assert set(scores) == {"building", "road"}  # what the layer has; park and water are not scored
    for g in ("building", "road"):  # both classes are in the layer, so each IoU is a number, never None
        assert isinstance(scores[g]["iou"], float) and 0.0 <= scores[g]["iou"] <= 1.0 and scores[g]["pixels"] > 0
    assert (out / "ortho" / "ortho" / "side_by_side.png").exists()


@pytest.mark.slow
def test_vectors_workflow_renders_with_the_best_model_on_the_held_out_scene(tmp_path: Path) -> None:
    """workflows/vectors_to_model.sh end to end (sat2map, one epoch): the map is drawn by whichever
    of sat2map, the fine-tune and their average scores best on the held-out scene."""
    x0, y0 = 500000.0, 5300000.0
    ortho = synthetic_aerial(tmp_path / "ortho.tif", (192, 192), res=2.0, origin=(x0, y0))
    held = synthetic_aerial(tmp_path / "held.tif", (192, 192), res=2.0, origin=(x0, y0), seed=1)
    osm = _tiny_osm(tmp_path / "osm.geojson", (x0, y0), width_m=400, roads=4, houses=8, road_step_m=90)
    out = tmp_path / "region"
    env = {k: v for k, v in os.environ.items() if k != "MAPS"}
    env |= {"STEPS": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    script = Path(__file__).parents[1] / "workflows" / "vectors_to_model.sh"
    run = subprocess.run(["bash", str(script), str(ortho), str(osm), str(held), str(out)], env=env,
                         capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]

    def held_out_mean(folder: str) -> float:
        means = [v for v in json.loads((out / folder / "report.json").read_text())["mean"].values() if v is not None]
        return sum(means) / len(means) if means else 0.0

    ranked = [  # ties go to the model that changes least
        ("sat2map", "eval_before"),
        (str(out / "model" / "averaged.safetensors"), "eval_averaged"),
        (str(out / "model" / "generator.safetensors"), "eval_after"),
    ]
    best = max(ranked, key=lambda c: held_out_mean(c[1]))[0]
    assert f"rendering with {best} " in run.stdout
    assert (out / "map" / "map.tif").exists() and (out / "map" / "tiles.pmtiles").exists()


@pytest.mark.slow
def test_shipped_model_on_new_brunswick(tmp_path: Path) -> None:
    real = need_shared(SHARED / "data" / "real" / "new_brunswick")
    sets = load_sets_from_dict(real)
    report = evaluate_sets(model="sat2map", sets=sets, out_dir=tmp_path)
    scores = report.sets["nb"]
    assert set(scores) == {"building", "road", "water"}  # the labels' classes only (forest is unknown)
    assert scores["water"]["iou"] > 0.5  # the lake is drawn as water


def load_sets_from_dict(real: Path):
    doc = {
        "sets": [
            {
                "name": "nb",
                "rasters": sorted(p.name for p in real.glob("*.tif")),
                "layers": ["BakerLake_2017_clipped.gpkg:Niveau_3"],
            }
        ]
    }
    path = real / "sets.json"
    if path.exists():
        return load_sets(path)
    import tempfile

    tmp = Path(tempfile.mkdtemp())
    for p in real.iterdir():
        (tmp / p.name).symlink_to(p)
    (tmp / "sets.json").write_text(json.dumps(doc))
    return load_sets(tmp / "sets.json")
