#!/usr/bin/env bash
# On the GPU machine (the `run` tool, .devnode and .devcarry carried; see README.md): Node and the
# production node_modules unpacked and the CUDA addon built where missing (a machine that went
# cold between calls starts bare), then the serving benchmark at the issue's configuration.
# Anything after the first argument goes to bench.ts (it overrides the defaults below).
#   bash bench/serving/gpu-run.sh build        # only the setup: run first, it can take minutes
#   bash bench/serving/gpu-run.sh bench [ARGS] # setup where missing, then the benchmark
# Logs and results land in $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/sb-out}
mkdir -p "$OUT"
what=${1:-bench}
shift || true
if ! command -v node >/dev/null; then
  [ -x /opt/node/bin/node ] || tar -xJf .devnode/node.tar.xz -C /opt
  export PATH=/opt/node/bin:$PATH npm_config_nodedir=/opt/node
fi
[ -d node_modules ] || tar -xJf .devcarry/nm.tar.xz
export SWITCHBOARD_CUDA_ARCHS=${SWITCHBOARD_CUDA_ARCHS:-90}
if ! ls native/build/Release/*.node >/dev/null 2>&1; then
  node scripts/build-native.mjs > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
[ "$what" = build ] && exit 0
# 14.5 GB of weights and 40 adapters under /tmp (64 GiB disk); results.md/json and plot.svg in $OUT.
node --import tsx bench/serving/bench.ts --shape mistral-7b --adapters 32 --clients 64 --work-dir /tmp --out "$OUT" \
  --note "Mistral-7B shape, bf16, random weights: issue 20's configuration" "$@" 2>&1 | tee "$OUT/bench.log"
