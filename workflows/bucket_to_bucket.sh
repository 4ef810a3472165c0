#!/usr/bin/env bash
# A COG in a bucket → map.tif in a bucket, on a Dask cluster that shares no folder with anyone.
#
#   workflows/bucket_to_bucket.sh s3://imagery/city.tif s3://maps/city tcp://scheduler:8786
#
# Workers read their windows of the input straight from the store (GDAL /vsis3/ Range requests)
# and write their zarr chunks to s3://maps/city/map.zarr; the client reads the raster's header and
# one overview, then builds map.tif and uploads it atomically (nothing under the final key until it
# is complete).  Rerun the same command after an interruption: finished blocks in the bucket are kept.
# Credentials come from the usual variables (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile,
# GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_ACCOUNT/AZURE_STORAGE_ACCESS_KEY), set on the client
# and on every worker.  For an S3-compatible store (MinIO, Ceph, moto) also set, everywhere:
#   AWS_S3_ENDPOINT=host:9000 AWS_HTTPS=NO AWS_VIRTUAL_HOSTING=FALSE
# Needs: pip install "geopix[cloud]" on the client and the workers.
set -euo pipefail
input=${1:?usage: $0 INPUT_URL OUTPUT_URL [SCHEDULER]}
output=${2:?usage: $0 INPUT_URL OUTPUT_URL [SCHEDULER]}
scheduler=${3:-${DASK_SCHEDULER_ADDRESS:-}}
args=(render "$input" -o "$output" --xyz map.pmtiles)
if [[ -n "$scheduler" ]]; then args+=(--scheduler "$scheduler"); fi
geopix "${args[@]}"
