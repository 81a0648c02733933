#!/usr/bin/env bash
# Compiles native/src/cuda-engine.cc against the real cuBLAS and CUDA runtime headers on a machine
# without a GPU or cuBLAS (CI): the CUDA addon is only built where cuBLAS exists, so without this
# the engine's host code would first meet a compiler on the GPU machine. The headers come from the
# nvidia-cublas wheel matching nvcc's major version (pip download, cached under $CUBLAS_CACHE).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null; then
  echo "check-cuda-engine: no nvcc here, nothing to check"
  exit 0
fi
# nvcc may be a wrapper script: ask it where its headers are.
cuda_include=$(nvcc --dryrun -x cu -E /dev/null 2>&1 | sed -n 's/^#\$ INCLUDES="-I\([^"]*\)".*/\1/p' | head -1 | sed 's/ *$//')
major=$(nvcc --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
if [ -f "$cuda_include/cublas_v2.h" ]; then
  cublas_include="$cuda_include"
else
  cache=${CUBLAS_CACHE:-$HOME/.cache/switchboard-cublas-$major}
  if [ ! -f "$cache/include/cublas_v2.h" ]; then
    rm -rf "$cache.tmp" && mkdir -p "$cache.tmp"
    python3 -m pip download -q --no-deps -d "$cache.tmp" "nvidia-cublas>=$major,<$((major + 1))"
    # Only the headers: the wheel's libraries are not needed to compile.
    python3 - "$cache.tmp" <<'PY'
import glob, os, sys, zipfile
d = sys.argv[1]
(whl,) = glob.glob(os.path.join(d, "*.whl"))
os.makedirs(os.path.join(d, "include"), exist_ok=True)
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if "/include/" in n and n.endswith(".h"):
            out = os.path.join(d, "include", os.path.basename(n))
            with open(out, "wb") as f:
                f.write(z.read(n))
os.remove(whl)
PY
    rm -rf "$cache" && mv "$cache.tmp" "$cache"
  fi
  cublas_include="$cache/include"
fi
g++ -std=c++17 -fsyntax-only -Wall -Wextra -Werror -I"$cublas_include" -I"$cuda_include" native/src/cuda-engine.cc
echo "check-cuda-engine: native/src/cuda-engine.cc compiles against cuBLAS $major headers"
