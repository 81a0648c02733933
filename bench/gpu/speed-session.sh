#!/usr/bin/env bash
# On the GPU machine, issues 19 and 20's opt-in paths measured and checked in three calls of under ten
# minutes each (.devnode and .devcarry carried, see scripts/gpu-check.sh; logs and summaries in $OUT,
# which returns 8 files at most: the rest travels as one archive):
#   a: build; kernels_bench --only overlap and --only layer (LoRA beside the GEMMs; where decode and TTFT
#      time go); test_elementwise (y += z) and test_quant_gemm (GEMV and tensor-core kernel); quant_bench
#      (GEMV vs tensor-core vs dequantise+cuBLAS, batch 1-128); the quantized engine suite with
#      SWITCHBOARD_QUANT_KERNEL=mma; every engine suite with SWITCHBOARD_LORA_STREAM=side.   (~8 min)
#   b: the quick decode bench inline and on the side stream with 0 and 16 SMs kept from cuBLAS
#      (SWITCHBOARD_LORA_SIDE_SMS), then int4 and fp8 decode through the tensor-core kernel up to 128 rows.
#   serving: the serving bench at issue 20's configuration (bench/serving/gpu-run.sh) with the options
#      that won in a and b, passed as environment (e.g. SWITCHBOARD_LORA_STREAM=side).
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
build() { ls native/build/Release/*.node >/dev/null 2>&1 || node scripts/build-native.mjs > "$OUT/build.log" 2>&1 || tail -20 "$OUT/build.log"; }
pass() { grep -E "^# (pass|fail)" "$1" | tr '\n' ' '; echo "($1)"; }
case "${1:-a}" in
  a)
    build &
    python3 bench/gpu/kernels_bench.py --arch "$SWITCHBOARD_CUDA_ARCHS" --only overlap 2>&1 | tee "$OUT/probes.log"
    python3 bench/gpu/kernels_bench.py --arch "$SWITCHBOARD_CUDA_ARCHS" --only layer 2>&1 | tee -a "$OUT/probes.log"
    python3 kernels/test/test_elementwise.py --arch "$SWITCHBOARD_CUDA_ARCHS" > "$OUT/kernel-tests.log" 2>&1
    python3 kernels/test/test_quant_gemm.py --arch "$SWITCHBOARD_CUDA_ARCHS" >> "$OUT/kernel-tests.log" 2>&1
    grep -E "BAD|y \+= z|passed|failed" "$OUT/kernel-tests.log" | tail -12
    python3 bench/gpu/quant_bench.py --arch "$SWITCHBOARD_CUDA_ARCHS" --out "$OUT/quant-bench.json" 2>&1 | tee "$OUT/quant-bench.log"
    wait
    ls native/build/Release/*.node >/dev/null || exit 1
    SWITCHBOARD_QUANT_KERNEL=mma node --import tsx --test --test-reporter=spec test/gpu/quantized-cuda.test.ts > "$OUT/engine-quant-mma.log" 2>&1
    pass "$OUT/engine-quant-mma.log"
    SWITCHBOARD_LORA_STREAM=side node --import tsx --test --test-reporter=spec test/gpu/*.test.ts > "$OUT/engine-lora-side.log" 2>&1
    pass "$OUT/engine-lora-side.log"
    (cd "$OUT" && tar czf logs.tgz build.log kernel-tests.log quant-bench.json engine-quant-mma.log engine-lora-side.log 2>/dev/null &&
      rm -f build.log kernel-tests.log quant-bench.json engine-quant-mma.log engine-lora-side.log)
    ;;
  b)
    build
    mkdir -p "$OUT/runs"
    for mode in inline:0 side:0 side:16; do
      stream=${mode%%:*} sms=${mode#*:}
      SWITCHBOARD_LORA_STREAM=$stream SWITCHBOARD_LORA_SIDE_SMS=$sms node --import tsx bench/gpu/bench.ts --quick --out "$OUT/runs/$stream-$sms" \
        > "$OUT/runs/$stream-$sms.log" 2>&1
      echo "== LoRA $stream, $sms SMs kept from cuBLAS"
      grep -E "^\| (1|64) \| (0|1|128) \|" "$OUT/runs/$stream-$sms/results.md" || tail -5 "$OUT/runs/$stream-$sms.log"
    done 2>&1 | tee "$OUT/summary.log"
    for w in int4 fp8; do
      SWITCHBOARD_QUANT_KERNEL=mma node --import tsx bench/gpu/bench.ts --weights $w --quant-gemv-rows 128 --out "$OUT/runs/$w" > "$OUT/runs/$w.log" 2>&1
      echo "== $w through the tensor-core kernel (steps up to 128 rows)"
      grep -E "^\| (1|64|128) \|" "$OUT/runs/$w/"results-*.md || tail -5 "$OUT/runs/$w.log"
    done 2>&1 | tee -a "$OUT/summary.log"
    (cd "$OUT" && tar czf runs.tgz runs && rm -rf runs)
    ;;
  serving)
    bash bench/serving/gpu-run.sh bench
    ;;
  *) echo "usage: bench/gpu/speed-session.sh a|b|serving" >&2; exit 2 ;;
esac
