#!/bin/bash
# confpipe: step train, job gs://bucket/outputs/train-0123456789ab/.confpipe/jobs/20250101-000000.000-0-0a1b2c3d
# Every host of the TPU slice runs this at boot; host 0 writes the job's result.
# A host whose container fails before its worker ends records that itself.
set -u
md() {
  curl -sSf --retry 10 --retry-connrefused -H 'Metadata-Flavor: Google' \
    "http://${GCE_METADATA_HOST:-metadata.google.internal}/computeMetadata/v1/instance/$1"
}
if ! CONFPIPE_TPU_HOST="$(md attributes/agent-worker-number)"; then
  echo "confpipe: no agent-worker-number in the metadata: is this a TPU VM?" >&2
  exit 1
fi
export CONFPIPE_TPU_HOST
export PYTHONUNBUFFERED=1
export CONFPIPE_CALL_SHA256=ca11ca11ca11ca11ca11ca11ca11ca11ca11ca11ca11ca11ca11ca11ca11ca11
export CONFPIPE_CODE=gs://bucket/outputs/.confpipe/code/code-0123456789abcdef.tar.gz
export CONFPIPE_CODE_SHA256=c0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0de
export CONFPIPE_PIP_EXTRAS=tpu
WANDB_API_KEY="$(md attributes/confpipe-env-WANDB_API_KEY)" || exit 1
export WANDB_API_KEY
put() {  # put NAME FILE: FILE as NAME in the job folder (Cloud Storage JSON API)
  local api="${STORAGE_EMULATOR_HOST:-https://storage.googleapis.com}" token
  case "$api" in http://*|https://*) ;; *) api="http://$api" ;; esac
  token="$(md service-accounts/default/token \
    | sed -E 's/.*"access_token" *: *"([^"]*)".*/\1/')"
  curl -sSf --retry 5 --retry-connrefused -o /dev/null -X POST \
    -H "Authorization: Bearer $token" -H "Content-Type: application/octet-stream" \
    --data-binary "@$2" "$api/upload/storage/v1/b/bucket/o?uploadType=media&name=outputs%2Ftrain-0123456789ab%2F.confpipe%2Fjobs%2F20250101-000000.000-0-0a1b2c3d%2F$1"
}
state="$(mktemp -d /tmp/confpipe-host.XXXXXX)"  # the container's CONFPIPE_HOST_STATE
log="$state/docker.log"
if [ "$CONFPIPE_TPU_HOST" = 0 ]; then own=""; else own="host-$CONFPIPE_TPU_HOST/"; fi
report() {  # report STAGE CODE: this host's exit record and log, unless vm wrote them
  [ -e "$state/exited" ] && return
  tail -c 8388608 "$log" > "$state/log.txt"
  put "${own}log.txt" "$state/log.txt"
  printf '{"host": %s, "code": %s, "stage": "%s"}' \
    "$CONFPIPE_TPU_HOST" "$2" "$1" > "$state/exit.json"
  put "exits/$CONFPIPE_TPU_HOST.json" "$state/exit.json"
}
hosts="$(md attributes/worker-network-endpoints | tr , '\n' | grep -c .)"  # the slice's VMs
put "starts/$CONFPIPE_TPU_HOST-boot-${hosts:-0}" /dev/null
gcloud auth configure-docker us-docker.pkg.dev --quiet
docker pull us-docker.pkg.dev/proj/ml/confpipe:latest 2>&1 | tee "$log"
code=${PIPESTATUS[0]}
if [ "$code" != 0 ]; then report "docker pull" "$code"; exit "$code"; fi
docker run --rm --privileged --net=host --ipc=host \
  -v "$state:$state" -e CONFPIPE_HOST_STATE="$state" -e CONFPIPE_TPU_HOST -e PYTHONUNBUFFERED -e CONFPIPE_CALL_SHA256 -e CONFPIPE_CODE -e CONFPIPE_CODE_SHA256 -e CONFPIPE_PIP_EXTRAS -e WANDB_API_KEY \
  us-docker.pkg.dev/proj/ml/confpipe:latest python -m confpipe.backends.vm gs://bucket/outputs/train-0123456789ab/.confpipe/jobs/20250101-000000.000-0-0a1b2c3d 2>&1 | tee -a "$log"
code=${PIPESTATUS[0]}
report "docker run" "$code"
exit "$code"
