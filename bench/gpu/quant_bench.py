"""Quantized base weights at decode, kernel level (kernels/quant_gemm.cuh): the seven projections of every
Mistral-7B layer (fused as the engine runs them: q/k/v, o, gate/up, down; 32 layers) through the quantized
GEMV and through the tensor-core kernel (quant_mma.cuh, SWITCHBOARD_QUANT_KERNEL=mma) at batch 1 to 128, for
int4 (group 128, zero points: AWQ / GPTQ) and fp8 e4m3 (per-channel scales), beside bf16 through cuBLAS
(torch.matmul), the prompt path (dequantise to bf16, then cuBLAS) and each format's bandwidth floor for
those projections at 3.0 TB/s (../shared/PERFORMANCE.md's figure; the whole-step floors there add
embeddings, head and KV cache: int4 4.2 GB / 1.45 ms at batch 1).
Usage: python3 bench/gpu/quant_bench.py [--arch 90] [--out quant-bench.json]"""
import argparse, ctypes, json, os, sys
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "kernels", "test"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import BF16, QuantWeight, build, p  # noqa: E402
from kernels_bench import gpu_time  # noqa: E402

LAYERS, H, I, Q, KV = 32, 4096, 14336, 4096, 1024
SHAPES = [("qkv", Q + 2 * KV, H), ("o", H, Q), ("gate_up", 2 * I, H), ("down", H, I)]
BW = 3.0e12
ROWS = (1, 8, 16, 32, 64, 128)
KERNELS = (("gemv", 0), ("mma", 1))


def packed(fmt, out, inf):
    """Random packed weight in the engine's layout, with its device byte count."""
    if fmt == "int4":
        g = 128
        codes = torch.randint(0, 256, (out, inf // 2), dtype=torch.uint8, device="cuda")
        scales = torch.rand(out, inf // g, device="cuda") * 0.01
        zeros = torch.randint(0, 16, (out, inf // g), device="cuda").float()
        lut = torch.arange(16, dtype=torch.float32, device="cuda")
        cb = 0
    else:
        g = inf
        codes = torch.randint(0, 126, (out, inf), dtype=torch.uint8, device="cuda")
        scales = torch.rand(out, 1, device="cuda") * 0.01
        zeros, lut, cb = None, None, 3
    w = QuantWeight()
    w.codes, w.scales = codes.data_ptr(), scales.data_ptr()
    w.zeros = zeros.data_ptr() if zeros is not None else None
    w.lut = lut.data_ptr() if lut is not None else None
    w.perm, w.out, w.in_, w.groupSize, w.codebook = None, out, inf, g, cb
    keep = (codes, scales, zeros, lut)
    nbytes = sum(t.numel() * t.element_size() for t in keep if t is not None)
    return w, keep, nbytes


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", default="90")
    ap.add_argument("--out")
    a = ap.parse_args()
    lib = build(a.arch)
    lib.sb_quant_workspace.restype = ctypes.c_int64
    results = []
    for fmt in ("int4", "fp8"):
        ws_list = [packed(fmt, o, i) for _, o, i in SHAPES]
        layer_bytes = sum(n for _, _, n in ws_list)
        scratch = torch.empty(max(o * i for _, o, i in SHAPES), dtype=torch.bfloat16, device="cuda")
        deq16 = {o: torch.empty(o, i, device="cuda", dtype=torch.bfloat16) for _, o, i in SHAPES}
        for rows in ROWS:
            x = {i: torch.randn(rows, i, device="cuda").to(torch.bfloat16) for _, _, i in SHAPES}
            y = {o: torch.empty(rows, o, device="cuda", dtype=torch.bfloat16) for _, o, _ in SHAPES}
            wsb = max(lib.sb_quant_workspace(BF16, rows, ctypes.byref(w)) for w, _, _ in ws_list)
            ws = torch.empty(max(wsb, 256), dtype=torch.uint8, device="cuda")

            def layer():
                for (name, o, i), (w, _, _) in zip(SHAPES, ws_list):
                    lib.sb_quant_gemv(BF16, p(x[i]), rows, ctypes.byref(w), p(y[o]), o, p(ws), ctypes.c_int64(ws.numel()))

            def prompt_path():  # the engine's path for long chunks: dequantise, then cuBLAS
                for (name, o, i), (w, _, _) in zip(SHAPES, ws_list):
                    lib.sb_quant_dequant(BF16, ctypes.byref(w), p(deq16[o]))
                    torch.matmul(x[i], deq16[o].T)

            floor = layer_bytes / BW * 1e6
            cells = []
            for kname, k in KERNELS + (("dequant+cuBLAS", None),):
                if k is not None:
                    lib.sb_set_quant_kernel(k)
                try:
                    us = gpu_time(lib, layer if k is not None else prompt_path)
                finally:
                    lib.sb_set_quant_kernel(0)
                r = {"format": fmt, "kernel": kname, "rows": rows, "layer_us": round(us, 2), "model_ms": round(us * LAYERS / 1000, 3),
                     "floor_model_ms": round(floor * LAYERS / 1000, 3), "of_floor": round(floor / us, 3), "weight_gb": round(layer_bytes * LAYERS / 1e9, 2)}
                results.append(r)
                cells.append(f"{kname} {r['model_ms']:.3f} ms ({100 * r['of_floor']:.0f}%)")
            print(f"{fmt:>5} batch {rows:>3}, 32 layers' projections ({layer_bytes * LAYERS / 1e9:.2f} GB, floor {floor * LAYERS / 1000:.3f} ms at 3.0 TB/s): "
                  + ", ".join(cells), flush=True)
        # Prompt path: one layer dequantised to bf16 (then cuBLAS in the engine).
        us = gpu_time(lib, lambda: [lib.sb_quant_dequant(BF16, ctypes.byref(w), p(scratch)) for w, _, _ in ws_list])
        print(f"{fmt:>5} dequantise one layer to bf16: {us:.1f} us ({us * LAYERS / 1000:.2f} ms a prompt chunk for 32 layers)")
        results.append({"format": fmt, "dequant_layer_us": round(us, 2)})
    for rows in ROWS:
        ws16 = [torch.randn(o, i, device="cuda").to(torch.bfloat16) for _, o, i in SHAPES]
        x = {i: torch.randn(rows, i, device="cuda").to(torch.bfloat16) for _, _, i in SHAPES}
        us = gpu_time(lib, lambda: [torch.matmul(x[w.shape[1]], w.T) for w in ws16])
        nbytes = sum(w.numel() * 2 for w in ws16)
        print(f" bf16 batch {rows:>2}: {us * LAYERS / 1000:.3f} ms for 32 layers' projections through cuBLAS (floor {nbytes * LAYERS / BW * 1e3:.3f} ms)")
        results.append({"format": "bf16", "rows": rows, "model_ms": round(us * LAYERS / 1000, 3), "floor_model_ms": round(nbytes * LAYERS / BW * 1e3, 3)})
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
