#!/bin/bash
# The H200 runs behind results/h200/: the full matrix of every implementation,
# then same-code and slowed-down reruns of the gate subset. Two GPUs, one queue
# each (cells never share a GPU; each cell's reruns stay on the GPU of its first run).
# Usage on the device machine, after the gpu pack stashes (fa4, xformers, te):
#   setsid nohup bash scripts/h200_matrix.sh > /root/matrix.log 2>&1 &
set -u
export PYTHONUNBUFFERED=1
R=${RESULTS:-/root/results}
mkdir -p "$R"
TORCH_IMPLS=native,sdpa_flash,sdpa_efficient,sdpa_math,sdpa_cudnn,flex
GATE_IMPLS=native,sdpa_cudnn,flex

bench() {  # GPU LABEL ENVSET PYTEST-ARGS...
  local gpu=$1 label=$2 envset=$3; shift 3
  local start; start=$(date +%s)
  echo "$(date -u +%FT%TZ) gpu$gpu $label env=${envset:-none}: python3 -m pytest tests/test_train_step.py $*" >> "$R/commands.txt"
  (
    [ -n "$envset" ] && . "/root/gpu/env-$envset"
    # TE must load torch's bundled cuDNN, not the system's (see results/h200/README.md).
    [ "$envset" = te ] && export LD_LIBRARY_PATH="$(python3 -c "import nvidia.cudnn, os; print(os.path.join(nvidia.cudnn.__path__[0], 'lib'))"):${LD_LIBRARY_PATH:-}"
    CUDA_VISIBLE_DEVICES=$gpu timeout 1200 python3 -m pytest tests/test_train_step.py -p no:cacheprovider \
      --benchmark-storage "file://$R/storage" --benchmark-json "$R/$label.json" "$@"
  ) > "$R/$label.log" 2>&1
  local rc=$?
  echo "$label gpu$gpu rc=$rc wall_s=$(( $(date +%s) - start )) $(grep -E '[0-9]+ (passed|failed)' "$R/$label.log" | tail -1)" | tee -a "$R/walltimes.txt"
}

queue0() {
  bench 0 a-196 "" --attn-impl $TORCH_IMPLS --attn-seq-len 196 --attn-bare-loop 10
  bench 0 c-same-196 "" --attn-impl $GATE_IMPLS --attn-variant plain --attn-seq-len 196
  bench 0 c-slow-196 "" --attn-impl $GATE_IMPLS --attn-variant plain --attn-seq-len 196 --attn-slowdown 0.08
  bench 0 b-te te --attn-impl te_flash,te_fused,te_unfused
}
queue1() {
  bench 1 a-3136 "" --attn-impl $TORCH_IMPLS --attn-seq-len 3136 --attn-bare-loop 10
  bench 1 b-fa4 fa4 --attn-impl fa4
  bench 1 c-same-3136 "" --attn-impl $GATE_IMPLS --attn-variant plain --attn-seq-len 3136
  bench 1 c-same-fa4 fa4 --attn-impl fa4 --attn-variant plain
  bench 1 c-slow-3136 "" --attn-impl $GATE_IMPLS --attn-variant plain --attn-seq-len 3136 --attn-slowdown 0.08
  bench 1 c-slow-fa4 fa4 --attn-impl fa4 --attn-variant plain --attn-slowdown 0.08
  bench 1 b-xformers xformers --attn-impl xformers,xformers_cutlass,xformers_flash
}

nvidia-smi --query-gpu=index,name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv > "$R/gpus.csv"
python3 -m attn_impls > "$R/impls-torch.txt" 2>&1
for s in fa4 xformers te; do (. "/root/gpu/env-$s" && python3 -m attn_impls) > "$R/impls-$s.txt" 2>&1; done
start=$(date +%s)
queue0 & queue1 & wait
echo "all queues wall_s=$(( $(date +%s) - start ))" | tee -a "$R/walltimes.txt"
touch "$R/DONE"
