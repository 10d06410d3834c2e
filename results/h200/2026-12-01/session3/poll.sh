#!/bin/bash
# poll.sh SECONDS: wait until the matrix is done or SECONDS pass, show progress, and pack every
# result so far into $OUT/res.tgz (the device tool brings back at most 8 files).
RES=${RES:-/root/gpu/res}
end=$(( $(date +%s) + ${1:-500} ))
while [ ! -e "$RES/matrix.done" ] && [ "$(date +%s)" -lt "$end" ]; do sleep 5; done
cat "$RES/walltimes.txt" 2>/dev/null
for f in "$RES"/*.log; do [ -e "$f" ] && echo "== $(basename "$f"): $(grep -cE 'PASSED|FAILED|SKIPPED' "$f" 2>/dev/null) reported; $(tail -c 300 "$f" | tr '\n' ' ' | tail -c 200)"; done
[ -e /root/gpu/fa2-build.log ] && { cp /root/gpu/fa2-build.log "$RES/"; tail -3 /root/gpu/fa2-build.log; }
[ -n "${OUT:-}" ] && tar czf "$OUT/res.tgz" -C "$RES" . && ls -la "$OUT"
