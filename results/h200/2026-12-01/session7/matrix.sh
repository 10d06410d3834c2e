#!/bin/bash
# Prepared in the sixth session for the next H200 session (not run yet): what the sixth session's
# deadline cut, in priority order (reordered in the seventh session, issue 8 first): the rest of the
# seq-196 yardstick compiled whole (issue 8); kernels at seq 196 for every library and the compiled
# xFormers kernel cell that lay 13.7 % above do_bench (issue 11); the sharded runner with two workers
# on one GPU (issue 14; correctness, not wall time); inference steps of the softcap and neighborhood
# variants at both lengths (issue 11).
# Every pytest step records each finished cell as it goes (`-p attn_bench.run`, ATTN_RUN_PROGRESS),
# and stops with SIGINT before DEADLINE (epoch seconds; default 25 minutes from now), so the
# cells that finished are kept even when the device budget ends. Rebuild a cut step's JSON with
#   python -c 'import json,sys; from attn_bench.run import read_progress, run_from_progress; from pathlib import Path; print(json.dumps(run_from_progress(read_progress(Path(sys.argv[1])))))' NAME.progress.jsonl
# Start it as session 5 did: stash .gpu/1..6 (one run each), then run
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
# 1. The rest of the study's yardstick at seq 196 with whole-model compilation (issue 8), and a rerun
# of the one seq-3136 cell outside 2 % in session 4 (sdpa_cudnn compiled, +2.37 %)
run y-196-model "" $TRAIN --benchmark-only --attn-impl sdpa_efficient,sdpa_math,sdpa_cudnn,flex --attn-variant plain \
    --attn-study --attn-bare-loop --attn-seq-len 196 --attn-mode compiled
run y-3136-cudnn "" $TRAIN --benchmark-only --attn-impl sdpa_cudnn --attn-variant plain \
    --attn-study --attn-bare-loop --attn-seq-len 3136 --attn-mode compiled
# 2. Kernels at seq 196, every library (issue 11)
libs a-196 tests/test_attention.py --attn-seq-len 196
# The one compiled kernel cell that lay 13.7 % above do_bench in session 5, now with host_ms (issue 11)
run a-3136-xf "fa3 xformers" tests/test_attention.py --benchmark-only --attn-seq-len 3136 --attn-impl xformers \
    --attn-variant plain --attn-mode compiled
# 3. The sharded runner, two workers on one GPU (issue 14): proves sharding and merging, not wall time
timed w2 "" python3 -m attn_bench.run --workers-per-gpu 2 --json "$RES/w2.json" --workdir "$RES/w2" -- \
    tests/test_attention.py tests/test_train_step.py --attn-profile smoke --attn-impl native,sdpa_cudnn,flex --attn-seq-len 3136
# 4. Inference steps of the other variants, both lengths (issue 11)
for seq in 3136 196; do libs i-$seq-var tests/test_infer_step.py --attn-seq-len $seq --attn-variant softcap,neighborhood; done
kill "$CLOCKS_PID" 2>/dev/null
touch "$RES/matrix.done"
