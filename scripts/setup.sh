#!/bin/bash
# Create .venv with the suite and its test tools. Optional attention libraries
# (flash-attn, transformer-engine, xformers) are extras: pip install -e ".[fa4]" etc.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# timm imports torchvision, and the two must be a matching pair.
.venv/bin/python -m pip install -q ${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/python -m attn_impls
