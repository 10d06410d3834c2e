#!/bin/bash
# Prepared in the eleventh session for the next H200 session (not run yet): FA2's and FA3's compiled
# cells with a persisted Inductor cache (about 8 device-minutes). Two questions from ../session11/README.md:
# 1. With the adapters' AOT-autograd opt-in (attn_impls/flash.py, eb9b84e), do the warm plain cells record
#    `aot_cache` "hit" and first steps near native's 3 s at seq 196 (session 11: 12-14 s, bypassed)?
# 2. Why do the softcap graphs miss Inductor's cache in every process? Both runs log the FX-graph cache's
#    key details (TORCH_LOGS=+torch._inductor.codecache); diff the details of the softcap graphs' keys
#    between the cold and the warm process to find the part that changes.
# No packs needed beyond FA3's wheel and FA2's: one run, carrying .gpu/7 and .gpu/fa2wheel (and results/ held
# back except this script, ../../2026-12-01/driver.sh, ../../2026-12-01/matrix/poll.sh and
# ../../2026-12-01/session3/fa2_install.sh), starts it:
#   mkdir -p /root/gpu && python3 -m pip install -q --no-index --no-deps --target /root/gpu/site-fa3 .gpu/7/flash_attn_3-*.whl &&
#   echo 'export PYTHONPATH=/root/gpu/site-fa3${PYTHONPATH:+:$PYTHONPATH}' > /root/gpu/env-fa3 &&
#   bash results/h200/2026-12-01/session3/fa2_install.sh .gpu/fa2wheel/*.whl &&
#   (DEADLINE=$(( $(date +%s) + 900 )) setsid nohup bash results/h200/2026-12-02/session12/fa_cache.sh > /root/gpu/driver.log 2>&1 &)
# then poll with RES=/root/gpu/res bash results/h200/2026-12-01/matrix/poll.sh 540.
set -uo pipefail
source results/h200/2026-12-01/driver.sh
CACHE=/root/gpu/inductor-cache
for lib in fa3 fa2; do
  for phase in cold warm; do
    TORCH_LOGS=+torch._inductor.codecache timed "$lib-$phase" "$lib" python3 -m attn_bench.run --gpus 1 \
        --inductor-cache $CACHE --json "$RES/$lib-$phase.json" --workdir "$RES/$lib-$phase" -- tests/test_train_step.py \
        --attn-impl $lib --attn-mode compiled --attn-rounds 2 --attn-warmup 0
    # whether the graphs were saved at all: a save that fails would also miss in every process
    echo "$lib-$phase: $(find $CACHE/$lib -type f | wc -l) files, $(du -sh $CACHE/$lib | cut -f1)" >> "$RES/cache-files.txt"
  done
done
finish
