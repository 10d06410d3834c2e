#!/bin/bash
# The H200 matrix of 2026-12-01 (second session), in priority order, one pytest process per
# library set. Copies the repository first, so that later syncs of the working tree cannot change
# the code under a running matrix. Results, logs and commands go to $RES.
set -uo pipefail
RES=${RES:-/root/gpu/res}
mkdir -p "$RES" && rm -rf /root/gpu/repo && cp -r "$(pwd)" /root/gpu/repo && cd /root/gpu/repo
git rev-parse HEAD > "$RES/commit.txt" 2>/dev/null; git status --short >> "$RES/commit.txt" 2>/dev/null
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,temperature.gpu,power.draw --format=csv > "$RES/gpu.csv"

CUDNN_LIB=$(python3 -c "import nvidia.cudnn, os; print(os.path.join(list(nvidia.cudnn.__path__)[0], 'lib'))")
in_env() {  # in_env "SETS" CMD...: run CMD with those library sets on the path
  local sets=$1; shift
  ( for s in $sets; do . /root/gpu/env-$s; done; export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
    # TE must load torch's bundled cuDNN, not the system's (results/h200/2026-11-30/README.md, session 2)
    [[ " $sets " == *" te "* ]] && export LD_LIBRARY_PATH=$CUDNN_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    "$@" )
}
run() {  # run NAME "SETS" PYTEST_ARGS...
  local name=$1 sets=$2; shift 2
  local start=$(date +%s)
  echo "$(date -u +%FT%TZ) $name env=${sets:-none}: python3 -m pytest $*" >> "$RES/commands.txt"
  in_env "$sets" timeout -s INT ${LIMIT:-1200} python3 -m pytest -v "$@" --benchmark-json="$RES/$name.json" > "$RES/$name.log" 2>&1
  echo "$name rc=$? wall_s=$(( $(date +%s) - start )) $(tail -1 "$RES/$name.log")" >> "$RES/walltimes.txt"
}

LIB="fa3 te xformers"
for sets in "" "$LIB" "fa4"; do in_env "$sets" python3 -m attn_impls > "$RES/impls-${sets// /-}.txt" 2>&1; done
[ -e /root/gpu/fa2.done ] && in_env "fa2 te xformers" python3 -m attn_impls > "$RES/impls-fa2-te-xformers.txt" 2>&1

TRAIN=tests/test_train_step.py
run m-3136-lib "$LIB" $TRAIN --benchmark-only --attn-seq-len 3136 \
    --attn-impl fa3,te_flash,te_fused,te_unfused,xformers,xformers_cutlass,xformers_flash,xformers_flash3
[ -e /root/gpu/fa2.done ] && run m-3136-fa2 "fa2 te xformers" $TRAIN --benchmark-only --attn-seq-len 3136 \
    --attn-impl fa2,te_flash,xformers_flash
run m-3136-fa4 "fa4" $TRAIN --benchmark-only --attn-seq-len 3136 --attn-impl fa4
run m-3136-torch "" $TRAIN --benchmark-only --attn-seq-len 3136 \
    --attn-impl native,sdpa_flash,sdpa_efficient,sdpa_math,sdpa_cudnn,flex
start=$(date +%s)
in_env "" python3 results/h200/2026-12-01/matrix/math_compile_diag.py > "$RES/math-compile-diag.txt" 2>&1
echo "math-compile-diag rc=$? wall_s=$(( $(date +%s) - start ))" >> "$RES/walltimes.txt"
# Kernel-level and inference cells: every implementation of each library set (torch's included).
for kind in attention infer_step; do
  k=${kind:0:1}
  run $k-3136-lib "$LIB" tests/test_$kind.py --benchmark-only --attn-seq-len 3136
  run $k-3136-fa4 "fa4" tests/test_$kind.py --benchmark-only --attn-seq-len 3136 --attn-impl fa4
  [ -e /root/gpu/fa2.done ] && run $k-3136-fa2 "fa2" tests/test_$kind.py --benchmark-only --attn-seq-len 3136 --attn-impl fa2
done
# Packed variable-size images (issue 12): every varlen entry of each library set.
run v-lib "$LIB" tests/test_varlen_train_step.py --benchmark-only
run v-fa4 "fa4" tests/test_varlen_train_step.py --benchmark-only -k fa4
[ -e /root/gpu/fa2.done ] && run v-fa2 "fa2" tests/test_varlen_train_step.py --benchmark-only -k fa2
run m-196-lib "$LIB" $TRAIN --benchmark-only --attn-seq-len 196 \
    --attn-impl fa3,te_flash,te_fused,te_unfused,xformers,xformers_cutlass,xformers_flash,xformers_flash3
run m-196-fa4 "fa4" $TRAIN --benchmark-only --attn-seq-len 196 --attn-impl fa4
[ -e /root/gpu/fa2.done ] && run m-196-fa2 "fa2 te xformers" $TRAIN --benchmark-only --attn-seq-len 196 \
    --attn-impl fa2,te_flash,xformers_flash
run m-196-torch "" $TRAIN --benchmark-only --attn-seq-len 196 \
    --attn-impl native,sdpa_flash,sdpa_efficient,sdpa_math,sdpa_cudnn,flex --attn-variant softcap,neighborhood
touch "$RES/matrix.done"
