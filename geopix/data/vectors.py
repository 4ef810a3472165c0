"""Read vector layers into style-classed features in a raster's CRS.

GeoJSON, GeoPackage and Shapefile go through pyogrio (GDAL); ``.osm.pbf`` through pyosmium,
chosen over GDAL's OSM driver by measuring (``benchmarks/bench_osm_read.py``): the GDAL that
pyogrio's wheel bundles failed to parse zlib-compressed PBF blocks written by libosmium (the
library Geofabrik's extracts are made with); pyosmium reads them.  Each feature gets a style
class (:mod:`geopix.style`) from a fixed class, a field's values, or the tags geopix knows (OSM
``building``/``highway``/``natural``/``water``/``waterway``/``leisure``/``landuse``, SpaceNet
``road_type``/``lane_number``).  Lines become road polygons of the style's width, buffered in
the local UTM zone so metres are metres whatever the CRSs; everything is reprojected to the
raster's CRS with pyproj and invalid geometries are repaired with shapely's ``make_valid``
(and counted).  What could not be classed is listed, not guessed.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from pyproj import CRS, Transformer
from pyproj.aoi import AreaOfInterest
from pyproj.database import query_utm_crs_info

from geopix import style
from geopix.errors import VectorClassError, VectorCRSError, VectorError, VectorOverlapError

log = logging.getLogger(__name__)

#: A feature whose class is this is not drawn and leaves its area unknown (e.g. forest: park or not).
IGNORE = "ignore"

# OSM tag values → style class.  Footways and the like are not drawn by the style at this scale.
_HIGHWAY = {
    **dict.fromkeys(("motorway", "trunk", "motorway_link", "trunk_link"), "highway"),
    **dict.fromkeys(("primary", "secondary", "primary_link", "secondary_link"), "arterial"),
    **dict.fromkeys(
        ("tertiary", "tertiary_link", "residential", "unclassified", "service", "living_street", "road"),
        "minor_road",
    ),
}
_NOT_DRAWN_HIGHWAY = {"footway", "path", "cycleway", "steps", "track", "pedestrian", "bridleway", "corridor"}
_PARK = {"park", "garden", "playground", "recreation_ground", "golf_course", "pitch", "nature_reserve", "dog_park"}
_PARK_LANDUSE = {"grass", "recreation_ground", "village_green", "cemetery"}
_WATER_LANDUSE = {"reservoir", "basin"}
# SpaceNet road_type: 1 motorway, 2 primary, 3 secondary, 4 tertiary, 5 residential, 6 unclassified, 7 cart track.
_SPACENET = {"1": "highway", "2": "arterial", "3": "arterial", "4": "minor_road", "5": "minor_road", "6": "minor_road"}
_SPACENET_NOT_DRAWN = {"7"}
#: Values of a generic class field, compared case-insensitively, with the style's names added.
ALIASES = {
    "building": "building",
    "buildings": "building",
    "road": "minor_road",
    "roads": "minor_road",
    "street": "minor_road",
    "hydro": "water",
    "water": "water",
    "park": "park",
    "green": "park",
    **{n: n for n in style.CLASS_NAMES},
}


@dataclass(frozen=True, slots=True)
class LayerSpec:
    """One vector source: ``PATH`` (classes from known tags), ``PATH=CLASS`` or ``PATH:FIELD``."""

    path: Path
    cls: str | None = None  # every feature is this class
    field: str | None = None  # a field whose values name classes (see ALIASES, --map)
    layer: str | None = None  # a layer name inside the file (default: all layers)

    @classmethod
    def parse(cls, text: str) -> LayerSpec:
        if "=" in text:
            path, name = text.rsplit("=", 1)
            name = name.strip()
            if name not in (*style.CLASS_NAMES, IGNORE):
                raise VectorClassError(
                    f"--layer {text!r}: {name!r} is not a class; use one of {', '.join(style.CLASS_NAMES)} or {IGNORE}"
                )
            return cls(Path(path), cls=name)
        head, sep, tail = text.rpartition(":")
        if sep and head and not Path(text).exists() and "/" not in tail and "\\" not in tail:
            return cls(Path(head), field=tail)
        return cls(Path(text))


def layer_specs(layers: Iterable[str | Path | LayerSpec], root: Path | None = None) -> list[LayerSpec]:
    """The layers a config names (``PATH``, ``PATH=CLASS``, ``PATH:FIELD``), parsed; relative paths
    are taken relative to ``root`` when given (a sets file's folder).  Parsed specs pass as they are."""
    return [
        x if isinstance(x, LayerSpec) else LayerSpec.parse(str(root / x) if root is not None else str(x))
        for x in layers
    ]


@dataclass
class ReadStats:
    """What reading the layers did, for the user: every repair and skip is counted."""

    features: int = 0
    used: int = 0
    repaired: int = 0
    empty: int = 0
    outside: int = 0
    not_drawn: int = 0
    unknown_values: Counter = field(default_factory=Counter)  # "field=value" → count
    empty_layers: list[str] = field(default_factory=list)
    missing_overlap: list[str] = field(default_factory=list)

    def warnings(self) -> list[str]:
        out = []
        if self.repaired:
            out.append(f"{self.repaired} invalid geometries repaired (shapely make_valid)")
        if self.empty:
            out.append(f"{self.empty} empty geometries skipped")
        if self.unknown_values:
            listed = ", ".join(f"{k} ({n})" for k, n in self.unknown_values.most_common())
            out.append(f"unknown class values, areas left unknown: {listed}; map them with --map VALUE=CLASS")
        for name in self.empty_layers:
            out.append(f"layer {name} has no features")
        for name in self.missing_overlap:
            out.append(f"layer {name} does not overlap the raster")
        return out


@dataclass(frozen=True)
class Features:
    """Style-classed polygons in the raster's CRS, and which classes the layers cover.

    ``covers``: classes whose absence is known (a layer of that class was given), so pixels no
    feature of theirs covers are *not* that class.  Any other class may be anywhere.
    """

    geoms: np.ndarray  # shapely polygons/multipolygons, raster CRS
    classes: np.ndarray  # style class index per geometry, or -1 for IGNORE
    covers: frozenset[str]


def _tags(fields: dict[str, object]) -> dict[str, str]:
    """A feature's attributes as tags; GDAL's OSM driver puts the rare ones in ``other_tags``."""
    tags = {k.lower(): str(v) for k, v in fields.items() if v is not None and str(v) != "" and k != "other_tags"}
    other = fields.get("other_tags")
    if other:
        tags.update({k: v for k, v in re.findall(r'"([^"]+)"=>"([^"]*)"', str(other))})
    return tags


def class_from_tags(tags: dict[str, str]) -> tuple[str | None, float | None, str | None]:
    """(class, lanes, unknown ``key=value``) from OSM or SpaceNet tags; class None: not drawn."""
    lanes = _lanes(tags)
    if "road_type" in tags:
        value = tags["road_type"]
        if value in _SPACENET:
            return _SPACENET[value], lanes, None
        return None, None, None if value in _SPACENET_NOT_DRAWN else f"road_type={value}"
    if "highway" in tags:
        value = tags["highway"]
        if value in _HIGHWAY:
            return _HIGHWAY[value], lanes, None
        return None, None, None if value in _NOT_DRAWN_HIGHWAY else f"highway={value}"
    if tags.get("building", "no") != "no":
        return "building", None, None
    if tags.get("natural") == "water" or "water" in tags or tags.get("waterway") == "riverbank":
        return "water", None, None
    if tags.get("landuse") in _WATER_LANDUSE:
        return "water", None, None
    if tags.get("leisure") in _PARK or tags.get("landuse") in _PARK_LANDUSE:
        return "park", None, None
    return None, None, None  # a feature with no tag we draw (an admin boundary, a shop): not an error


def utm_crs(lon: float, lat: float) -> CRS:
    """The UTM zone (WGS84) of a point: where a metre of buffer is a metre on the ground."""
    info = query_utm_crs_info(datum_name="WGS 84", area_of_interest=AreaOfInterest(lon, lat, lon, lat))
    return CRS.from_epsg(info[0].code)


def _transform(geoms: np.ndarray, src: CRS, dst: CRS) -> np.ndarray:
    if src == dst or len(geoms) == 0:
        return geoms
    tr = Transformer.from_crs(src, dst, always_xy=True)
    return shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def _is_osm(path: Path) -> bool:
    return path.name.endswith((".pbf", ".osm", ".osm.bz2", ".osm.gz"))


def _layer_names(path: Path, spec: LayerSpec) -> list[str | None]:
    import pyogrio

    if spec.layer is not None:
        return [spec.layer]
    if _is_osm(path):
        return [None]
    names = [str(n) for n, _ in pyogrio.list_layers(path)]
    return names if len(names) > 1 else [None]


#: OSM keys that can give a feature a style class (a pre-filter: the rest of an extract is skipped).
OSM_KEYS = ("building", "highway", "natural", "water", "waterway", "leisure", "landuse")


def read_osm(path: Path, bbox: tuple[float, float, float, float]) -> tuple[np.ndarray, list[dict[str, str]]]:
    """Geometries (EPSG:4326) and tags of the OSM objects geopix may draw inside ``bbox``.

    pyosmium assembles ways and multipolygon relations into areas; an open way becomes a
    line (a road), a closed one an area unless it is a road.
    """
    import osmium

    factory = osmium.geom.WKBFactory()
    wkbs, rows = [], []
    try:
        fp = (
            osmium.FileProcessor(str(path))
            .with_locations()
            .with_areas()
            .with_filter(osmium.filter.KeyFilter(*OSM_KEYS))
        )
        for obj in fp:
            if obj.is_area():
                tags = {t.k: t.v for t in obj.tags}
                if "highway" in tags and tags.get("area") != "yes":
                    continue  # a closed road is a loop, drawn from its way
                wkb = factory.create_multipolygon(obj)
            elif obj.is_way():
                tags = {t.k: t.v for t in obj.tags}
                if obj.is_closed() and "highway" not in tags and "waterway" not in tags:
                    continue  # its area comes separately
                wkb = factory.create_linestring(obj)
            else:
                continue
            wkbs.append(wkb)
            rows.append(tags)
    except (RuntimeError, osmium.InvalidLocationError) as exc:
        raise VectorError(f"cannot read OSM file {path} ({exc}); is it a complete .osm.pbf extract?") from exc
    geoms = shapely.from_wkb(np.array(wkbs, dtype=object)) if wkbs else np.array([], dtype=object)
    inside = shapely.intersects(geoms, shapely.box(*bbox))
    return geoms[inside], [r for r, k in zip(rows, inside, strict=True) if k]


def read_layers(
    specs: list[LayerSpec],
    raster_crs: CRS,
    raster_bounds: tuple[float, float, float, float],
    value_map: dict[str, str] | None = None,
    covers: frozenset[str] | None = None,
) -> tuple[Features, ReadStats]:
    """Read ``specs`` into :class:`Features` clipped to ``raster_bounds`` (in ``raster_crs``).

    ``value_map`` maps field values (any case) to classes, before :data:`ALIASES`.
    ``covers`` overrides which classes count as fully labelled; by default those with a
    feature in some layer (any road class covers every road class), and for OSM extracts
    (``.osm.pbf``) every class, since an extract holds everything OSM maps.
    """
    import pyogrio
    from pyogrio.raw import read

    value_map = {k.lower(): v for k, v in (value_map or {}).items()}
    for v in value_map.values():
        if v not in (*style.CLASS_NAMES, IGNORE):
            raise VectorClassError(f"--map ...={v}: {v!r} is not a class; use {', '.join(style.CLASS_NAMES)}")
    stats = ReadStats()
    centre = _transform(np.array([shapely.box(*raster_bounds).centroid]), raster_crs, CRS.from_epsg(4326))[0]
    metric = utm_crs(centre.x, centre.y)
    out_geoms: list[np.ndarray] = []
    out_classes: list[np.ndarray] = []
    seen: set[str] = set()
    osm = False
    for spec in specs:
        path = spec.path
        if not path.exists():
            raise VectorError(f"vector layer {path} does not exist; check the path")
        osm = osm or _is_osm(path)
        try:
            layers = _layer_names(path, spec)
        except Exception as exc:  # pyogrio raises DataSourceError and friends
            raise VectorError(
                f"{path} is not a vector file GDAL can read ({exc}); pass GeoJSON, GPKG, SHP or PBF"
            ) from exc
        for layer in layers:
            label = f"{path}" + (f" ({layer})" if layer else "")
            window = shapely.box(*raster_bounds).segmentize(max(raster_bounds[2] - raster_bounds[0], 1) / 20)
            if _is_osm(path):
                crs = CRS.from_epsg(4326)
                bbox = _transform(np.array([window]), raster_crs, crs)[0].bounds
                geoms, rows = read_osm(path, bbox)
                names = sorted({k for r in rows for k in r})
                data = [[r.get(n) for r in rows] for n in names]
            else:
                info = pyogrio.read_info(path, layer=layer)
                if info["crs"] is None:
                    raise VectorCRSError(
                        f"{label} has no CRS; assign one (ogr2ogr -a_srs EPSG:XXXX out.gpkg {path.name})"
                    )
                crs = CRS.from_user_input(info["crs"])
                bbox = _transform(np.array([window]), raster_crs, crs)[0].bounds
                if info["features"] == 0:
                    stats.empty_layers.append(label)
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    meta, _, wkb, data = read(path, layer=layer, bbox=bbox)
                names = list(meta["fields"])
                geoms = shapely.from_wkb(wkb)
            if len(geoms) == 0:
                stats.missing_overlap.append(label)
                continue
            if spec.field is not None and spec.field not in names:
                raise VectorClassError(f"{label} has no field {spec.field!r}; its fields are {', '.join(names)}")
            stats.features += len(geoms)
            keep, classes, widths = [], [], []
            for i, g in enumerate(geoms):
                if g is None or g.is_empty:
                    stats.empty += 1
                    continue
                fields = {n: data[j][i] for j, n in enumerate(names)}
                cls, lanes, unknown = _feature_class(spec, fields, value_map)
                if unknown is not None:
                    stats.unknown_values[unknown] += 1
                    cls = IGNORE
                if cls is None:
                    stats.not_drawn += 1
                    continue
                if not g.is_valid:
                    g = shapely.make_valid(g)
                    stats.repaired += 1
                keep.append(g)
                classes.append(cls)
                widths.append(
                    style.road_width_m(cls, lanes)
                    if cls in style.ROAD_CLASSES and shapely.get_dimensions(g) == 1
                    else 0.0
                )
            if not keep:
                continue
            polys = _to_polygons(np.array(keep, dtype=object), np.array(widths), crs, metric)
            polys = _transform(polys, metric, raster_crs)
            fixed = ~shapely.is_valid(polys)
            if fixed.any():
                polys[fixed] = shapely.make_valid(polys[fixed])
            inside = shapely.intersects(polys, shapely.box(*raster_bounds))
            stats.outside += int((~inside).sum())
            if not inside.any():
                stats.missing_overlap.append(label)
                continue
            seen.update(c for c, k in zip(classes, inside, strict=True) if k and c != IGNORE)
            out_geoms.append(polys[inside])
            out_classes.append(
                np.array(
                    [style.CLASS_NAMES.index(c) if c != IGNORE else -1 for c in np.array(classes)[inside]], np.int16
                )
            )
    for w in stats.warnings():  # the caller shows them (the CLI prints each on one line)
        log.info(w)
    if not out_geoms:
        names = ", ".join(str(s.path) for s in specs)
        if osm:
            raise VectorClassError(
                f"no feature of {names} over the raster has a tag geopix draws (building, highway, natural=water, "
                "leisure=park, landuse=grass…); check the extract covers the raster, or pass PATH=CLASS"
            )
        if stats.missing_overlap or stats.outside:
            raise VectorOverlapError(
                f"no feature of {names} overlaps the raster; are the vectors of the same place "
                f"(raster CRS {_crs_name(raster_crs)})?"
            )
        raise VectorError(f"no usable feature in {names}: {'; '.join(stats.warnings()) or 'all layers are empty'}")
    stats.used = int(sum(len(g) for g in out_geoms))
    if covers is None:
        covers = frozenset(style.CLASS_NAMES[1:]) if osm else frozenset(seen)
        if covers & set(style.ROAD_CLASSES):
            covers |= set(style.ROAD_CLASSES)
    bad = sorted(set(covers) - set(style.CLASS_NAMES))
    if bad:
        raise VectorClassError(f"--covers {','.join(bad)}: not classes; use {', '.join(style.CLASS_NAMES)}")
    return Features(np.concatenate(out_geoms), np.concatenate(out_classes), frozenset(covers)), stats


def _crs_name(crs: CRS) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.name


def _feature_class(
    spec: LayerSpec, fields: dict[str, object], value_map: dict[str, str]
) -> tuple[str | None, float | None, str | None]:
    if spec.cls is not None:
        return spec.cls, _lanes(_tags(fields)), None
    if spec.field is not None:
        raw = fields.get(spec.field)
        value = "" if raw is None else str(raw).strip()
        key = value.lower()
        if key in value_map:
            return value_map[key], None, None
        if key in ALIASES:
            return ALIASES[key], None, None
        return None, None, f"{spec.field}={value}"
    tags = _tags(fields)
    for key, cls in value_map.items():  # --map also applies to tag values (e.g. --map track=minor_road)
        if key in tags.values():
            return cls, None, None
    return class_from_tags(tags)


def _lanes(tags: dict[str, str]) -> float | None:
    return next((float(tags[k]) for k in ("lanes", "lane_number") if _is_number(tags.get(k))), None)


def _is_number(text: str | None) -> bool:
    try:
        return text is not None and np.isfinite(float(text))
    except ValueError:
        return False


def _to_polygons(geoms: np.ndarray, widths: np.ndarray, crs: CRS, metric: CRS) -> np.ndarray:
    """Lines → polygons of their drawn width (in metres, in ``metric``); polygons as they are."""
    geoms = _transform(geoms, crs, metric)
    lines = widths > 0
    if lines.any():
        geoms[lines] = shapely.buffer(geoms[lines], widths[lines] / 2.0, cap_style="round", join_style="round")
    points_or_lines = shapely.get_dimensions(geoms) < 2
    if points_or_lines.any():  # a line we have no width for, or a point: nothing to draw
        geoms[points_or_lines] = shapely.Polygon()
    return geoms
