#!/bin/bash
# Prepared in the seventh session for the next H200 session (not run yet), in priority order:
# 1. the one plain yardstick cell whose only run lay outside 2 % of the study (sdpa_cudnn/196/eager,
#    +2.27 % with its bare rounds drifting, issue 8); 2. the new `device_ms` of kernel cells at seq 196,
#    plain variant, every library (issue 11: the kernels' own time where the cell is host-bound);
# 3. the failed inference cell sdpa_math-neighborhood-3136-compiled with Dynamo's verbose trace;
# 4. inference steps of the softcap and neighborhood variants for the other libraries at 3136 and for
#    every library at 196 (issue 11).
# Every pytest step records each finished cell as it goes (`-p attn_bench.run`, ATTN_RUN_PROGRESS),
# and stops with SIGINT before DEADLINE (epoch seconds; default 25 minutes from now), so the
# cells that finished are kept even when the device budget ends. Start it as session 7 did
# (`../session7/README.md`): stash .gpu/1..6 (one run each), then run
# `bash .gpu/7/stash && bash results/h200/2026-12-01/session3/fa2_install.sh .gpu/fa2wheel/*.whl &&
# (DEADLINE=$(( $(date +%s) + 1450 )) setsid nohup bash <this script> > /root/gpu/driver.log 2>&1 &)`
# carrying .gpu/7 and .gpu/fa2wheel, and poll with `RES=/root/gpu/res bash results/h200/2026-12-01/matrix/poll.sh 540`
# back to back. The working tree and .gpu/1 must fit in 64 MiB together: hold back results/ for the
# stash calls, except this script, poll.sh and fa2_install.sh.
set -uo pipefail
RES=${RES:-/root/gpu/res}
DEADLINE=${DEADLINE:-$(( $(date +%s) + 1500 ))}
mkdir -p "$RES" && rm -rf /root/gpu/repo && cp -r "$(pwd)" /root/gpu/repo && cd /root/gpu/repo
git rev-parse HEAD > "$RES/commit.txt"; git status --short >> "$RES/commit.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,temperature.gpu,power.draw --format=csv > "$RES/gpu.csv"
# SM clock, power and temperature every half second for the whole session: whether the clocks
# drop under sustained training load (a candidate cause of the gate's injection shortfall,
# ../../gate/README.md, fifth session) and how they move between runs.
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv -lms 500 \
    > "$RES/clocks.csv" 2>&1 &
CLOCKS_PID=$!

CUDNN_LIB=$(python3 -c "import nvidia.cudnn, os; print(os.path.join(list(nvidia.cudnn.__path__)[0], 'lib'))")
in_env() {  # in_env "SETS" CMD...: run CMD with those library sets on the path
  local sets=$1; shift
  ( for s in $sets; do . /root/gpu/env-$s; done; export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
    [[ " $sets " == *" te "* ]] && export LD_LIBRARY_PATH=$CUDNN_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    "$@" )
}
timed() {  # timed NAME "SETS" CMD...: run CMD in that env until DEADLINE, log to $RES/NAME.log, record the wall time
  local name=$1 sets=$2; shift 2
  local start=$(date +%s) left=$(( DEADLINE - $(date +%s) ))
  if [ "$left" -lt "${MIN_LEFT_S:-45}" ]; then echo "$name not started: ${left} s left" >> "$RES/walltimes.txt"; return; fi
  echo "$(date -u +%FT%TZ) $name env=${sets:-none}: $*" >> "$RES/commands.txt"
  in_env "$sets" env ATTN_RUN_PROGRESS="$RES/$name.progress.jsonl" timeout -s INT "$left" "$@" > "$RES/$name.log" 2>&1
  echo "$name rc=$? wall_s=$(( $(date +%s) - start )) $(tail -1 "$RES/$name.log")" >> "$RES/walltimes.txt"
}
run() {  # run NAME "SETS" PYTEST_ARGS...
  local name=$1 sets=$2; shift 2
  timed "$name" "$sets" python3 -m pytest -v -ra -p attn_bench.run "$@" --benchmark-json="$RES/$name.json"
}

TORCH=native,sdpa_flash,sdpa_efficient,sdpa_math,sdpa_cudnn,flex
TRAIN=tests/test_train_step.py
for sets in "" "fa3 xformers" "fa3 te" "fa4" "fa2"; do in_env "$sets" python3 -m attn_impls > "$RES/impls-${sets// /-}.txt" 2>&1; done

libs() {  # libs PREFIX TEST EXTRA_ARGS...: one pytest run per library set
  local prefix=$1 test=$2; shift 2
  run $prefix-torch "" $test --benchmark-only --attn-impl $TORCH "$@"
  run $prefix-lib "fa3 xformers" $test --benchmark-only --attn-impl fa3,xformers,xformers_cutlass,xformers_flash,xformers_flash3 "$@"
  run $prefix-te "fa3 te" $test --benchmark-only --attn-impl te_flash,te_fused,te_unfused "$@"
  run $prefix-fa4 "fa4" $test --benchmark-only --attn-impl fa4 "$@"
  run $prefix-fa2 "fa2" $test --benchmark-only --attn-impl fa2 "$@"
}
# 1. The study's yardstick: the one plain cell outside 2 % (issue 8)
run y-196-cudnn-eager "" $TRAIN --benchmark-only --attn-impl sdpa_cudnn --attn-variant plain \
    --attn-study --attn-bare-loop --attn-seq-len 196 --attn-mode eager
# 2. device_ms of kernel cells at seq 196, plain variant, every library (issue 11)
libs a-196-dev tests/test_attention.py --attn-seq-len 196 --attn-variant plain
# 3. The failed inference cell, with Dynamo's verbose trace (issue 11)
timed i-3136-math-nbhd "" env TORCHDYNAMO_VERBOSE=1 python3 -m pytest -v -ra -p attn_bench.run tests/test_infer_step.py \
    --benchmark-only --attn-impl sdpa_math --attn-variant neighborhood --attn-seq-len 3136 --attn-mode compiled \
    --benchmark-json="$RES/i-3136-math-nbhd.json"
# ... and with Inductor's pattern matcher off: if it then passes, the failure is in a graph rewrite
# (the CPU could not reproduce it with torch 2.11 or 2.14; candidate: fx_passes/fuse_attention.py)
timed i-3136-math-nbhd-nopm "" python3 -c "import sys, pytest, torch._inductor.config as c; c.pattern_matcher = False; \
sys.exit(pytest.main(sys.argv[1:]))" -v -ra -p attn_bench.run tests/test_infer_step.py --benchmark-only \
    --attn-impl sdpa_math --attn-variant neighborhood --attn-seq-len 3136 --attn-mode compiled \
    --benchmark-json="$RES/i-3136-math-nbhd-nopm.json"
# 4. Inference steps of the other variants: the other libraries at 3136, then every library at 196 (issue 11)
run i-3136-var-lib "fa3 xformers" tests/test_infer_step.py --benchmark-only --attn-impl fa3,xformers,xformers_cutlass,xformers_flash,xformers_flash3 \
    --attn-seq-len 3136 --attn-variant softcap,neighborhood
run i-3136-var-te "fa3 te" tests/test_infer_step.py --benchmark-only --attn-impl te_flash,te_fused,te_unfused \
    --attn-seq-len 3136 --attn-variant softcap,neighborhood
run i-3136-var-fa4 "fa4" tests/test_infer_step.py --benchmark-only --attn-impl fa4 --attn-seq-len 3136 --attn-variant softcap
run i-3136-var-fa2 "fa2" tests/test_infer_step.py --benchmark-only --attn-impl fa2 --attn-seq-len 3136 --attn-variant softcap
libs i-196-var tests/test_infer_step.py --attn-seq-len 196 --attn-variant softcap,neighborhood
kill "$CLOCKS_PID" 2>/dev/null
touch "$RES/matrix.done"
