#!/bin/bash
# One GPU workflow job: environment set SET, shard K/N, on every GPU of this host.
#
#   bash scripts/ci-bench.sh SET K/N [pytest args...]
#
# Runs `nox -s "bench(SET)" -- --attn-shard K/N ...` (noxfile.py; the runner spreads the shard's
# cells over the host's GPUs) and writes out/shard-SET-KofN.json ($ATTN_RUN_JSON overrides).
# Shards are balanced by the pinned reference results/<gpu-slug>/reference.json when it is
# committed (every job of a run reads the same file, so the N jobs split the cells the same way).
# Kept on the persistent volume $ATTN_CI_CACHE (default /var/cache/attn-bench): the compile caches,
# <slug>/inductor, and the sets' environments, nox/ (building FA2 or TE takes minutes).
# $CI_NOX_ARGS adds nox options (e.g. --no-venv: run in the current environment, as the CPU check does).
# Exit status: the runner's (1 when a cell failed; the JSON is written all the same).
# $ATTN_TREE runs another checkout of the project with this script (the baseline's commit, for the
# gate's ABBA confirmation); $ATTN_RUN_JSON should then be an absolute path.
set -euo pipefail
cd "${ATTN_TREE:-$(dirname "$0")/..}"
if [ $# -lt 2 ]; then
  echo "usage: bash scripts/ci-bench.sh SET K/N [pytest args...]" >&2
  exit 2
fi
env_set=$1 shard=$2
shift 2
PY=${PYTHON:-python3}
cache=${ATTN_CI_CACHE:-/var/cache/attn-bench}
if command -v nvidia-smi >/dev/null 2>&1; then
  model=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
else
  model=cpu
fi
slug=$(printf '%s' "$model" | tr '[:upper:]' '[:lower:]' | sed -E 's/[^a-z0-9]+/-/g; s/^-+//; s/-+$//')  # envinfo.gpu_slug
costs=()
if [ -f "results/$slug/reference.json" ]; then
  costs=(--attn-shard-costs "results/$slug/reference.json")
fi
mkdir -p out "$cache/$slug/inductor"
export ATTN_RUN_JSON=${ATTN_RUN_JSON:-out/shard-$env_set-${shard/\//of}.json}
export ATTN_INDUCTOR_CACHE="$cache/$slug/inductor"
echo "ci-bench: set $env_set, shard $shard on $model ($slug); costs: ${costs[*]:-the cost model}; -> $ATTN_RUN_JSON"
read -ra nox_args <<< "${CI_NOX_ARGS:-}"
"$PY" -m nox --envdir "$cache/nox" "${nox_args[@]}" -s "bench($env_set)" -- --attn-shard "$shard" "${costs[@]}" "$@"
