#!/bin/bash
# Prepared in the tenth session for the first session that is lent two H200s of one host
# (kind nvidia-h200-x2; not run yet): issue 14's two-GPU proof. The bare machine, no packs. In order:
# 1. the full training matrix through the runner on both GPUs, cold, two timed rounds per cell, to fill
#    the persisted Inductor cache (its timings do not count);
# 2. the same on both GPUs with the warm cache and full rounds: the wall time on two H200s (the
#    issue's 6 minutes), balanced by the per-cell costs of session 10's warm one-GPU run;
# 3. the same on one of the GPUs: the one-GPU wall time on this host, for the speedup of the second GPU;
# 4. if time is left, step 2 again (run-to-run spread of the wall time).
# Start it as ../session10/README.md says: hold back results/ except this script,
# ../session10/run/w-warm.json, ../../2026-12-01/driver.sh and ../../2026-12-01/matrix/poll.sh; then
#   mkdir -p /root/gpu && (DEADLINE=$(( $(date +%s) + 1650 )) setsid nohup bash results/h200/2026-12-02/session11/matrix.sh > /root/gpu/driver.log 2>&1 &)
# and poll with RES=/root/gpu/res bash results/h200/2026-12-01/matrix/poll.sh 540.
set -uo pipefail
source results/h200/2026-12-01/driver.sh
CACHE=/root/gpu/inductor-cache
WARM_ONE_GPU=results/h200/2026-12-02/session10/run/w-warm.json
nvidia-smi -L > "$RES/gpus.txt"
matrix() {  # matrix NAME GPUS RUNNER_ARGS... -- PYTEST_ARGS...: the training matrix through the runner
  local name=$1 gpus=$2; shift 2
  timed "$name" "" python3 -m attn_bench.run --gpus "$gpus" --inductor-cache $CACHE \
      --json "$RES/$name.json" --workdir "$RES/$name" "$@"
}
matrix w2-cold 2 --previous $WARM_ONE_GPU -- tests/test_train_step.py --attn-rounds 2 --attn-warmup 0
du -sh $CACHE/* > "$RES/inductor-cache-size.txt" 2>&1
matrix w2-warm 2 --previous $WARM_ONE_GPU -- tests/test_train_step.py
matrix w1-warm 1 -- tests/test_train_step.py
MIN_LEFT_S=420 matrix w2-warm-again 2 --previous $WARM_ONE_GPU -- tests/test_train_step.py
finish
