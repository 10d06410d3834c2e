#!/bin/bash
# The GPU workflow's gate: the one place that calls `python -m attn_tools.gate`.
#
#   bash scripts/ci-gate.sh BASELINE.json CURRENT.json [REFERENCE.json]
#
# BASELINE may be missing (first run: passes and says so); REFERENCE is gated as well when it
# exists. With CI_GATE_SUBSET=1 (pull requests: a small profile), only the cells CURRENT has
# are gated, so the cells it never selected are not "lost". With CI_GATE_RERUN=1 (a GPU host
# with the environment sets), cells that look slow are confirmed: rerun interleaved A B B A
# (current code, the baseline's commit checked out in out/base-tree, again the baseline's, again
# the current), each in its set, and judged on those reruns (docs/gate.md). Where the baseline's
# commit cannot be checked out or predates scripts/ci-bench.sh, only the current code is rerun
# (weaker: the machine's shift stays in the error) and the script says so.
# Writes out/gate.json and out/gate.md.
# Exit status: the gate's: 0 pass, 1 failed, 2 refused (incomparable: see docs/ci.md, re-baselining).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
if [ $# -lt 2 ]; then
  echo "usage: bash scripts/ci-gate.sh BASELINE.json CURRENT.json [REFERENCE.json]" >&2
  exit 2
fi
baseline=$1 current=$2 reference_file=${3:-}
PY=${PYTHON:-python3}
mkdir -p out
extra=()
if [ -n "$reference_file" ] && [ -f "$reference_file" ]; then
  extra+=(--reference "$reference_file")
else
  echo "ci-gate: no pinned reference${reference_file:+ at $reference_file}: gating against the baseline only"
fi
if [ "${CI_GATE_SUBSET:-0}" = 1 ]; then
  cells=$("$PY" -c 'import re, sys
from attn_tools.runs import load_run, outcomes
ran, skipped, failed = outcomes(load_run(sys.argv[1]))
print("^(?:" + "|".join(re.escape(t) for t in sorted({*ran, *skipped, *failed})) + ")$")' "$current") || exit 2
  extra+=(--cells "$cells")
fi
status=0
"$PY" -m attn_tools.gate compare "$baseline" "$current" "${extra[@]}" \
  --json out/gate-first.json --markdown out/gate.md || status=$?
cp -f out/gate-first.json out/gate.json 2>/dev/null || true
if [ "$status" -eq 2 ] || [ "${CI_GATE_RERUN:-0}" != 1 ]; then
  exit "$status"
fi
mapfile -t sets < <("$PY" -m attn_tools.envsets rerun out/gate-first.json "$current")
if [ "${#sets[@]}" -eq 0 ] || [ -z "${sets[0]}" ]; then
  exit "$status"
fi
# Outside any stored history: a rerun of a few cells must never become a baseline.
rm -rf out/rerun && mkdir -p out/rerun
base_commit=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("commit_info", {}).get("id", ""))' \
  "$baseline" 2>/dev/null || true)
base_tree=""
if [ -n "$base_commit" ] && git worktree add -f --detach out/base-tree "$base_commit" >/dev/null 2>&1 \
    && [ -f out/base-tree/noxfile.py ]; then
  base_tree=$PWD/out/base-tree
else
  echo "ci-gate: the baseline's commit ${base_commit:-(unrecorded)} cannot be run here: confirming on the current code only"
fi
rerun() {  # rerun LABEL TREE: the slow-looking cells, each in its set, merged into out/rerun/LABEL.json
  local label=$1 tree=$2 env_set
  mkdir -p "out/rerun/$label"
  for env_set in "${sets[@]}"; do
    mapfile -t args < <("$PY" -m attn_tools.envsets rerun out/gate-first.json "$current" "$env_set")
    ATTN_TREE=$tree ATTN_RUN_JSON="$PWD/out/rerun/$label/$env_set.json" \
      bash scripts/ci-bench.sh "$env_set" 1/1 "${args[@]}" \
      || echo "ci-gate: rerun $label of set $env_set exited non-zero (its failed cells count as lost)"
  done
  "$PY" -m attn_tools.merge out/rerun/"$label"/*.json --output "out/rerun/$label.json"
}
baseline_reruns=()
if [ -n "$base_tree" ]; then
  rerun A1 "$PWD" && rerun B1 "$base_tree" && rerun B2 "$base_tree" && rerun A2 "$PWD" || exit 2
  current_reruns=(out/rerun/A1.json out/rerun/A2.json)
  baseline_reruns=(--baseline-rerun out/rerun/B1.json out/rerun/B2.json)
else
  rerun A1 "$PWD" || exit 2
  current_reruns=(out/rerun/A1.json)
fi
"$PY" -m attn_tools.gate compare "$baseline" "$current" "${current_reruns[@]}" "${baseline_reruns[@]}" \
  "${extra[@]}" --json out/gate.json --markdown out/gate.md
