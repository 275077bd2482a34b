#!/usr/bin/env bash
# Launch `sailor2-jax train` on a Cloud TPU VM (single host or pod slice): create or reuse the VM, sync this
# checkout, install, run the same command on every worker, and collect each worker's log under logs/.
#
#   ./launch_tpu.sh --name sailor2-v5p --zone us-east5-a --accelerator v5p-64 --runtime v2-alpha-tpuv5 \
#       --config sailor2-1b_stage1 --output-dir gs://BUCKET/runs/s1 [-- key=value ...]
#
# Flags: --name, --zone, --accelerator (e.g. v5p-64, v6e-256), --runtime (TPU software version), --project,
# --config, --output-dir (use a gs:// bucket on pods: every worker writes the same checkpoints), --spot,
# --dry-run (print the gcloud commands instead of running them). Arguments after `--` go to `sailor2-jax train`.
# JAX finds the coordinator and process ids on TPU VMs itself: no multi-host flags are needed.
set -euo pipefail

NAME="" ZONE="" ACCEL="" RUNTIME="" PROJECT="" CONFIG="" OUTPUT_DIR="" SPOT=0 DRY=0
EXTRA=()
usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) NAME="$2"; shift 2 ;;
    --zone) ZONE="$2"; shift 2 ;;
    --accelerator) ACCEL="$2"; shift 2 ;;
    --runtime) RUNTIME="$2"; shift 2 ;;
    --project) PROJECT="$2"; shift 2 ;;
    --config) CONFIG="$2"; shift 2 ;;
    --output-dir) OUTPUT_DIR="$2"; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "launch_tpu.sh: unknown argument: $1" >&2; usage 2 ;;
  esac
done
for var in NAME ZONE ACCEL RUNTIME CONFIG; do
  if [[ -z "${!var}" ]]; then
    echo "launch_tpu.sh: --$(echo "$var" | tr 'A-Z' 'a-z' | sed 's/accel/accelerator/') is required" >&2; exit 2
  fi
done
OUTPUT_DIR="${OUTPUT_DIR:-runs/$(basename "$CONFIG" .yaml)}"
REMOTE_DIR="sailor2_jax"
LOG_DIR="logs/${NAME}-$(date -u +%Y%m%dT%H%M%SZ)"
TARBALL="/tmp/sailor2_jax-${NAME}.tar.gz"
GC=(gcloud compute tpus tpu-vm)
COMMON=(--zone "$ZONE")
[[ -n "$PROJECT" ]] && COMMON+=(--project "$PROJECT")

run() {  # print in dry-run mode, execute otherwise
  if [[ $DRY -eq 1 ]]; then printf '%q ' "$@"; printf '\n'; else "$@"; fi
}

# 1. create the VM unless it exists
if [[ $DRY -eq 1 ]] || ! "${GC[@]}" describe "$NAME" "${COMMON[@]}" >/dev/null 2>&1; then
  CREATE=("${GC[@]}" create "$NAME" "${COMMON[@]}" --accelerator-type "$ACCEL" --version "$RUNTIME")
  [[ $SPOT -eq 1 ]] && CREATE+=(--spot)
  [[ $DRY -eq 1 ]] && echo "# if '${GC[*]} describe $NAME ${COMMON[*]}' fails:"
  run "${CREATE[@]}"
fi

# 2. sync the code (tracked and untracked-but-not-ignored files) to every worker
run tar czf "$TARBALL" --exclude .git --exclude .venv --exclude runs --exclude logs .
run "${GC[@]}" scp "$TARBALL" "$NAME:~/sailor2_jax.tar.gz" "${COMMON[@]}" --worker=all
run "${GC[@]}" ssh "$NAME" "${COMMON[@]}" --worker=all --command \
  "mkdir -p ~/$REMOTE_DIR && tar xzf ~/sailor2_jax.tar.gz -C ~/$REMOTE_DIR"

# 3. install on every worker: the locked versions (requirements-lock.txt), TPU JAX through the tpu extra
run "${GC[@]}" ssh "$NAME" "${COMMON[@]}" --worker=all --command \
  "cd ~/$REMOTE_DIR && python3 -m pip install -q -U pip && python3 -m pip install -q -c requirements-lock.txt -e '.[tpu]'"

# 4. train on every worker at once; each keeps its own log
TRAIN="set -o pipefail; cd ~/$REMOTE_DIR && python3 -m sailor2_jax.cli train --config $(printf '%q' "$CONFIG") --output-dir $(printf '%q' "$OUTPUT_DIR")"
for arg in "${EXTRA[@]+"${EXTRA[@]}"}"; do TRAIN+=" $(printf '%q' "$arg")"; done
TRAIN+=" 2>&1 | tee ~/train.log"
run mkdir -p "$LOG_DIR"
status=0
run "${GC[@]}" ssh "$NAME" "${COMMON[@]}" --worker=all --command "$TRAIN" || status=$?

# 5. collect every worker's log
if [[ $DRY -eq 1 ]]; then
  WORKERS=1
  echo "# for each worker i in 0..(number of VM workers - 1):"
else
  # grep -c prints 0 *and* fails on no match: fall back to one worker then (not "0<newline>1")
  WORKERS=$("${GC[@]}" describe "$NAME" "${COMMON[@]}" --format='value(networkEndpoints[].ipAddress)' \
    | tr ';,' '\n\n' | grep -c .) || WORKERS=1
fi
for ((i = 0; i < WORKERS; i++)); do
  run "${GC[@]}" scp "$NAME:~/train.log" "$LOG_DIR/worker-$i.log" "${COMMON[@]}" --worker="$i" || true
done
[[ $DRY -eq 1 ]] || echo "logs in $LOG_DIR"
exit "$status"
