#!/usr/bin/env bash
# The GPU checks in one device call, prepared by bench/gpu_prepare.sh. From the repository root:
#   run(command="bash bench/gpu_check.sh", carry=[".whl", ".clips"], timeout_s=600)
# Each step has its own time limit, so a slow one loses its own figure and not the rest (about 9
# minutes in all at most). The JSON lines go to $OUT/gpu.jsonl, everything printed to $OUT/log.txt.
# DEVICE=cpu BUDGET=20 runs the same steps here, as a check of the script.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/gpu_check}"
device="${DEVICE:-cuda}"
budget="${BUDGET:-100}"  # seconds of the DAVIS fit
clip="$(ls -d .clips/*/ 2>/dev/null | head -1)"
steps="$(mktemp -d)"  # each step's own output; $OUT gets back at most 8 files
mkdir -p "$out"
exec > >(tee -a "$out/log.txt") 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if ! python3 -c "import av, kornia" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
if ! python3 -c "import canon_edit_representations" 2>/dev/null; then
  # the representations are found through the package's entry points, so it is installed (no network)
  python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
fi

step() {  # step NAME SECONDS COMMAND...: its output to the log, its JSON lines to gpu.jsonl
  local name="$1" limit="$2"
  shift 2
  echo "== $name ($limit s): $*"
  local start=$SECONDS
  timeout "$limit" "$@" >"$steps/$name.txt"
  local rc=$?
  cat "$steps/$name.txt"
  grep '^{' "$steps/$name.txt" >>"$out/gpu.jsonl"
  echo "== $name: exit $rc after $((SECONDS - start)) s"
}

step env 30 python3 -c "import json, torch; print(json.dumps({'bench': 'gpu_env', 'torch': torch.__version__, \
'cuda': torch.version.cuda, 'gpu': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}))"
# the 2D fits, their bakes and renders on the device ('auto' picks CUDA): quality floors and resume
step tests 150 python3 -m pytest -q -p no:cacheprovider -n 8 tests/test_codef.py tests/test_atlas.py \
  tests/test_residuals.py tests/test_canonical.py tests/test_streaming.py tests/test_train.py tests/test_resume.py
step render_speed 60 python3 bench/render_speed.py --device "$device" --lengths
step encoding_speed 45 python3 bench/encoding_speed.py --device "$device"
if [ -n "$clip" ]; then
  step fit_quality $((budget + 120)) python3 bench/fit_quality.py --clip "$clip" --method codef --size 240 \
    --steps 100000 --time-budget "$budget" --device "$device"
fi
step long_video 150 python3 bench/long_video.py --lengths 300 --segment-budget 15 --device "$device"
echo "gpu_check: done; $(wc -l <"$out/gpu.jsonl") JSON lines in $out/gpu.jsonl"
