#!/bin/bash
# Regenerate results/<gpu-slug>/ on a GPU host: every environment set, every test kind, one merged
# run per kind, then the report and the charts. Needs nox (pip install -e ".[dev]") and, for FA3,
# $FA3_WHEEL (docs/ci.md). Takes about an hour per GPU the first time (compilation), less warm.
#
#   bash scripts/results.sh [KIND ...]      # kinds: train infer kernels packed (default: all)
#
# Writes results/<slug>/runs/<kind>.json (replacing the current run of that kind), report.md,
# speedups.png and energy.png. The folder's README.md (commands, versions, known biases) is
# edited by hand after reading the report.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
kinds=("$@")
[ ${#kinds[@]} -gt 0 ] || kinds=(train infer kernels packed)
declare -A tests=(
  [train]="tests/test_train_step.py --attn-study"
  [infer]="tests/test_infer_step.py"
  [kernels]="tests/test_attention.py"
  [packed]="tests/test_varlen_train_step.py"
)
slug=$("$PY" -c 'import torch; from attn_bench.envinfo import gpu_info; print(gpu_info("cuda" if torch.cuda.is_available() else "cpu")["gpu_slug"])')
[ "$slug" != cpu ] || { echo "results.sh: no CUDA GPU here; results are measured on a GPU host" >&2; exit 2; }
sets=$("$PY" -c 'from attn_tools.envsets import ENV_SETS; print(" ".join(ENV_SETS))')
work=out/results/$slug
mkdir -p "$work" "results/$slug/runs"
export ATTN_INDUCTOR_CACHE=${ATTN_INDUCTOR_CACHE:-.benchmarks/$slug/inductor-cache}
for kind in "${kinds[@]}"; do
  [ -n "${tests[$kind]:-}" ] || { echo "results.sh: unknown kind $kind (train infer kernels packed)" >&2; exit 2; }
  read -ra args <<< "${tests[$kind]}"
  rm -f "$work/$kind"-*.json
  for env_set in $sets; do
    echo "results.sh: $kind in set $env_set"
    ATTN_RUN_JSON="$work/$kind-$env_set.json" "$PY" -m nox -s "bench($env_set)" -- --attn-group all "${args[@]}" \
      || echo "results.sh: set $env_set had failed cells (kept in the run, with their reasons)"
  done
  "$PY" -m attn_tools.merge "$work/$kind"-*.json --output "results/$slug/runs/$kind.json"
done
"$PY" -m attn_tools.report "results/$slug/runs" --markdown "results/$slug/report.md" \
  --chart "results/$slug/speedups.png" --energy-chart "results/$slug/energy.png" > "$work/report.txt"
echo "results.sh: results/$slug/ updated; read $work/report.txt, then update results/$slug/README.md"
