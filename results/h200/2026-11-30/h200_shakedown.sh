#!/bin/bash
# First look on the H200: versions, availability, and every implementation's
# plain cells at seq 196 on the smoke profile (kernel names, parity, compile).
# Usage on the device machine, after the gpu pack stashes: bash scripts/h200_shakedown.sh
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())"
smoke() {  # $1: label, rest: pytest args
  label=$1; shift
  timeout 200 python3 -m pytest tests/test_train_step.py --attn-profile smoke --attn-seq-len 196 \
    --attn-variant plain --attn-rounds 2 --attn-warmup 1 -p no:cacheprovider -q \
    --benchmark-json "$OUT/smoke-$label.json" "$@" > "$OUT/smoke-$label.log" 2>&1
  echo "== $label rc=$?"; grep -E "passed|failed|^FAILED|^SKIPPED" "$OUT/smoke-$label.log" | cut -c1-400
}
python3 -m attn_impls
smoke torch --attn-impl native,sdpa_flash,sdpa_efficient,sdpa_math,sdpa_cudnn,flex
(. /root/gpu/env-fa4 && python3 -m attn_impls | grep -E "^fa|^xf" && smoke fa4 --attn-impl fa4)
(. /root/gpu/env-xformers && python3 -m attn_impls | grep -E "^xf" && smoke xformers --attn-impl xformers,xformers_cutlass,xformers_flash --attn-variant plain,neighborhood)
grep -h -A8 "kernel check for" "$OUT"/smoke-*.log | cut -c1-1500 | head -80
python3 - "$OUT" <<'PY'
import glob, json, sys
for path in sorted(glob.glob(sys.argv[1] + "/smoke-*.json")):
    for b in json.load(open(path))["benchmarks"]:
        e = b["extra_info"]
        print(f"{e['impl']:>16} {e['mode']:>8} {e['median_ms']:8.2f} ms  kernel={e['kernel']}")
        print("      ", e["attention_like_names"][:12])
PY
