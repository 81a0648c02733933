"""norm family (norm.cuh, norm.cu): RMSNorm, alone and with the residual add fused, against float64 PyTorch.
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


def run_family(lib):
    for t in TYPES:
        test_rmsnorm(lib, t)


if __name__ == "__main__":
    main(run_family, __doc__)
