#!/bin/bash
# Eleventh session, one H200 (only nvidia-h200 was lent): the training matrix of the third-party
# libraries through the runner, for issue 14's "every installed library within 10 minutes on one
# H200". Session 10 measured PyTorch's six implementations (446 s warm, ../session10/); this measures
# the rest, one library set at a time (on the lent H200 the packs need separate environments), each
# first cold (two workers, two timed rounds per cell: fills the persisted Inductor cache, its timings
# do not count), then warm with one worker and the default rounds: the wall time that counts.
# Start it as ../../2026-12-01/session8/matrix.sh says: stash .gpu/1..6 (one run each, results/ held
# back except this script, ../../2026-12-01/driver.sh, ../../2026-12-01/matrix/poll.sh and
# ../../2026-12-01/session3/fa2_install.sh), then, carrying .gpu/7 and .gpu/fa2wheel,
#   (setsid nohup bash -c 'bash .gpu/7/stash > /root/gpu/stash7.log 2>&1; touch /root/gpu/stash7.done' &);
#   until [ -e /root/gpu/env-xformers ]; do sleep 1; done;   # stash 7 then builds TE (~2 min), in the background
#   bash results/h200/2026-12-01/session3/fa2_install.sh .gpu/fa2wheel/*.whl &&
#   (DEADLINE=$(( $(date +%s) + SECONDS_LEFT )) setsid nohup bash results/h200/2026-12-02/session11/libs.sh > /root/gpu/driver.log 2>&1 &)
# and poll with RES=/root/gpu/res bash results/h200/2026-12-01/matrix/poll.sh 540.
set -uo pipefail
source results/h200/2026-12-01/driver.sh
CACHE=/root/gpu/inductor-cache
nvidia-smi -L > "$RES/gpus.txt"
matrix() {  # matrix NAME "SETS" IMPLS RUNNER_ARGS... -- PYTEST_ARGS...: the training cells of IMPLS through the runner
  local name=$1 sets=$2 impls=$3; shift 3
  timed "$name" "$sets" python3 -m attn_bench.run --gpus 1 --inductor-cache $CACHE \
      --json "$RES/$name.json" --workdir "$RES/$name" "$@" --attn-impl "$impls"
}
group() {  # group NAME "SETS" IMPLS WARM_S: cold fill, then the warm run if WARM_S seconds are left
  local name=$1 sets=$2 impls=$3 warm_s=$4
  matrix "$name-cold" "$sets" "$impls" --workers-per-gpu 2 -- $TRAIN --attn-rounds 2 --attn-warmup 0
  # no warm run while TE's build (stash 7, in the background) takes the CPU
  until [ -e /root/gpu/stash7.done ] || [ "$(date +%s)" -ge "$DEADLINE" ]; do sleep 5; done
  MIN_LEFT_S=$warm_s matrix "$name-warm" "$sets" "$impls" -- $TRAIN
}
group lib "fa3 xformers" fa3,xformers,xformers_cutlass,xformers_flash,xformers_flash3 330
group fa4 "fa4" fa4 90
group fa2 "fa2" fa2 120
group te "fa3 te" te_flash,te_fused,te_unfused 230
du -sh $CACHE/* > "$RES/inductor-cache-size.txt" 2>&1
finish
