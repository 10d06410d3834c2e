#!/bin/bash
# Prepared in the ninth session, run in the tenth (README.md has what it gave). The bare H200 (no packs
# needed: every implementation it has is PyTorch's), in order:
# 1. the full training matrix (tests/test_train_step.py, every cell) through the runner with a
#    persisted Inductor cache, cold, two workers on the GPU and two timed rounds per cell to fill the
#    cache sooner (its timings do not count: the graphs do not depend on the number of rounds);
# 2. the same with one worker and the warm cache: the wall time of the full matrix on one H200
#    (issue 14's 10 minutes). Since the ninth session the SDPA adapters' graphs are cacheable by
#    AOTAutograd (attn_impls/sdpa.py); session 9's warm run paid 10-18 s per compiled SDPA cell
#    at seq 196 for their bypass (../../2026-12-01/session9/README.md).
# Start it as ../../2026-12-01/session8/README.md says, without the packs: hold back results/ except this
# script, ../../2026-12-01/driver.sh and ../../2026-12-01/matrix/poll.sh; one run starts it in the background:
#   (DEADLINE=$(( $(date +%s) + 1650 )) setsid nohup bash results/h200/2026-12-02/session10/matrix.sh > /root/gpu/driver.log 2>&1 &)
# then poll with RES=/root/gpu/res bash results/h200/2026-12-01/matrix/poll.sh 540.
set -uo pipefail
source results/h200/2026-12-01/driver.sh
CACHE=/root/gpu/inductor-cache
timed w-cold "" python3 -m attn_bench.run --gpus 1 --workers-per-gpu 2 --inductor-cache $CACHE \
    --json "$RES/w-cold.json" --workdir "$RES/w-cold" -- tests/test_train_step.py --attn-rounds 2 --attn-warmup 0
du -sh $CACHE/* > "$RES/inductor-cache-size.txt" 2>&1
timed w-warm "" python3 -m attn_bench.run --gpus 1 --inductor-cache $CACHE \
    --json "$RES/w-warm.json" --workdir "$RES/w-warm" -- tests/test_train_step.py
finish
