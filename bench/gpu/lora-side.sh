#!/usr/bin/env bash
# On the GPU machine (issue 20, LoRA beside the base GEMMs; .devnode and .devcarry carried, see
# scripts/gpu-check.sh): the overlap probe (kernels_bench.py --only overlap), the y += z kernel's test,
# the engine suites with SWITCHBOARD_LORA_STREAM=side against the transformers + PEFT fixtures, then
# the quick decode bench inline and on the side stream with 0 / 8 / 16 / 32 SMs kept from cuBLAS
# (SWITCHBOARD_LORA_SIDE_SMS). About 8 minutes on an H100; logs and a summary in $OUT (8 files at most).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/sb-out}
mkdir -p "$OUT"
export SWITCHBOARD_CUDA_ARCHS=${SWITCHBOARD_CUDA_ARCHS:-90} PYTHONUNBUFFERED=1
if ! command -v node >/dev/null; then
  [ -x /opt/node/bin/node ] || tar -xJf .devnode/node.tar.xz -C /opt
  export PATH=/opt/node/bin:$PATH npm_config_nodedir=/opt/node
fi
[ -d node_modules ] || tar -xJf .devcarry/nm.tar.xz
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gpu.txt"
(node scripts/build-native.mjs > "$OUT/build.log" 2>&1 || tail -20 "$OUT/build.log") &
python3 bench/gpu/kernels_bench.py --arch "$SWITCHBOARD_CUDA_ARCHS" --only overlap 2>&1 | tee "$OUT/overlap.log"
python3 kernels/test/test_elementwise.py --arch "$SWITCHBOARD_CUDA_ARCHS" > "$OUT/elementwise.log" 2>&1; grep -E "y \+= z|BAD" "$OUT/elementwise.log"
wait
ls native/build/Release/*.node >/dev/null || exit 1
SWITCHBOARD_LORA_STREAM=side node --import tsx --test --test-reporter=spec test/gpu/*.test.ts > "$OUT/cuda-engine-side.log" 2>&1
grep -E "^# (pass|fail)" "$OUT/cuda-engine-side.log"
mkdir -p "$OUT/runs"
for mode in inline side:0 side:8 side:16 side:32; do
  stream=${mode%%:*} sms=${mode#*:}
  [ "$stream" = inline ] && sms=0
  SWITCHBOARD_LORA_STREAM=$stream SWITCHBOARD_LORA_SIDE_SMS=$sms node --import tsx bench/gpu/bench.ts --quick --out "$OUT/runs/$stream-$sms" \
    > "$OUT/runs/$stream-$sms.log" 2>&1
  echo "== $stream, $sms SMs kept from cuBLAS"
  grep -E "^\| (1|64) \| (0|1|128) \|" "$OUT/runs/$stream-$sms/results.md" || tail -5 "$OUT/runs/$stream-$sms.log"
done 2>&1 | tee "$OUT/summary.log"
(cd "$OUT" && tar czf runs.tgz runs build.log elementwise.log && rm -rf runs build.log elementwise.log)
