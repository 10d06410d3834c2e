#!/bin/bash
# The second H200 session behind results/h200/ (one GPU, nothing else running on it):
# 1. why TE's fused backend refused (scripts/te_backend_diag.py with TE's debug log, and
#    scripts/te_layout_check.py: which memory layouts the fused backend reads correctly);
# 2. the gate subset twice with the same code, then with an injected 8 % slowdown;
# 3. every Transformer Engine cell;
# 4. the gate subset with an injected 15 % slowdown, and a third same-code run.
# In the session of 2026-11-30 steps 1 and 3 found the two TE fixes in attn_impls/te.py
# (CUDNN_PATH, the stride copy); the te_fused cells were then rerun alone, and the layout
# check, g-slow15 and g-same-3 were started by hand in this order (results/h200/commands.txt).
# Usage on the device machine, after the gpu pack stashes (fa4 te), from the repo root:
#   setsid nohup bash scripts/h200_gate_te.sh > /root/session.log 2>&1 &
# Each step runs from a copy of the repo taken when the step starts: the device's copy
# of the working tree is re-synced on every call.
set -u
export PYTHONUNBUFFERED=1
REPO=$(pwd)
R=${RESULTS:-/root/results2}
mkdir -p "$R"
GATE_CELLS="--attn-impl native,sdpa_cudnn,flex,fa4 --attn-variant plain"

use_env() {  # SET: put a gpu pack set on the path (te also needs torch's bundled cuDNN first)
  [ -z "$1" ] && return
  . "/root/gpu/env-$1"
  if [ "$1" = te ]; then
    LD_LIBRARY_PATH="$(python3 -c "import nvidia.cudnn, os; print(os.path.join(nvidia.cudnn.__path__[0], 'lib'))"):${LD_LIBRARY_PATH:-}"
    export LD_LIBRARY_PATH
  fi
}

snapshot() {
  rm -rf /root/snap && mkdir -p /root/snap
  (cd "$REPO" && tar --exclude=./.gpu --exclude=./.venv -cf - .) | tar -xf - -C /root/snap
}

bench() {  # LABEL ENVSET PYTEST-ARGS...
  local label=$1 envset=$2; shift 2
  local start; start=$(date +%s)
  echo "$(date -u +%FT%TZ) $label env=${envset:-none}: python3 -m pytest tests/test_train_step.py $*" >> "$R/commands.txt"
  (
    use_env "$envset"
    cd /root/snap && timeout 1500 python3 -m pytest tests/test_train_step.py -p no:cacheprovider \
      --benchmark-storage "file://$R/storage" --benchmark-json "$R/$label.json" "$@"
  ) > "$R/$label.log" 2>&1
  echo "$label rc=$? wall_s=$(( $(date +%s) - start )) $(grep -E '[0-9]+ (passed|failed|skipped)' "$R/$label.log" | tail -1)" | tee -a "$R/walltimes.txt"
}

nvidia-smi --query-gpu=index,name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv > "$R/gpus.csv"
snapshot
(use_env te && cd /root/snap && python3 -m attn_impls) > "$R/impls-te.txt" 2>&1
(use_env te && cd /root/snap && export PYTHONPATH=/root/snap:$PYTHONPATH &&
 NVTE_DEBUG=1 NVTE_DEBUG_LEVEL=2 timeout 300 python3 scripts/te_backend_diag.py &&
 timeout 120 python3 scripts/te_layout_check.py) > "$R/te-diag.log" 2>&1
echo "te-diag rc=$?" | tee -a "$R/walltimes.txt"
start=$(date +%s)
bench g-same-1 fa4 $GATE_CELLS
bench g-same-2 fa4 $GATE_CELLS
bench g-slow fa4 $GATE_CELLS --attn-slowdown 0.08
echo "gate runs wall_s=$(( $(date +%s) - start ))" | tee -a "$R/walltimes.txt"
snapshot
bench te te --attn-impl te_flash,te_fused,te_unfused
bench g-slow15 fa4 $GATE_CELLS --attn-slowdown 0.15
bench g-same-3 fa4 $GATE_CELLS
touch "$R/DONE"
