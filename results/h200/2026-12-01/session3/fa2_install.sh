#!/bin/bash
# Install the flash-attn 2 wheel built on the H200 in session 2 (../matrix/fa2_build.sh) as the set `fa2`.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /root/gpu/site-fa2 "$1"
echo 'export PYTHONPATH=/root/gpu/site-fa2${PYTHONPATH:+:$PYTHONPATH}' > /root/gpu/env-fa2
touch /root/gpu/fa2.done
