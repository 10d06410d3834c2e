#!/bin/bash
# Build the trimmed flash-attn 2.8.3.post2 (bf16, head dim 64, sm90; BUILD-NOTE.md in the tarball)
# on the H200 and install it as the library set `fa2` (/root/gpu/site-fa2, /root/gpu/env-fa2).
# Usage: bash fa2_build.sh TARBALL   (runs in the background while the packs are stashed)
set -euo pipefail
tarball=$(realpath "$1")
mkdir -p /root/gpu/fa2-src && cd /root/gpu/fa2-src && tar xzf "$tarball"
cd flash_attn-2.8.3.post2
start=$(date +%s)
FLASH_ATTENTION_FORCE_BUILD=TRUE FLASH_ATTN_CUDA_ARCHS=90 MAX_JOBS=8 NVCC_THREADS=2 \
  python3 setup.py bdist_wheel -d /root/gpu/built-fa2 > /root/gpu/fa2-build.log 2>&1
echo "fa2 build: $(( $(date +%s) - start )) s" | tee -a /root/gpu/fa2-build.log
python3 -m pip install -q --no-index --no-deps --no-compile --target /root/gpu/site-fa2 /root/gpu/built-fa2/*.whl
echo 'export PYTHONPATH=/root/gpu/site-fa2${PYTHONPATH:+:$PYTHONPATH}' > /root/gpu/env-fa2
touch /root/gpu/fa2.done
