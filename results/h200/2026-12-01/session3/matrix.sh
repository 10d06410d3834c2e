#!/bin/bash
# The H200 runs of 2026-12-01, third session, in priority order: seq 196 for every library
# (PyTorch's cells through the sharded runner), te_fused in an env without xFormers, the gate's
# proof runs, the compiled kernel cells fixed this session, FA2 at seq 196. Copies the repository
# first, so that later syncs of the working tree cannot change the code under a running matrix.
set -uo pipefail
RES=${RES:-/root/gpu/res}
mkdir -p "$RES" && rm -rf /root/gpu/repo && cp -r "$(pwd)" /root/gpu/repo && cd /root/gpu/repo
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,temperature.gpu,power.draw --format=csv > "$RES/gpu.csv"

CUDNN_LIB=$(python3 -c "import nvidia.cudnn, os; print(os.path.join(list(nvidia.cudnn.__path__)[0], 'lib'))")
in_env() {  # in_env "SETS" CMD...: run CMD with those library sets on the path
  local sets=$1; shift
  ( for s in $sets; do . /root/gpu/env-$s; done; export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
    [[ " $sets " == *" te "* ]] && export LD_LIBRARY_PATH=$CUDNN_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    "$@" )
}
timed() {  # timed NAME "SETS" CMD...: run CMD in that env, log to $RES/NAME.log, record the wall time
  local name=$1 sets=$2; shift 2
  local start=$(date +%s)
  echo "$(date -u +%FT%TZ) $name env=${sets:-none}: $*" >> "$RES/commands.txt"
  in_env "$sets" timeout -s INT ${LIMIT:-1200} "$@" > "$RES/$name.log" 2>&1
  echo "$name rc=$? wall_s=$(( $(date +%s) - start )) $(tail -1 "$RES/$name.log")" >> "$RES/walltimes.txt"
}
run() {  # run NAME "SETS" PYTEST_ARGS...
  local name=$1 sets=$2; shift 2
  timed "$name" "$sets" python3 -m pytest -v "$@" --benchmark-json="$RES/$name.json"
}

LIB="fa3 te xformers"
TORCH=native,sdpa_flash,sdpa_efficient,sdpa_math,sdpa_cudnn,flex
TRAIN=tests/test_train_step.py
for sets in "" "fa3 xformers" "te" "fa4"; do in_env "$sets" python3 -m attn_impls > "$RES/impls-${sets// /-}.txt" 2>&1; done

# 1. seq 196, every library (issues 8, 9); PyTorch's through the runner on one GPU (issue 14).
timed m-196-torch "" python3 -m attn_bench.run --json "$RES/m-196-torch.json" --workdir "$RES/w-196-torch" -- \
    $TRAIN --attn-seq-len 196 --attn-impl $TORCH
run m-196-lib "fa3 xformers" $TRAIN --benchmark-only --attn-seq-len 196 \
    --attn-impl fa3,xformers,xformers_cutlass,xformers_flash,xformers_flash3
run m-196-te "fa3 te" $TRAIN --benchmark-only --attn-seq-len 196 --attn-impl te_flash,te_fused,te_unfused
run m-196-fa4 "fa4" $TRAIN --benchmark-only --attn-seq-len 196 --attn-impl fa4
# 2. te_fused at 3136 without xFormers' CUDA 12 runtime on the path
run m-3136-te "fa3 te" $TRAIN --benchmark-only --attn-seq-len 3136 --attn-impl te_fused
# 3. The gate's proof (issue 13): three same-code runs and one with 5 % injected, then a gated run
GATE="$TRAIN --benchmark-only --benchmark-save-data --attn-seq-len 196 --attn-variant plain --attn-impl native,sdpa_cudnn,flex"
for i in 1 2 3; do run g-same-$i "" $GATE; done
run g-slow5 "" $GATE --attn-slowdown 0.05
for cur in g-same-2 g-slow5; do
  in_env "" python3 -m attn_bench.gate compare "$RES/g-same-1.json" "$RES/$cur.json" --json "$RES/gate-$cur.json" > "$RES/gate-$cur.txt" 2>&1
  # As run, this line printed an empty line when no cell needed confirming, so `again` held one
  # empty argument and the next line started the whole suite (g-same-2-rerun, stopped, no result).
  mapfile -t again < <(python3 -c "import json,sys; a=json.load(open(sys.argv[1]))['rerun']['pytest_args']; a and print('\n'.join(a))" "$RES/gate-$cur.json")
  if [ ${#again[@]} -gt 0 ]; then
    run $cur-rerun "" "${again[@]}"
    in_env "" python3 -m attn_bench.gate compare "$RES/g-same-1.json" "$RES/$cur.json" "$RES/$cur-rerun.json" --json "$RES/gate-$cur-confirmed.json" >> "$RES/gate-$cur.txt" 2>&1
  fi
done
# 4. The compiled kernel cells that failed in session 2 (TE backend selection traced, xFormers' disable unwrapped)
run a-3136-fix "fa3 te" tests/test_attention.py --benchmark-only --attn-seq-len 3136 --attn-mode compiled \
    --attn-impl te_flash,te_unfused
run a-3136-fix-x "fa3 xformers" tests/test_attention.py --benchmark-only --attn-seq-len 3136 --attn-mode compiled \
    --attn-direction fwd_bwd --attn-impl xformers,xformers_cutlass
# 5. FlashAttention 2 (the wheel built in session 2)
[ -e /root/gpu/fa2.done ] && run m-196-fa2 "fa2 te" $TRAIN --benchmark-only --attn-seq-len 196 --attn-impl fa2,te_flash
touch "$RES/matrix.done"
