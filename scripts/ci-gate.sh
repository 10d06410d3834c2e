#!/bin/bash
# The GPU workflow's gate: the one place that calls `python -m attn_tools.gate`.
#
#   bash scripts/ci-gate.sh BASELINE.json CURRENT.json [REFERENCE.json]
#
# BASELINE may be missing (first run: passes and says so); REFERENCE is gated as well when it
# exists. With CI_GATE_SUBSET=1 (pull requests: a small profile), only the cells CURRENT has
# are gated, so the cells it never selected are not "lost". With CI_GATE_RERUN=1 (a GPU host
# with the environment sets), cells that look slow are rerun, each in its set, and gated again
# with the rerun pooled. Writes out/gate.json and out/gate.md.
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
for env_set in "${sets[@]}"; do
  mapfile -t args < <("$PY" -m attn_tools.envsets rerun out/gate-first.json "$current" "$env_set")
  ATTN_RUN_JSON="out/rerun/$env_set.json" bash scripts/ci-bench.sh "$env_set" 1/1 "${args[@]}" \
    || echo "ci-gate: the rerun of set $env_set exited non-zero (its failed cells count as lost)"
done
"$PY" -m attn_tools.merge out/rerun/*.json --output out/rerun.json || exit 2
"$PY" -m attn_tools.gate compare "$baseline" "$current" out/rerun.json "${extra[@]}" \
  --json out/gate.json --markdown out/gate.md
