#!/bin/bash
# My orthophoto + an OSM extract (or any vector labels) → a fine-tuned model → a rendered map.
# The steps of docs/vectors.md in one script.
#
#   workflows/vectors_to_model.sh ORTHO.tif LABELS [HELD_OUT.tif] [OUT]
#
# LABELS: an .osm.pbf extract, or a GeoJSON/GPKG/Shapefile (add =CLASS or :FIELD, see docs/vectors.md).
# HELD_OUT.tif (optional): a scene of the same region *not* used for training, scored before and after;
# the map is then rendered with whichever model scores best there (sat2map, the fine-tune or their average).
# Set MAPS=path/to/maps to replay the maps dataset while fine-tuning (recommended), STEPS to size the run.
set -euo pipefail
ortho=${1:?usage: $0 ORTHO.tif LABELS [HELD_OUT.tif] [OUT]}
labels=${2:?usage: $0 ORTHO.tif LABELS [HELD_OUT.tif] [OUT]}
held=${3:-}
out=${4:-region}
steps=${STEPS:-200}
mkdir -p "$out"

# 1. How the shipped model does on ground it has not seen.
score=${held:-$ortho}
geopix eval sat2map --raster "$score" --layer "$labels" -o "$out/eval_before"

# 2. Pairs in the map style, with known masks, at the model's ground resolution.
geopix dataset vectors "$out/pairs" --raster "$ortho" --layer "$labels" --overwrite
n=$(ls "$out/pairs/A" | wc -l)
if [ "$n" -lt 4 ]; then
  echo "warning: only $n training pair(s): a fine-tune on so little ground tends to overfit it;" \
       "give a held-out scene (3rd argument) so the workflow can keep sat2map if it scores better" >&2
fi

# 3. Fine-tune from the shipped weights (half of each epoch replays the maps dataset if MAPS is set).
replay=()
per_epoch=$n
if [ -n "${MAPS:-}" ]; then replay=(--replay "$MAPS" --replay-ratio 0.5); per_epoch=$((2 * n)); fi
bs=$(( per_epoch < 8 ? per_epoch : 8 ))  # a small region: smaller batches rather than none
epochs=$(( (steps * bs + per_epoch - 1) / per_epoch ))
half=$(( (epochs + 1) / 2 ))
every=$(( epochs / 10 > 1 ? epochs / 10 : 1 ))  # about ten sample grids, however small the region
resume=(); [ -f "$out/model/state.pt" ] && resume=(--resume)
geopix train "$out/pairs" --preset palette --init-from sat2map "${replay[@]}" \
    --load-size-max 600 --colour-jitter 0.3 --lr 1e-4 --epochs "$half" --epochs-decay $((epochs - half)) \
    --batch-size "$bs" --sample-every "$every" -o "$out/model" "${resume[@]}"

# 4. The same scene, scored with the fine-tuned model and with its average with sat2map (a guard
#    against forgetting: docs/vectors.md, step 5); compare with eval_before/report.json.
geopix eval "$out/model/generator.safetensors" --raster "$score" --layer "$labels" -o "$out/eval_after"
geopix export "$out/model/generator.safetensors" "$out/model/averaged.safetensors" --average-with sat2map --overwrite
geopix eval "$out/model/averaged.safetensors" --raster "$score" --layer "$labels" -o "$out/eval_averaged"

# 5. The model to render with. With a held-out scene: whichever of sat2map, the fine-tune and the
#    average scores the highest mean IoU there (a fine-tune on a few pairs can be worse than none);
#    without one, the fine-tune (its scores above are then on the ground it was trained on).
best="$out/model/generator.safetensors"
if [ -n "$held" ]; then
  best=$(python3 - "$out" <<'PY'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
candidates = {  # in order of preference on a tie: the model that changes least first
    "sat2map": "eval_before",
    str(out / "model" / "averaged.safetensors"): "eval_averaged",
    str(out / "model" / "generator.safetensors"): "eval_after",
}
scores = {}
for model, folder in candidates.items():
    means = [v for v in json.loads((out / folder / "report.json").read_text())["mean"].values() if v is not None]
    scores[model] = sum(means) / len(means) if means else 0.0
    print(f"held-out mean IoU {scores[model]:.3f}: {model}", file=sys.stderr)
print(max(scores, key=scores.get))
PY
)
  echo "rendering with $best (the best on $held)"
fi

# 6. The map, and web tiles to look at it (geopix serve "$out/map/tiles.pmtiles").
geopix render "$ortho" -o "$out/map" --model "$best" --xyz tiles.pmtiles --overwrite
echo "map: $out/map/map.tif (model: $best); scores: $out/eval_before/report.json (sat2map)," \
    "$out/eval_after/report.json (fine-tuned), $out/eval_averaged/report.json (averaged)"
