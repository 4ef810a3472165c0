#!/usr/bin/env bash
# Every labelled place in ../shared as training pairs, then sat2map fine-tuned on all of them with
# each place drawn equally often and the maps set replayed (docs/model-card.md, "Eight places").
#
#   workflows/train_places.sh pairs   OUT     # OUT/train/PLACE (stride 128) and OUT/eval/PLACE (stride 256)
#   workflows/train_places.sh fold    OUT P   # train on every place but P into OUT/runs/without-P (resumable)
#   workflows/train_places.sh all     OUT     # train on every place into OUT/runs/all (resumable)
#
# Environment: SHARED (default ../shared), RES (metres per pixel of the pairs, default the model's),
# STEPS (optimizer steps per run, default 240), THREADS (torch threads, default 2), PLACE_SAMPLES
# (samples of each place per epoch, default 16: an epoch of 8 places is 32 steps), SAVE_EVERY (epochs
# between checkpoints, the unit a run resumes by; each save recalibrates BatchNorm, default 1).
set -euo pipefail
what=${1:?pairs, fold or all}
out=${2:?output folder}
SHARED=${SHARED:-../shared}
STEPS=${STEPS:-240}
THREADS=${THREADS:-2}
PLACE_SAMPLES=${PLACE_SAMPLES:-16}
SAVE_EVERY=${SAVE_EVERY:-1}
res=${RES:+--resolution $RES}
real=$SHARED/data/real
real2=$SHARED/data/real2
here=$(cd "$(dirname "$0")" && pwd)

# One place's pairs into $dir/PLACE unless already there (geopix dataset writes a folder only whole).
v() { local place=$1; shift; [ -d "$dir/$place" ] || geopix dataset vectors "$dir/$place" $res --stride "$stride" "$@"; }
l() { local place=$1; shift; [ -d "$dir/$place" ] || geopix dataset labels "$dir/$place" $res --stride "$stride" "$@"; }

make_pairs() {  # $1: train or eval, $2: stride
  dir=$out/$1 stride=$2
  mkdir -p "$dir"
  v zanzibar --raster "$real/zanzibar_oam/aerial_1.tif" --raster "$real/zanzibar_oam/aerial_2.tif" \
    --layer "$real/zanzibar_oam/buildings.geojson=building"
  v nairobi --raster "$real/nairobi_oam/aerial_1.tif" --raster "$real/nairobi_oam/aerial_2.tif" \
    --layer "$real/nairobi_oam/buildings.geojson=building"
  v massachusetts --raster "$real/massachusetts_buildings/22978945_15.tif" \
    --raster "$real/massachusetts_buildings/23429155_15.tif" \
    --layer "$real/massachusetts_buildings/22978945_15_buildings.gpkg=building" \
    --layer "$real/massachusetts_buildings/23429155_15_buildings.gpkg=building"
  v new_brunswick --raster "$real/new_brunswick/23322E759967N_clipped_1m_1of2.tif" \
    --raster "$real/new_brunswick/23322E759967N_clipped_1m_2of2.tif" \
    --layer "$real/new_brunswick/BakerLake_2017_clipped.gpkg:Niveau_3"
  v las_vegas --raster "$real/las_vegas_roads/aerial.tif" --layer "$real/las_vegas_roads/roads.geojson"
  l dubai "$real2"/dubai/images/*.tif --labels "$real2/dubai/labels" --codes "$here/places/dubai.json" \
    --source-resolution 1.0
  l chicago "$real2"/cil_roads/images/*.tif --labels "$real2/cil_roads/labels" \
    --codes "$here/places/chicago_roads.json" --source-resolution 0.45
  l xiamen "$real2"/xiamen/images/*.tif --labels "$real2/xiamen/labels" --codes "$here/places/xiamen_buildings.json"
}

train() {  # $1: places folder, $2: run folder
  local data=$1 run=$2 resume=()
  [ -f "$run/state.pt" ] && resume=(--resume)
  # Steps per epoch: PLACE_SAMPLES from each place plus as many maps pairs (replay 0.5), batch 8.
  local places per_epoch epochs
  places=$(find -L "$data" -mindepth 2 -maxdepth 2 -name dataset.json | wc -l)
  per_epoch=$(( (2 * places * PLACE_SAMPLES) / 8 ))
  epochs=$(( (STEPS + per_epoch - 1) / per_epoch ))
  local decay=$(( epochs / 2 )) constant=$(( epochs - epochs / 2 ))
  geopix train "$data" -o "$run" --preset palette --init-from sat2map --replay "$SHARED/data/maps" \
    --replay-ratio 0.5 --load-size 414 --load-size-max 900 --colour-jitter 0.3 --lr 2e-4 --batch-size 8 \
    --place-samples "$PLACE_SAMPLES" --epochs "$constant" --epochs-decay "$decay" --threads "$THREADS" --save-every "$SAVE_EVERY" --sample-every 1000 --no-progress "${resume[@]}"
}

case $what in
  pairs) make_pairs train 128; make_pairs eval 256 ;;
  fold)
    held=${3:?the place to hold out}
    folds=$out/folds/without-$held
    mkdir -p "$folds"
    for p in "$out"/train/*/; do
      name=$(basename "$p")
      [ "$name" = "$held" ] || ln -sfn "$(cd "$p" && pwd)" "$folds/$name"
    done
    train "$folds" "$out/runs/without-$held" ;;
  all) train "$out/train" "$out/runs/all" ;;
  *) echo "unknown step $what: pairs, fold or all" >&2; exit 2 ;;
esac
