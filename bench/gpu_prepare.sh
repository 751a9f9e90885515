#!/usr/bin/env bash
# Before the device call of bench/gpu_check.sh: what the GPU machine lacks, into folders git ignores
# and the call carries. The wheels are for that machine's Python (3.12, x86-64), at the versions this
# checkout is tested with; the clip is one DAVIS clip (frames and masks) for the 2D fit's rate there.
# Wheels, clip and the tracked tree must stay under the call's 64 MiB: breakdance leaves ~2 MiB.
#   bash bench/gpu_prepare.sh [CLIP_FOLDER]    (default ../shared/data/davis_breakdance)
set -euo pipefail
cd "$(dirname "$0")/.."
clip="${1:-../shared/data/davis_breakdance}"
test -d "$clip/frames" || { echo "gpu_prepare: $clip has no frames/ folder; give a DAVIS clip folder" >&2; exit 2; }
mkdir -p .whl .clips
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl av==18.1.0 kornia==0.9.0 kornia_rs==0.2.0
name="$(basename "$clip")"
rm -rf ".clips/$name.tmp" && cp -r "$clip" ".clips/$name.tmp"
rm -rf ".clips/$name" && mv ".clips/$name.tmp" ".clips/$name"
total=$(( $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) + $(du -sb .whl .clips | awk '{s += $1} END {print s}') ))
echo "gpu_prepare: .whl and .clips/$name ready; $(( total / 1048576 )) MiB travel with the tree (limit 64)"
