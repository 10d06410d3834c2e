#!/bin/bash
# Prepared in the seventh session for the next H200 session (not run yet), in priority order:
# 1. the one plain yardstick cell whose only run lay outside 2 % of the study (sdpa_cudnn/196/eager,
#    +2.27 % with its bare rounds drifting, issue 8); 2. the new `device_ms` of kernel cells at seq 196,
#    plain variant, every library (issue 11: the kernels' own time where the cell is host-bound);
# 3. the failed inference cell sdpa_math-neighborhood-3136-compiled with Dynamo's verbose trace;
# 4. inference steps of the softcap and neighborhood variants for the other libraries at 3136 and for
#    every library at 196 (issue 11).
# The setup and the helpers (run, timed, libs, finish) are in ../driver.sh. Every pytest step
# records each finished cell as it goes (`-p attn_bench.run`, ATTN_RUN_PROGRESS), and stops with
# SIGINT before DEADLINE (epoch seconds; default 25 minutes from now), so the cells that finished
# are kept even when the device budget ends. Start it as session 7 did (`../session7/README.md`):
# stash .gpu/1..6 (one run each), then run
# `bash .gpu/7/stash && bash results/h200/2026-12-01/session3/fa2_install.sh .gpu/fa2wheel/*.whl &&
# (DEADLINE=$(( $(date +%s) + 1450 )) setsid nohup bash <this script> > /root/gpu/driver.log 2>&1 &)`
# carrying .gpu/7 and .gpu/fa2wheel, and poll with `RES=/root/gpu/res bash results/h200/2026-12-01/matrix/poll.sh 540`
# back to back. The working tree and .gpu/1 must fit in 64 MiB together: hold back results/ for the
# stash calls, except this script, ../driver.sh, poll.sh and fa2_install.sh.
set -uo pipefail
source results/h200/2026-12-01/driver.sh
# 1. The study's yardstick: the one plain cell outside 2 % (issue 8)
run y-196-cudnn-eager "" $TRAIN --benchmark-only --attn-impl sdpa_cudnn --attn-variant plain \
    --attn-study --attn-bare-loop --attn-seq-len 196 --attn-mode eager
# 2. device_ms of kernel cells at seq 196, plain variant, every library (issue 11)
libs a-196-dev tests/test_attention.py --attn-seq-len 196 --attn-variant plain
# 3. The failed inference cell, with Dynamo's verbose trace (issue 11)
TORCHDYNAMO_VERBOSE=1 run i-3136-math-nbhd "" tests/test_infer_step.py --benchmark-only --attn-impl sdpa_math \
    --attn-variant neighborhood --attn-seq-len 3136 --attn-mode compiled
# ... and with Inductor's pattern matcher off: if it then passes, the failure is in a graph rewrite
# (the CPU could not reproduce it with torch 2.11 or 2.14; candidate: fx_passes/fuse_attention.py)
timed i-3136-math-nbhd-nopm "" python3 -c "import sys, pytest, torch._inductor.config as c; c.pattern_matcher = False; \
sys.exit(pytest.main(sys.argv[1:]))" -v -ra -p attn_bench.run tests/test_infer_step.py --benchmark-only \
    --attn-impl sdpa_math --attn-variant neighborhood --attn-seq-len 3136 --attn-mode compiled \
    --benchmark-json="$RES/i-3136-math-nbhd-nopm.json"
# 4. Inference steps of the other variants: the other libraries at 3136, then every library at 196 (issue 11)
LIBS="lib te fa4 fa2" libs i-3136-var tests/test_infer_step.py --attn-seq-len 3136 --attn-variant softcap,neighborhood
libs i-196-var tests/test_infer_step.py --attn-seq-len 196 --attn-variant softcap,neighborhood
finish
