#!/bin/bash
# Prepared in the fourth session for the next H200 session (not run yet). In priority order:
# the packed variable-size workload for every library (issue 12; it also warms the machine up),
# the gate's proof with the baseline rerun beside the current one (issue 13), the compiled kernel
# cells of TE and xFormers (issue 11), the whole-model yardstick at seq 196 (issue 8), kernels at
# seq 196 and inference steps (issue 11).
# Every pytest step records each finished cell as it goes (`-p attn_bench.run`, ATTN_RUN_PROGRESS),
# and stops with SIGINT before DEADLINE (epoch seconds; default 25 minutes from now), so the
# cells that finished are kept even when the device budget ends. Rebuild a cut step's JSON with
#   python -c 'import json,sys; from attn_bench.run import read_progress, run_from_progress; from pathlib import Path; print(json.dumps(run_from_progress(read_progress(Path(sys.argv[1])))))' NAME.progress.jsonl
# How it was started in session 4 (this one likewise): stash .gpu/1..6 (one run each), then run
# `bash .gpu/7/stash && bash results/h200/2026-12-01/session3/fa2_install.sh .gpu/fa2wheel/*.whl &&
# (setsid nohup bash <this script> > /root/gpu/driver.log 2>&1 &)` carrying .gpu/7 and .gpu/fa2wheel,
# and poll with `RES=/root/gpu/res bash results/h200/2026-12-01/matrix/poll.sh 540` back to back.
# The working tree and .gpu/1 must fit in 64 MiB together: hold back results/ for the stash calls,
# except this script, poll.sh, fa2_install.sh and results/h200/gate/g-same-4.json.
set -uo pipefail
RES=${RES:-/root/gpu/res}
DEADLINE=${DEADLINE:-$(( $(date +%s) + 1500 ))}
mkdir -p "$RES" && rm -rf /root/gpu/repo && cp -r "$(pwd)" /root/gpu/repo && cd /root/gpu/repo
git rev-parse HEAD > "$RES/commit.txt"; git status --short >> "$RES/commit.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,temperature.gpu,power.draw --format=csv > "$RES/gpu.csv"

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
rerun_args() {  # rerun_args GATE.json: the gate's confirmation selection, one argument a line
  python3 -c "import json,sys; a=json.load(open(sys.argv[1]))['rerun']['pytest_args']; a and print('\n'.join(a))" "$1"
}

TORCH=native,sdpa_flash,sdpa_efficient,sdpa_math,sdpa_cudnn,flex
TRAIN=tests/test_train_step.py
VARLEN=tests/test_varlen_train_step.py
for sets in "" "fa3 xformers" "fa3 te" "fa4" "fa2"; do in_env "$sets" python3 -m attn_impls > "$RES/impls-${sets// /-}.txt" 2>&1; done

# 1. Packed variable-size images, every library (issue 12), then the FlexAttention hazard
run v-torch "" $VARLEN --benchmark-only -k "padded or sdpa or flex"
run v-lib "fa3 xformers" $VARLEN --benchmark-only -k "fa3 or xformers"
run v-fa4 "fa4" $VARLEN --benchmark-only -k fa4
run v-fa2 "fa2" $VARLEN --benchmark-only -k fa2
run v-te "fa3 te" $VARLEN --benchmark-only -k te_fused
run v-hazard "" $VARLEN --benchmark-only --attn-varlen-lengths changing -k flex
# 2. The gate (issue 13): same code, then 5 % injected; the cells to confirm are rerun on both
#    sides, the baseline's (no slowdown) right before the current's, and pooled on each side.
GATE="$TRAIN --benchmark-only --benchmark-save-data --attn-seq-len 196 --attn-variant plain --attn-impl native,sdpa_cudnn,flex"
run g-same-5 "" $GATE
run g-slow5d "" $GATE --attn-slowdown 0.05
in_env "" python3 -m attn_bench.gate compare "$RES/g-same-5.json" "$RES/g-slow5d.json" --allow-injected-slowdown \
    --json "$RES/gate-g-slow5d.json" > "$RES/gate-g-slow5d.txt" 2>&1
mapfile -t again < <(rerun_args "$RES/gate-g-slow5d.json")
if [ ${#again[@]} -gt 0 ]; then
  mapfile -t base_again < <(printf '%s\n' "${again[@]}" | python3 -c "
import sys; a = sys.stdin.read().split('\n')[:-1]; i = a.index('--attn-slowdown'); print('\n'.join(a[:i] + a[i + 2:]))")
  run g-same-5-rerun "" "${base_again[@]}"
  run g-slow5d-rerun "" "${again[@]}"
  in_env "" python3 -m attn_bench.gate compare "$RES/g-same-5.json" "$RES/g-slow5d.json" "$RES/g-slow5d-rerun.json" \
      --baseline-rerun "$RES/g-same-5-rerun.json" --allow-injected-slowdown --json "$RES/gate-g-slow5d-confirmed.json" \
      >> "$RES/gate-g-slow5d.txt" 2>&1
fi
in_env "" python3 -m attn_bench.gate compare results/h200/gate/g-same-4.json "$RES/g-same-5.json" \
    --json "$RES/gate-g-same-5.json" > "$RES/gate-g-same-5.txt" 2>&1
# 3. The compiled kernel cells of TE and xFormers after the third session's fix (issue 11)
run a-3136-fix "fa3 te" tests/test_attention.py --benchmark-only --attn-seq-len 3136 --attn-mode compiled \
    --attn-impl te_flash,te_unfused
run a-3136-fix-x "fa3 xformers" tests/test_attention.py --benchmark-only --attn-seq-len 3136 --attn-mode compiled \
    --attn-direction fwd_bwd --attn-impl xformers,xformers_cutlass
# 4. The study's yardstick at seq 196 with whole-model compilation (issue 8)
run y-196-model "" $TRAIN --benchmark-only --attn-impl $TORCH --attn-variant plain --attn-study --attn-bare-loop \
    --attn-seq-len 196 --attn-mode compiled
# 5. Kernels at seq 196 and inference steps at both lengths, every library (issue 11)
for seq in 196 3136; do
  [ "$seq" = 196 ] && run a-196-torch "" tests/test_attention.py --benchmark-only --attn-seq-len 196 --attn-impl $TORCH
  run i-$seq-torch "" tests/test_infer_step.py --benchmark-only --attn-seq-len $seq --attn-impl $TORCH
done
run a-196-lib "fa3 xformers" tests/test_attention.py --benchmark-only --attn-seq-len 196 \
    --attn-impl fa3,xformers,xformers_cutlass,xformers_flash,xformers_flash3
run a-196-te "fa3 te" tests/test_attention.py --benchmark-only --attn-seq-len 196 --attn-impl te_flash,te_fused,te_unfused
run a-196-fa4 "fa4" tests/test_attention.py --benchmark-only --attn-seq-len 196 --attn-impl fa4
run i-lib "fa3 xformers" tests/test_infer_step.py --benchmark-only --attn-impl fa3,xformers,xformers_cutlass,xformers_flash,xformers_flash3
run i-te "fa3 te" tests/test_infer_step.py --benchmark-only --attn-impl te_flash,te_fused,te_unfused
run i-fa4 "fa4" tests/test_infer_step.py --benchmark-only --attn-impl fa4
touch "$RES/matrix.done"
