#!/bin/bash
# Set up (scripts/setup.sh) and run the benchmark matrix: parity first, then timed
# training steps; results autosave under .benchmarks/<gpu>/ and a report is printed.
# By default the study's group (its implementations' training steps); --attn-group names the
# others (kernels, inference, packed, train, all: see pytest --help).
# Extra arguments go to pytest, e.g. --attn-impl sdpa_cudnn,flex --attn-seq-len 3136.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest --benchmark-only --benchmark-autosave "$@"
