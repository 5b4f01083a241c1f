#!/bin/bash
# confpipe: step train, job gs://bucket/outputs/train-0123456789ab/.confpipe/jobs/20250101-000000.000-0-0a1b2c3d
# Every host of the TPU slice runs this at boot; host 0 writes the job's result.
set -u
md() {
  curl -sSf --retry 10 --retry-connrefused -H 'Metadata-Flavor: Google' \
    "http://${GCE_METADATA_HOST:-metadata.google.internal}/computeMetadata/v1/instance/attributes/$1"
}
if ! CONFPIPE_TPU_HOST="$(md agent-worker-number)"; then
  echo "confpipe: no agent-worker-number in the metadata: is this a TPU VM?" >&2
  exit 1
fi
export CONFPIPE_TPU_HOST
export PYTHONUNBUFFERED=1
export CONFPIPE_CODE=gs://bucket/outputs/.confpipe/code/code-0123456789abcdef.tar.gz
export CONFPIPE_PIP_EXTRAS=tpu
WANDB_API_KEY="$(md confpipe-env-WANDB_API_KEY)" || exit 1
export WANDB_API_KEY
gcloud auth configure-docker us-docker.pkg.dev --quiet
exec docker run --rm --privileged --net=host --ipc=host \
  -e CONFPIPE_TPU_HOST -e PYTHONUNBUFFERED -e CONFPIPE_CODE -e CONFPIPE_PIP_EXTRAS -e WANDB_API_KEY \
  us-docker.pkg.dev/proj/ml/confpipe:latest python -m confpipe.backends.vm gs://bucket/outputs/train-0123456789ab/.confpipe/jobs/20250101-000000.000-0-0a1b2c3d
