#!/usr/bin/env bash
# Prints a directory holding cuBLAS headers (include/) and libraries (lib/) for the CUDA toolkit
# that nvcc belongs to, unpacked from the nvidia-cublas wheel of nvcc's major version (pip
# download, cached under $CUBLAS_CACHE). For machines whose toolkit has nvcc but no cuBLAS (CI):
# with SWITCHBOARD_CUBLAS_ROOT set to it, the CUDA engine addon builds there too (see
# native/CMakeLists.txt), so its host code is compiled and linked on every CI run.
set -euo pipefail
command -v nvcc >/dev/null || { echo "fetch-cublas: no nvcc" >&2; exit 1; }
major=$(nvcc --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
cache=${CUBLAS_CACHE:-$HOME/.cache/switchboard-cublas-$major}
if [ ! -f "$cache/include/cublas_v2.h" ] || ! ls "$cache"/lib/libcublas.so.* >/dev/null 2>&1; then
  rm -rf "$cache.tmp" && mkdir -p "$cache.tmp"
  python3 -m pip download -q --retries 1 --no-deps -d "$cache.tmp" "nvidia-cublas>=$major,<$((major + 1))" >&2
  python3 - "$cache.tmp" <<'PY'
import glob, os, stat, sys, zipfile
d = sys.argv[1]
(whl,) = glob.glob(os.path.join(d, "*.whl"))
for sub in ("include", "lib"):
    os.makedirs(os.path.join(d, sub), exist_ok=True)
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        base = os.path.basename(n)
        if "/include/" in n and n.endswith(".h"):
            sub = "include"
        elif "/lib/" in n and base.startswith(("libcublas.so", "libcublasLt.so")):
            sub = "lib"
        else:
            continue
        out = os.path.join(d, sub, base)
        with z.open(n) as src, open(out, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        if sub == "lib":
            os.chmod(out, os.stat(out).st_mode | stat.S_IXUSR)
os.remove(whl)
PY
  rm -rf "$cache" && mv "$cache.tmp" "$cache"
fi
echo "$cache"
