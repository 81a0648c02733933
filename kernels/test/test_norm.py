"""norm family (norm.cuh, norm.cu): RMSNorm, alone and with the residual add fused, Gemma's (1 + w) form,
and per-head q/k norms, against float64 PyTorch.
Usage: python3 kernels/test/test_norm.py [--arch 90]"""
import ctypes
import torch
from harness import DT, TYPES, check, main, p, poison, run


def test_rmsnorm(lib, t):
    rows, hidden, eps = 37, 4096, 1e-5
    x = torch.randn(rows, hidden, device="cuda").to(DT[t])
    res = torch.randn(rows, hidden, device="cuda").to(DT[t])
    w = (1 + 0.1 * torch.randn(hidden, device="cuda")).to(DT[t])
    out = poison((rows, hidden), DT[t])
    run(lib, "sb_rmsnorm", t, p(x), None, p(w), rows, hidden, ctypes.c_float(eps), p(out))
    xd = x.double()
    ref = w.double() * (xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + eps))
    check("rmsnorm", t, out, ref)
    res0 = res.clone()
    run(lib, "sb_rmsnorm", t, p(x), p(res), p(w), rows, hidden, ctypes.c_float(eps), p(out))
    s = (x.double() + res0.double())
    check("rmsnorm + residual (sum)", t, res, s)
    check("rmsnorm + residual (norm)", t, out, w.double() * (s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + eps)))


def test_gemma_rmsnorm(lib, t):
    """Gemma's (1 + w) weight, alone and with the residual add."""
    rows, hidden, eps = 21, 3584, 1e-6
    x = torch.randn(rows, hidden, device="cuda").to(DT[t])
    res = torch.randn(rows, hidden, device="cuda").to(DT[t])
    w = (0.3 * torch.randn(hidden, device="cuda")).to(DT[t])
    out = poison((rows, hidden), DT[t])
    run(lib, "sb_gemma_rmsnorm", t, p(x), None, p(w), rows, hidden, ctypes.c_float(eps), p(out))
    xd = x.double()
    check("gemma rmsnorm (1 + w)", t, out, (1 + w.double()) * (xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + eps)))
    res0 = res.clone()
    run(lib, "sb_gemma_rmsnorm", t, p(x), p(res), p(w), rows, hidden, ctypes.c_float(eps), p(out))
    s = x.double() + res0.double()
    check("gemma rmsnorm + residual (norm)", t, out, (1 + w.double()) * (s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + eps)))


def test_head_rmsnorm(lib, t):
    """Per-head q/k norms in place inside a fused qkv buffer (Qwen3: w; Gemma 3: 1 + w); v is untouched."""
    for heads, kvh, dim, gemma in ((32, 8, 128, 0), (4, 2, 16, 0), (8, 4, 256, 1), (12, 4, 80, 1)):
        rows, eps = 17, 1e-6
        ld = (heads + 2 * kvh) * dim
        buf = torch.randn(rows, ld, device="cuda").to(DT[t])
        wq = (1 + 0.2 * torch.randn(dim, device="cuda")).to(DT[t])
        wk = (0.2 * torch.randn(dim, device="cuda")).to(DT[t])
        ref = buf.double().clone()
        def normed(v, w):
            n = v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps)
            return n * ((1 + w.double()) if gemma else w.double())
        ref[:, : heads * dim] = normed(ref[:, : heads * dim].view(rows, heads, dim), wq).reshape(rows, -1)
        ref[:, heads * dim : (heads + kvh) * dim] = normed(ref[:, heads * dim : (heads + kvh) * dim].view(rows, kvh, dim), wk).reshape(rows, -1)
        kptr = ctypes.c_void_p(buf.data_ptr() + heads * dim * buf.element_size())
        run(lib, "sb_head_rmsnorm", t, p(buf), ld, rows, heads, dim, p(wq), ctypes.c_float(eps), gemma)
        run(lib, "sb_head_rmsnorm", t, kptr, ld, rows, kvh, dim, p(wk), ctypes.c_float(eps), gemma)
        check(f"q/k head norm h{heads}/kv{kvh} d{dim}{' (1 + w)' if gemma else ''}", t, buf, ref)


def run_family(lib):
    for t in TYPES:
        test_rmsnorm(lib, t)
        test_gemma_rmsnorm(lib, t)
        test_head_rmsnorm(lib, t)


if __name__ == "__main__":
    main(run_family, __doc__)
