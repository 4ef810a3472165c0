"""Vector labels → style-classed pixels: exact areas, road widths, reprojection, repairs, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from pyproj import CRS, Transformer
from rasterio.transform import from_origin

from geopix import style
from geopix.data.rasterize import ALL_CLASSES, allowed_lut, rasterize_labels
from geopix.data.vector_pairs import make_vector_pairs
from geopix.data.vectors import LayerSpec, read_layers
from geopix.errors import MissingCRSError, VectorClassError, VectorCRSError, VectorError, VectorOverlapError
from geopix.testing import synthetic_aerial

UTM = CRS.from_epsg(32633)
X0, Y0, RES, N = 500000.0, 5300000.0, 2.0, 100  # a 200 m square grid, 2 m pixels
BOUNDS = (X0, Y0 - N * RES, X0 + N * RES, Y0)
TRANSFORM = from_origin(X0, Y0, RES, RES)
BUILDING = style.CLASS_NAMES.index("building")
MINOR = style.CLASS_NAMES.index("minor_road")


def write_geojson(path: Path, geoms: list, props: list[dict] | None = None, crs: str | None = "EPSG:4326") -> Path:
    """A GeoJSON FeatureCollection; ``crs`` other than 4326 goes in the (legacy) crs member GDAL reads."""
    feats = [
        {"type": "Feature", "geometry": shapely.geometry.mapping(g), "properties": (props or [{}] * len(geoms))[i]}
        for i, g in enumerate(geoms)
    ]
    doc: dict = {"type": "FeatureCollection", "features": feats}
    if crs and crs != "EPSG:4326":
        doc["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(doc))
    return path


def to_wgs84(geom):
    tr = Transformer.from_crs(UTM, 4326, always_xy=True)
    return shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def labels_of(specs: list[LayerSpec], **kw):
    features, stats = read_layers(specs, UTM, BOUNDS, **kw)
    return rasterize_labels(features, TRANSFORM, (N, N)), features, stats


def test_polygon_areas_give_exact_pixel_counts(tmp_path: Path) -> None:
    # 20 m × 20 m and 10 m × 40 m on pixel edges: 100 and 100 pixels of 4 m².
    a = shapely.box(X0 + 10, Y0 - 30, X0 + 30, Y0 - 10)
    b = shapely.box(X0 + 100, Y0 - 150, X0 + 110, Y0 - 110)
    path = write_geojson(tmp_path / "b.geojson", [a, b], crs="EPSG:32633")
    labels, features, _ = labels_of([LayerSpec.parse(f"{path}=building")])
    assert (labels.top == BUILDING).sum() == 100 + 100
    assert features.covers == frozenset({"building"})
    # Outside the buildings: "not a building", every other class still possible.
    outside = labels.allowed[labels.top == 0]
    assert set(np.unique(outside)) == {ALL_CLASSES & ~(1 << BUILDING)}


def test_road_of_width_w_is_w_over_res_pixels_wide(tmp_path: Path) -> None:
    y = Y0 - 101.0  # a pixel-centre row: the band of width W covers W / RES centres
    line = shapely.LineString([(X0 - 50, y), (X0 + N * RES + 50, y)])
    path = write_geojson(tmp_path / "r.geojson", [line], [{"highway": "residential", "lanes": "4"}], crs="EPSG:32633")
    labels, _, _ = labels_of([LayerSpec.parse(str(path))])
    width = style.road_width_m("minor_road", 4)
    assert width == 4 * style.LANE_WIDTH_M == 18.0
    column = labels.top[:, N // 2]
    assert (column == MINOR).sum() == width / RES
    # No lane count: the class's drawn width (13 m: the pixel centres within 6.5 m of the line, 7).
    path2 = write_geojson(tmp_path / "r2.geojson", [line], [{"highway": "primary"}], crs="EPSG:32633")
    labels2, _, _ = labels_of([LayerSpec.parse(str(path2))])
    arterial = style.CLASS_NAMES.index("arterial")
    half = style.BY_NAME["arterial"].width_m / 2
    assert (labels2.top[:, N // 2] == arterial).sum() == 2 * int(half // RES) + 1 == 7


def test_wgs84_vectors_land_on_the_right_utm_pixels(tmp_path: Path) -> None:
    box = shapely.box(X0 + 40, Y0 - 80, X0 + 60, Y0 - 40)  # rows 20..39, cols 20..29
    path = write_geojson(tmp_path / "w.geojson", [to_wgs84(box)])
    labels, _, _ = labels_of([LayerSpec.parse(f"{path}=building")])
    rows, cols = np.nonzero(labels.top == BUILDING)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (20, 39, 20, 29)
    assert len(rows) == 200


def test_invalid_geometries_are_repaired_and_counted(tmp_path: Path) -> None:
    bowtie = shapely.Polygon([(X0 + 20, Y0 - 20), (X0 + 60, Y0 - 60), (X0 + 60, Y0 - 20), (X0 + 20, Y0 - 60)])
    assert not bowtie.is_valid
    ok = shapely.box(X0 + 100, Y0 - 120, X0 + 120, Y0 - 100)
    path = write_geojson(tmp_path / "inv.geojson", [bowtie, ok], crs="EPSG:32633")
    labels, _, stats = labels_of([LayerSpec.parse(f"{path}=building")])
    assert stats.repaired == 1
    assert "1 invalid geometries repaired" in " ".join(stats.warnings())
    # The repaired bowtie is two triangles of 400 m² each (200 pixels in all, give or take the diagonal).
    assert abs(int((labels.top == BUILDING).sum()) - 100 - 200) <= 20


def test_draw_order_and_partial_coverage() -> None:
    lut = allowed_lut(frozenset({"building"}))
    # No road crosses a building (else "road" would satisfy a building-only layer inside and out);
    # background may be anything but building.
    assert lut[BUILDING] == 1 << BUILDING
    assert lut[0] == ALL_CLASSES & ~(1 << BUILDING)
    # A water pixel may still be under a bridge nobody labelled.
    water = style.CLASS_NAMES.index("water")
    roads = sum(1 << style.CLASS_NAMES.index(n) for n in style.ROAD_CLASSES)
    assert allowed_lut(frozenset({"water"}))[water] == (1 << water) | roads | (1 << BUILDING)
    full = allowed_lut(frozenset(style.CLASS_NAMES[1:]))
    assert [int(v) for v in full] == [1 << i for i in range(len(style.CLASSES))]


def test_field_values_and_unknown_values_are_listed(tmp_path: Path) -> None:
    geoms = [shapely.box(X0 + 10 * i, Y0 - 30, X0 + 10 * i + 8, Y0 - 10) for i in range(4)]
    props = [{"kind": "Building"}, {"kind": "Hydro"}, {"kind": "Forest"}, {"kind": "Forest"}]
    path = write_geojson(tmp_path / "f.geojson", geoms, props, crs="EPSG:32633")
    labels, features, stats = labels_of([LayerSpec.parse(f"{path}:kind")])
    assert stats.unknown_values == {"kind=Forest": 2}
    assert "kind=Forest (2)" in " ".join(stats.warnings())
    assert features.covers == frozenset({"building", "water"})
    assert (labels.allowed == 0).sum() == 2 * 4 * 10  # the forests are unknown, not background
    _, features2, stats2 = labels_of([LayerSpec.parse(f"{path}:kind")], value_map={"forest": "park"})
    assert not stats2.unknown_values and "park" in features2.covers


def test_osm_pbf_through_gdal(tmp_path: Path) -> None:
    osmium = pytest.importorskip("osmium")
    from osmium.osm.mutable import Node, Way

    tr = Transformer.from_crs(UTM, 4326, always_xy=True)
    pts = [
        (X0 + 20, Y0 - 20),
        (X0 + 60, Y0 - 20),
        (X0 + 60, Y0 - 60),
        (X0 + 20, Y0 - 60),
        (X0 - 10, Y0 - 151),
        (X0 + 250, Y0 - 151),
    ]
    path = tmp_path / "x.osm.pbf"
    # No metadata: GDAL's parser rejects the empty version/timestamp blocks of objects made here.
    w = osmium.SimpleWriter(osmium.io.File(str(path), "pbf,add_metadata=false"))
    for i, (x, y) in enumerate(pts, start=1):
        w.add_node(Node(id=i, location=tr.transform(x, y), tags={}))
    w.add_way(Way(id=100, nodes=[1, 2, 3, 4, 1], tags={"building": "yes"}))
    w.add_way(Way(id=101, nodes=[5, 6], tags={"highway": "residential"}))
    w.close()
    labels, features, _ = labels_of([LayerSpec.parse(str(path))])
    assert features.covers == frozenset(style.CLASS_NAMES[1:])  # an extract labels every class
    assert abs(int((labels.top == BUILDING).sum()) - 400) <= 24  # 40 m square (OSM stores 1e-7 degrees)
    assert (labels.top[:, 50] == MINOR).sum() in (4, 5)  # 9 m at 2 m/px, the line 1e-7° from a pixel centre
    # A PBF with nothing geopix draws: one error, naming what it looks for.
    empty = tmp_path / "none.osm.pbf"
    w = osmium.SimpleWriter(osmium.io.File(str(empty), "pbf,add_metadata=false"))
    for i, (x, y) in enumerate(pts[:2], start=1):
        w.add_node(Node(id=i, location=tr.transform(x, y), tags={}))
    w.add_way(Way(id=100, nodes=[1, 2], tags={"barrier": "fence"}))
    w.close()
    with pytest.raises(VectorClassError, match=r"no feature .* has a tag geopix draws"):
        read_layers([LayerSpec.parse(str(empty))], UTM, BOUNDS)


@pytest.mark.filterwarnings("ignore:'crs' was not provided:UserWarning")  # the file is made without one on purpose
def test_bad_vector_input(tmp_path: Path) -> None:
    import pyogrio

    box = shapely.box(X0 + 10, Y0 - 30, X0 + 30, Y0 - 10)
    # No CRS (a shapefile without .prj): refused with the fix.
    shp = tmp_path / "nocrs.shp"
    pyogrio.raw.write(
        shp,
        np.array([shapely.to_wkb(box)], dtype=object),
        [],
        [],
        geometry_type="Polygon",
        crs=None,
        driver="ESRI Shapefile",
    )
    with pytest.raises(VectorCRSError, match="has no CRS; assign one"):
        read_layers([LayerSpec.parse(f"{shp}=building")], UTM, BOUNDS)
    # Far away: does not overlap.
    far = write_geojson(tmp_path / "far.geojson", [shapely.box(0, 0, 1, 1)])
    with pytest.raises(VectorOverlapError, match="overlaps the raster"):
        read_layers([LayerSpec.parse(f"{far}=building")], UTM, BOUNDS)
    # Empty layer next to a good one: a counted warning; alone: an error.
    empty = write_geojson(tmp_path / "empty.geojson", [])
    good = write_geojson(tmp_path / "good.geojson", [box], crs="EPSG:32633")
    _, stats = read_layers([LayerSpec.parse(f"{empty}=water"), LayerSpec.parse(f"{good}=building")], UTM, BOUNDS)
    assert stats.empty_layers and "has no features" in " ".join(stats.warnings())
    with pytest.raises(VectorError):
        read_layers([LayerSpec.parse(f"{empty}=water")], UTM, BOUNDS)
    with pytest.raises(VectorClassError, match="not a class"):
        LayerSpec.parse(f"{good}=forest")
    with pytest.raises(VectorError, match="does not exist"):
        read_layers([LayerSpec.parse(str(tmp_path / "missing.gpkg"))], UTM, BOUNDS)


def test_vector_pairs_layout_and_nothing_partial(tmp_path: Path, checkpoint: Path) -> None:
    aerial = synthetic_aerial(tmp_path / "a.tif", (300, 300), res=2.0, origin=(X0, Y0))
    box = shapely.box(X0 + 100, Y0 - 200, X0 + 140, Y0 - 100)
    layer = write_geojson(tmp_path / "b.geojson", [to_wgs84(box)])
    out = tmp_path / "pairs"
    result = make_vector_pairs(rasters=[aerial], layers=[f"{layer}=building"], out_dir=out, model=str(checkpoint))
    assert result.pairs == 4 and result.resolution_m == 2.0  # the checkpoint's resolution
    assert result.class_pixels["building"] > 0
    names = sorted(p.name for p in (out / "A").iterdir())
    assert names == sorted(p.name for p in (out / "M").iterdir()) == sorted(p.name for p in (out / "B").iterdir())
    assert json.loads((out / "dataset.json").read_text())["resolution_m"] == 2.0
    with pytest.raises(Exception, match="exists"):
        make_vector_pairs(
            rasters=[aerial], layers=[LayerSpec.parse(f"{layer}=building")], out_dir=out, model=str(checkpoint)
        )
    # A failure half-way leaves neither OUT nor OUT.partial behind.
    far = write_geojson(tmp_path / "far.geojson", [shapely.box(0, 0, 1, 1)])
    bad = tmp_path / "bad"
    with pytest.raises(VectorOverlapError):
        make_vector_pairs(
            rasters=[aerial], layers=[LayerSpec.parse(f"{far}=building")], out_dir=bad, model=str(checkpoint)
        )
    assert not bad.exists() and not bad.with_name("bad.partial").exists()
    # A raster without CRS: the raster error.
    nocrs = synthetic_aerial(tmp_path / "nocrs.tif", (300, 300), crs=None)
    with pytest.raises(MissingCRSError):
        make_vector_pairs(
            rasters=[nocrs],
            layers=[LayerSpec.parse(f"{layer}=building")],
            out_dir=tmp_path / "x",
            model=str(checkpoint),
        )
