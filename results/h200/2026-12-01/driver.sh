#!/bin/bash
# The shared part of the H200 session drivers from session 8 on, sourced from the repository root by
# a session's matrix.sh (after `set -uo pipefail`): copies the working tree to /root/gpu/repo and
# works there, records the commit, the GPU and its clocks, and defines
#   in_env "SETS" CMD...            run CMD with those library sets (/root/gpu/env-SET) on the path
#   timed NAME "SETS" CMD...        run CMD in that env until DEADLINE, log to $RES/NAME.log, record the wall time
#   run NAME "SETS" PYTEST_ARGS...  timed pytest with progress records and $RES/NAME.json
#   libs PREFIX TEST ARGS...        one run per library set in $LIBS (default: torch lib te fa4 fa2)
#   finish                          stop the clock log and mark the matrix done (poll.sh waits for it)
# Sessions 2-7 each carry their own copy of this part in their matrix.sh, as it ran.
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

lib_run() {  # lib_run PREFIX SET TEST ARGS...: the run of one library set, named PREFIX-SET
  local prefix=$1 set=$2 test=$3; shift 3
  case $set in
    torch) run $prefix-torch "" $test --benchmark-only --attn-impl $TORCH "$@" ;;
    lib) run $prefix-lib "fa3 xformers" $test --benchmark-only --attn-impl fa3,xformers,xformers_cutlass,xformers_flash,xformers_flash3 "$@" ;;
    te) run $prefix-te "fa3 te" $test --benchmark-only --attn-impl te_flash,te_fused,te_unfused "$@" ;;
    fa4) run $prefix-fa4 "fa4" $test --benchmark-only --attn-impl fa4 "$@" ;;
    fa2) run $prefix-fa2 "fa2" $test --benchmark-only --attn-impl fa2 "$@" ;;
    *) echo "lib_run: unknown library set $set" >&2; return 2 ;;
  esac
}
libs() {  # libs PREFIX TEST ARGS...: one run per library set in $LIBS
  local prefix=$1 test=$2 set; shift 2
  for set in ${LIBS:-torch lib te fa4 fa2}; do lib_run "$prefix" "$set" "$test" "$@"; done
}
finish() {
  kill "$CLOCKS_PID" 2>/dev/null
  touch "$RES/matrix.done"
}
