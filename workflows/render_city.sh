#!/usr/bin/env bash
# Render one aerial GeoTIFF into a map COG and web tiles, then serve a preview.
#   workflows/render_city.sh city.tif out/ [MODEL] [RENDER OPTIONS …]
#   workflows/render_city.sh city.tif out/ sat2map --scheduler tcp://HOST:8786   # an existing cluster
# Options after the positional arguments go to `geopix render` (--scheduler, --scheduler-file,
# --workers, --chunk-size, …).
set -euo pipefail
usage="usage: render_city.sh INPUT.tif OUTDIR [MODEL] [geopix render options]"
src=${1:?$usage}
out=${2:?$usage}
shift 2
model=sat2map
if [[ $# -gt 0 && $1 != -* ]]; then
  model=$1
  shift
fi

geopix info "$src" --model "$model"
# --xyz writes the pyramid next to map.tif once the map is done (relative to -o).
geopix render "$src" --model "$model" -o "$out" --xyz tiles.pmtiles --overwrite "$@"
echo "map:   $out/map.tif"
echo "tiles: $out/tiles.pmtiles"
echo "preview: geopix serve $out/tiles.pmtiles --source $src  (then open http://127.0.0.1:8000)"
