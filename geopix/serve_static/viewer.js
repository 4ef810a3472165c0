// geopix viewer: the served map on MapLibre GL JS (vendored: works offline), fitted to its bounds.
// A .pmtiles set is read by the pmtiles protocol through HTTP Range requests on /tiles.pmtiles;
// other sets through their TileJSON. With `geopix serve --source` the aerial is drawn under the
// map and a slider fades between them. Attribution comes from each TileJSON.
import * as maplibregl from "./vendor/maplibre-gl.mjs";

const state = { errors: [], loaded: { map: 0, aerial: 0 }, idle: false };
window.geopixViewer = state;

async function getJSON(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

const cfg = await getJSON("/viewer.json");
const tj = await getJSON(cfg.tilejson);
const raster = (t) => ({ type: "raster", tiles: t.tiles, tileSize: t.tileSize, minzoom: t.minzoom,
  maxzoom: t.maxzoom, bounds: t.bounds, attribution: t.attribution });
const sources = {};
const layers = [];
if (cfg.source) {
  sources.aerial = raster(await getJSON(cfg.source));
  layers.push({ id: "aerial", type: "raster", source: "aerial" });
}
if (cfg.pmtiles) {
  const protocol = new pmtiles.Protocol({ metadata: true });
  maplibregl.addProtocol("pmtiles", protocol.tile);
  sources.map = { type: "raster", url: `pmtiles://${cfg.pmtiles}`, tileSize: tj.tileSize };
} else {
  sources.map = raster(tj);
}
layers.push({ id: "map", type: "raster", source: "map", paint: { "raster-fade-duration": 0 } });

const fit = { padding: 20, animate: false };
const map = new maplibregl.Map({
  container: "map",
  style: { version: 8, sources, layers },
  bounds: tj.bounds,
  fitBoundsOptions: fit,
  maxZoom: 24,
  attributionControl: { compact: false },
});
window.geopixMap = map;
map.addControl(new maplibregl.NavigationControl({ showCompass: false }), "top-right");
map.on("error", (e) => state.errors.push(String(e.error?.message || e.error || e)));
map.on("data", (e) => {
  if (e.dataType === "source" && e.tile && e.sourceId in state.loaded) state.loaded[e.sourceId] += 1;
});
map.on("idle", () => { state.idle = true; });
map.on("movestart", () => { state.idle = false; });
document.getElementById("fit").onclick = () => map.fitBounds(tj.bounds, fit);
if (cfg.source) {
  const slider = document.getElementById("opacity");
  slider.oninput = () => map.setPaintProperty("map", "raster-opacity", slider.value / 100);
  document.getElementById("opacity-row").hidden = false;
}
document.body.dataset.ready = "1";
