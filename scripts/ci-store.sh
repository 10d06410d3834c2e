#!/bin/bash
# The GPU workflow's durable history: store a merged run on the history branch, checked out in HISTORY.
#
#   bash scripts/ci-store.sh HISTORY MERGED.json GATE_STATUS [REBASELINE]
#
# Layout of the history branch (docs/ci.md):
#   runs/<gpu-slug>/ci/NNNN_<commit>_<date>.json      runs that passed the gate: the newest is the baseline
#   rejected/<gpu-slug>/ci/NNNN_<commit>_<date>.json  runs that failed it (kept for the trend, never a baseline)
#   runs/<gpu-slug>/ci/NNNN_....note.md              why a run became a baseline without passing
#   trend/<gpu-slug>.md                              attn-trend over runs/<gpu-slug>
# GATE_STATUS 0 stores under runs/; 2 (incomparable: the suite's settings changed) stores under
# runs/ as a new baseline with a note; 1 under rejected/, unless REBASELINE is "true" (a manual
# re-baseline), which stores any status under runs/ with a note. The caller commits and pushes.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 3 ]; then
  echo "usage: bash scripts/ci-store.sh HISTORY MERGED.json GATE_STATUS [REBASELINE]" >&2
  exit 2
fi
history=$1 merged=$2 status=$3 rebaseline=${4:-false}
PY=${PYTHON:-python3}
read -r slug commit < <("$PY" -c 'import json, sys
run = json.load(open(sys.argv[1]))
print((run["machine_info"].get("gpu") or {}).get("gpu_slug") or "unknown", (run.get("commit_info") or {}).get("id") or "unknown")' "$merged")
kind=runs note=""
case "$status" in
  0) ;;
  2) note="The gate refused to compare this run with the previous baseline (exit 2: another GPU model or other timing settings), so it starts a new baseline." ;;
  *) kind=rejected ;;
esac
if [ "$rebaseline" = true ] && [ "$status" != 0 ]; then
  kind=runs note="Stored as a new baseline by a manual re-baseline (workflow_dispatch rebaseline=true); gate exit status $status."
fi
dir="$history/$kind/$slug/ci"
mkdir -p "$dir"
last=$(find "$dir" -name '[0-9][0-9][0-9][0-9]_*.json' -printf '%f\n' | sort | tail -n 1)
number=0001
if [ -n "$last" ]; then number=$(printf '%04d' $((10#${last:0:4} + 1))); fi
target="$dir/${number}_${commit}_$(date -u +%Y%m%d_%H%M%S).json"
cp "$merged" "$target"
if [ -n "$note" ]; then
  { echo "# ${target##*/}"; echo; echo "$note"; [ -f out/gate.md ] && { echo; cat out/gate.md; }; } > "${target%.json}.note.md"
fi
mkdir -p "$history/trend"
"$PY" -m attn_tools.trend "$history/runs/$slug" --output "$history/trend/$slug.md" || true
echo "ci-store: $target ($kind${note:+, with a note})"
