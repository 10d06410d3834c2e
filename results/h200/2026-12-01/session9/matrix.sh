#!/bin/bash
# Prepared in the eighth session for the next H200 session (not run yet), in priority order:
# 1. te_fused's attention-kernel cells at seq 3136, which never ran: in session 2 they shared a
#    process with xFormers' CUDA 12 runtime and cuDNN refused ("CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED",
#    `../matrix/run/a-3136-lib.log`); te_fused's training cells ran in the `fa3 te` sets (`../session3/`),
#    so these run there too (issue 11);
# 2. FA2's training cells at seq 196, which never ran (session 3 ran out of device time before
#    them, `../session3/README.md`; its 3136 cells are in `../matrix/run/m-3136-fa2.json`);
# 3. the sharded runner with one worker on the GPU over train, inference and kernel cells of the
#    PyTorch implementations at 3136, plain variant: where the time goes (`phase_s`) now that
#    inference cells reuse the training cells' model parity and groups share a worker (issue 14).
# The setup and the helpers are in ../driver.sh. Start it as ../session8/README.md says (hold back
# results/ except this script, ../driver.sh, ../matrix/poll.sh and ../session3/fa2_install.sh).
set -uo pipefail
source results/h200/2026-12-01/driver.sh
# 1. te_fused kernels at 3136 (issue 11)
run a-3136-te-fused "fa3 te" tests/test_attention.py --benchmark-only --attn-impl te_fused --attn-seq-len 3136
# 2. FA2 training at 196
LIBS="fa2" libs m-196 tests/test_train_step.py --attn-seq-len 196
# 3. the runner, one worker, train + inference + kernels of the PyTorch implementations (issue 14)
timed w1-3136 "" python3 -m attn_bench.run --gpus 1 --json "$RES/w1-3136.json" --workdir "$RES/w1-3136" -- \
    tests/test_train_step.py tests/test_infer_step.py tests/test_attention.py \
    --attn-impl $TORCH --attn-variant plain --attn-seq-len 3136
finish
