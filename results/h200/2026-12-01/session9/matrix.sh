#!/bin/bash
# The ninth session's H200 driver, as it ran until step 3 (see README.md: the cold run was stopped by hand
# and a warm run of five implementations took its place), in priority order:
# 1. te_fused's attention-kernel cells at seq 3136, which never ran: in session 2 they shared a
#    process with xFormers' CUDA 12 runtime and cuDNN refused ("CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED",
#    `../matrix/run/a-3136-lib.log`); te_fused's training cells ran in the `fa3 te` sets (`../session3/`),
#    so these run there too (issue 11);
# 2. alias_check.py: does a shared Inductor cache serve one pinned SDPA backend's compiled graph to
#    another process asking for another backend (pytorch/pytorch#185449)? flash, cudnn, math in turn,
#    one folder; then cudnn again with caches off, the control (issue 14);
# 3. the full training matrix (tests/test_train_step.py, every implementation of the bare H200, i.e.
#    PyTorch's), through the runner with a persisted Inductor cache: first cold, with two workers on
#    the GPU to fill the cache sooner (that run's timings do not count), then warm with one worker:
#    the wall time of the full matrix on one H200 with the per-GPU cache (issue 14).
# The setup and the helpers are in ../driver.sh. Start it as ../session8/README.md says (hold back
# results/ except this script, alias_check.py, ../driver.sh, ../matrix/poll.sh and ../session3/fa2_install.sh).
set -uo pipefail
source results/h200/2026-12-01/driver.sh
S9=results/h200/2026-12-01/session9
CACHE=/root/gpu/inductor-cache
# 1. te_fused kernels at 3136 (issue 11)
run a-3136-te-fused "fa3 te" tests/test_attention.py --benchmark-only --attn-impl te_fused --attn-seq-len 3136
# 2. the aliasing check
for b in flash cudnn math; do
  timed alias-$b "" env TORCHINDUCTOR_CACHE_DIR=/root/gpu/alias-cache python3 $S9/alias_check.py $b
done
timed alias-cudnn-nocache "" env TORCHINDUCTOR_CACHE_DIR=/root/gpu/alias-cache TORCHINDUCTOR_FORCE_DISABLE_CACHES=1 \
    python3 $S9/alias_check.py cudnn
# 3. the full training matrix, cold (two workers: fills the cache) then warm (one worker: the measurement)
timed w-cold "" python3 -m attn_bench.run --gpus 1 --workers-per-gpu 2 --inductor-cache $CACHE \
    --json "$RES/w-cold.json" --workdir "$RES/w-cold" -- tests/test_train_step.py
du -sh $CACHE > "$RES/inductor-cache-size.txt" 2>&1; du -sh $CACHE/* >> "$RES/inductor-cache-size.txt" 2>&1
timed w-warm "" python3 -m attn_bench.run --gpus 1 --inductor-cache $CACHE \
    --json "$RES/w-warm.json" --workdir "$RES/w-warm" -- tests/test_train_step.py
finish
