// geopix viewer: a dependency-free slippy map (works offline, no CDN).
// Draws the served XYZ tiles over their bounds, with an opacity slider and, when the
// server was started with --source, a swipe comparison against the aerial imagery.
// Tiles are fetched with fetch(): "204 No Content" (an empty tile) is skipped silently.
"use strict";

(function () {
  const R = 6378137, HALF = Math.PI * R, MAXLAT = 85.0511287798;
  const mapEl = document.getElementById("map");
  const tilesLayer = document.getElementById("tiles-layer");
  const sourceLayer = document.getElementById("source-layer");
  const handle = document.getElementById("swipe-handle");
  const statusEl = document.getElementById("status");
  const state = { zoom: 0, cx: 0, cy: 0, tj: null, src: null, swipe: 0.5, loaded: { tiles: 0, source: 0 }, empty: 0, errors: [] };
  window.geopixViewer = state;

  // Web Mercator: lon/lat -> world pixels at zoom z (origin top-left).
  function project(lon, lat, z, size) {
    const world = size * Math.pow(2, z);
    const l = Math.max(-MAXLAT, Math.min(MAXLAT, lat)) * Math.PI / 180;
    const x = (lon + 180) / 360 * world;
    const y = (1 - Math.log(Math.tan(l) + 1 / Math.cos(l)) / Math.PI) / 2 * world;
    return [x, y];
  }

  function tileRange(bounds, z) {
    const size = 1, n = Math.pow(2, z);
    const [x0, y0] = project(bounds[0], bounds[3], z, size);
    const [x1, y1] = project(bounds[2], bounds[1], z, size);
    const clamp = (v) => Math.max(0, Math.min(n - 1, v));
    return [clamp(Math.floor(x0)), clamp(Math.floor(y0)), clamp(Math.ceil(x1) - 1), clamp(Math.ceil(y1) - 1)];
  }

  class Layer {
    constructor(el, tj, name) {
      this.el = el; this.tj = tj; this.name = name; this.imgs = new Map();
    }
    url(z, x, y) { return this.tj.tiles[0].replace("{z}", z).replace("{x}", x).replace("{y}", y); }
    update(z, left, top, width, height, size) {
      const want = new Set();
      const zz = Math.max(this.tj.minzoom, Math.min(this.tj.maxzoom, z));
      if (zz === z) {
        const [bx0, by0, bx1, by1] = tileRange(this.tj.bounds, z);
        const x0 = Math.max(bx0, Math.floor(left / size)), x1 = Math.min(bx1, Math.floor((left + width) / size));
        const y0 = Math.max(by0, Math.floor(top / size)), y1 = Math.min(by1, Math.floor((top + height) / size));
        for (let y = y0; y <= y1; y++) {
          for (let x = x0; x <= x1; x++) {
            const key = z + "/" + x + "/" + y;
            want.add(key);
            let img = this.imgs.get(key);
            if (!img) { img = this.load(z, x, y, key); }
            img.style.left = (x * size - left) + "px";
            img.style.top = (y * size - top) + "px";
            img.style.width = img.style.height = size + "px";
          }
        }
      }
      for (const [key, img] of this.imgs) {
        if (!want.has(key)) { img.abort.abort(); if (img.src) URL.revokeObjectURL(img.src); img.remove(); this.imgs.delete(key); }
      }
    }
    load(z, x, y, key) {
      const img = document.createElement("img");
      img.alt = ""; img.dataset.tile = key; img.style.visibility = "hidden";
      img.abort = new AbortController();
      this.imgs.set(key, img);
      this.el.appendChild(img);
      fetch(this.url(z, x, y), { signal: img.abort.signal }).then((r) => {
        if (r.status === 204) { state.empty++; return null; }
        if (!r.ok) throw new Error(this.name + " tile " + key + ": HTTP " + r.status);
        return r.blob();
      }).then((blob) => {
        if (!blob || !img.isConnected) return;
        img.onload = () => { img.style.visibility = "visible"; img.dataset.loaded = "1"; state.loaded[this.name]++; report(); };
        img.src = URL.createObjectURL(blob);
      }).catch((e) => {
        if (e.name !== "AbortError") { state.errors.push(String(e)); report(); }
      });
      return img;
    }
  }

  let layers = [];
  function size() { return state.tj ? (state.tj.tileSize || 256) : 256; }

  function render() {
    const w = mapEl.clientWidth, h = mapEl.clientHeight, s = size();
    const left = state.cx - w / 2, top = state.cy - h / 2;
    for (const l of layers) l.update(state.zoom, left, top, w, h, s);
    document.getElementById("zoom-label").textContent = "z" + state.zoom;
    applySwipe();
  }

  function applySwipe() {
    if (!state.src) return;
    const px = Math.round(mapEl.clientWidth * state.swipe);
    tilesLayer.style.clipPath = "inset(0 0 0 " + px + "px)";
    handle.style.left = px + "px";
  }

  function report() {
    statusEl.textContent = state.loaded.tiles + " map tiles" + (state.src ? ", " + state.loaded.source + " aerial" : "") +
      (state.errors.length ? " — " + state.errors.length + " errors" : "");
    document.body.dataset.tilesLoaded = String(state.loaded.tiles);
    document.body.dataset.sourceLoaded = String(state.loaded.source);
  }

  function setZoom(z, anchorX, anchorY) {
    const tj = state.tj;
    z = Math.max(tj.minzoom, Math.min(tj.maxzoom, z));
    if (z === state.zoom) return;
    const w = mapEl.clientWidth, h = mapEl.clientHeight;
    const ax = anchorX === undefined ? w / 2 : anchorX, ay = anchorY === undefined ? h / 2 : anchorY;
    const f = Math.pow(2, z - state.zoom);
    const wx = state.cx - w / 2 + ax, wy = state.cy - h / 2 + ay;  // world px under the anchor
    state.cx = wx * f - ax + w / 2; state.cy = wy * f - ay + h / 2;
    state.zoom = z;
    render();
  }

  function fit() {
    const tj = state.tj, b = tj.bounds, w = mapEl.clientWidth, h = mapEl.clientHeight;
    let z = tj.maxzoom;
    while (z > tj.minzoom) {
      const [x0, y0] = project(b[0], b[3], z, size()), [x1, y1] = project(b[2], b[1], z, size());
      if (x1 - x0 <= w && y1 - y0 <= h) break;
      z--;
    }
    const [x0, y0] = project(b[0], b[3], z, size()), [x1, y1] = project(b[2], b[1], z, size());
    state.zoom = z; state.cx = (x0 + x1) / 2; state.cy = (y0 + y1) / 2;
    render();
  }

  function wire() {
    let drag = null;
    mapEl.addEventListener("pointerdown", (e) => {
      drag = { x: e.clientX, y: e.clientY }; mapEl.setPointerCapture(e.pointerId); mapEl.classList.add("dragging");
    });
    mapEl.addEventListener("pointermove", (e) => {
      if (!drag) return;
      state.cx -= e.clientX - drag.x; state.cy -= e.clientY - drag.y; drag = { x: e.clientX, y: e.clientY };
      render();
    });
    const end = () => { drag = null; mapEl.classList.remove("dragging"); };
    mapEl.addEventListener("pointerup", end);
    mapEl.addEventListener("pointercancel", end);
    let wheelAt = 0;
    mapEl.addEventListener("wheel", (e) => {
      e.preventDefault();
      const now = Date.now();
      if (now - wheelAt < 250) return;  // one zoom step per gesture
      wheelAt = now;
      const r = mapEl.getBoundingClientRect();
      setZoom(state.zoom + (e.deltaY < 0 ? 1 : -1), e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });
    mapEl.addEventListener("dblclick", (e) => {
      const r = mapEl.getBoundingClientRect(); setZoom(state.zoom + 1, e.clientX - r.left, e.clientY - r.top);
    });
    mapEl.addEventListener("keydown", (e) => {
      const step = 100, moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
      if (e.key === "+" || e.key === "=") setZoom(state.zoom + 1);
      else if (e.key === "-") setZoom(state.zoom - 1);
      else if (moves[e.key]) { state.cx += moves[e.key][0]; state.cy += moves[e.key][1]; render(); }
    });
    document.getElementById("zoom-in").onclick = () => setZoom(state.zoom + 1);
    document.getElementById("zoom-out").onclick = () => setZoom(state.zoom - 1);
    document.getElementById("fit").onclick = fit;
    const opacity = document.getElementById("opacity");
    opacity.oninput = () => { tilesLayer.style.opacity = String(opacity.value / 100); };
    const swipe = document.getElementById("swipe");
    swipe.oninput = () => { state.swipe = swipe.value / 100; applySwipe(); };
    window.addEventListener("resize", render);
  }

  async function getJSON(url) {
    const r = await fetch(url);
    if (!r.ok) throw new Error(url + ": HTTP " + r.status);
    return r.json();
  }

  async function start() {
    try {
      const conf = await getJSON("/viewer.json");
      state.tj = await getJSON(conf.tilejson);
      layers = [new Layer(tilesLayer, state.tj, "tiles")];
      if (conf.source) {
        const src = await getJSON(conf.source);
        // Same grid as the map: the aerial layer follows the map's zoom range.
        state.src = Object.assign({}, src, { minzoom: state.tj.minzoom, maxzoom: state.tj.maxzoom, tileSize: size() });
        layers.unshift(new Layer(sourceLayer, state.src, "source"));
        document.getElementById("swipe-row").hidden = false;
        handle.hidden = false;
      }
      document.getElementById("attribution").textContent = state.tj.attribution || "";
      document.title = "geopix — " + (state.tj.name || "tiles");
      wire();
      state.zoom = -1;
      fit();
      report();
      document.body.dataset.ready = "1";
    } catch (e) {
      state.errors.push(String(e));
      statusEl.textContent = "could not load the tileset: " + e;
      console.error(e);
    }
  }
  start();
})();
