#!/bin/bash
# The H200 runs of 2026-12-01, fourth session, in priority order: the gate's injected slowdown
# sized by measurement (issue 13), PyTorch's cells with whole-model compilation against the study's
# code (issue 8), the packed variable-size workload for every library (issue 12), the compiled
# kernel cells of TE and xFormers (issue 11). Copies the repository first, so that later syncs
# of the working tree cannot change the code under a running matrix.
set -uo pipefail
RES=${RES:-/root/gpu/res}
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
timed() {  # timed NAME "SETS" CMD...: run CMD in that env, log to $RES/NAME.log, record the wall time
  local name=$1 sets=$2; shift 2
  local start=$(date +%s)
  echo "$(date -u +%FT%TZ) $name env=${sets:-none}: $*" >> "$RES/commands.txt"
  in_env "$sets" timeout -s INT ${LIMIT:-1200} "$@" > "$RES/$name.log" 2>&1
  echo "$name rc=$? wall_s=$(( $(date +%s) - start )) $(tail -1 "$RES/$name.log")" >> "$RES/walltimes.txt"
}
run() {  # run NAME "SETS" PYTEST_ARGS...
  local name=$1 sets=$2; shift 2
  timed "$name" "$sets" python3 -m pytest -v -ra "$@" --benchmark-json="$RES/$name.json"
}
gate() {  # gate NAME BASELINE CURRENT [GATE ARGS...]: compare, and confirm by a rerun of the cells it asks for
  local name=$1 base=$2 cur=$3; shift 3
  in_env "" python3 -m attn_bench.gate compare "$base" "$cur" "$@" --json "$RES/$name.json" > "$RES/$name.txt" 2>&1
  echo "exit $?" >> "$RES/$name.txt"
  mapfile -t again < <(python3 -c "import json,sys; a=json.load(open(sys.argv[1]))['rerun']['pytest_args']; a and print('\n'.join(a))" "$RES/$name.json")
  if [ ${#again[@]} -gt 0 ]; then
    run "$name-rerun" "" "${again[@]}"
    in_env "" python3 -m attn_bench.gate compare "$base" "$cur" "$RES/$name-rerun.json" "$@" --json "$RES/$name-confirmed.json" >> "$RES/$name.txt" 2>&1
    echo "exit $?" >> "$RES/$name.txt"
  fi
}

TORCH=native,sdpa_flash,sdpa_efficient,sdpa_math,sdpa_cudnn,flex
TRAIN=tests/test_train_step.py
VARLEN=tests/test_varlen_train_step.py
for sets in "" "fa3 xformers" "fa3 te" "fa4" "fa2"; do in_env "$sets" python3 -m attn_impls > "$RES/impls-${sets// /-}.txt" 2>&1; done

# 1. The gate (issue 13): a same-code run, then the same cells with 5 % injected, sized by measurement
GATE="$TRAIN --benchmark-only --benchmark-save-data --attn-seq-len 196 --attn-variant plain --attn-impl native,sdpa_cudnn,flex"
run g-same-4 "" $GATE
run g-slow5c "" $GATE --attn-slowdown 0.05
gate gate-g-slow5c "$RES/g-same-4.json" "$RES/g-slow5c.json" --allow-injected-slowdown
gate gate-g-same-4 results/h200/gate/g-same-1.json "$RES/g-same-4.json"
# 2. The study's yardstick with whole-model compilation, as the study compiles (issue 8)
YARD="$TRAIN --benchmark-only --attn-impl $TORCH --attn-variant plain --attn-study --attn-bare-loop"
run y-3136-model "" $YARD --attn-seq-len 3136 --attn-compile-scope model
run y-196-model "" $YARD --attn-seq-len 196 --attn-compile-scope model --attn-mode compiled
run y-196-cudnn-eager "" $TRAIN --benchmark-only --attn-impl sdpa_cudnn --attn-variant plain --attn-study --attn-bare-loop \
    --attn-seq-len 196 --attn-mode eager
# 3. Packed variable-size images, every library (issue 12), then the FlexAttention hazard
run v-torch "" $VARLEN --benchmark-only -k "padded or sdpa or flex"
run v-lib "fa3 xformers" $VARLEN --benchmark-only -k "fa3 or xformers"
run v-fa4 "fa4" $VARLEN --benchmark-only -k fa4
run v-fa2 "fa2" $VARLEN --benchmark-only -k fa2
run v-te "fa3 te" $VARLEN --benchmark-only -k te_fused
run v-hazard "" $VARLEN --benchmark-only --attn-varlen-lengths changing -k flex
# 4. The compiled kernel cells of TE and xFormers after the third session's fix (issue 11)
run a-3136-fix "fa3 te" tests/test_attention.py --benchmark-only --attn-seq-len 3136 --attn-mode compiled \
    --attn-impl te_flash,te_unfused
run a-3136-fix-x "fa3 xformers" tests/test_attention.py --benchmark-only --attn-seq-len 3136 --attn-mode compiled \
    --attn-direction fwd_bwd --attn-impl xformers,xformers_cutlass
touch "$RES/matrix.done"
