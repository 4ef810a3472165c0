#!/usr/bin/env bash
# Render one aerial GeoTIFF into a map COG and web tiles, then serve a preview.
#   workflows/render_city.sh city.tif out/ [MODEL]
set -euo pipefail
src=${1:?usage: render_city.sh INPUT.tif OUTDIR [MODEL]}
out=${2:?usage: render_city.sh INPUT.tif OUTDIR [MODEL]}
model=${3:-sat2map}

geopix info "$src" --model "$model"
# --xyz writes the pyramid next to map.tif once the map is done (relative to -o).
geopix render "$src" --model "$model" -o "$out" --xyz tiles.pmtiles --overwrite
echo "map:   $out/map.tif"
echo "tiles: $out/tiles.pmtiles"
echo "preview: geopix serve $out/tiles.pmtiles --source $src  (then open http://127.0.0.1:8000)"
