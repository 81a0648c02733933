"""elementwise family (elementwise.cuh, elementwise.cu): SiLU(gate)·up, bias add, embedding gather
against float64 PyTorch, and random weights against kernels/rng.h's randomWeight computed in
Python (the CPU engine draws the same numbers on the host).
Usage: python3 kernels/test/test_elementwise.py [--arch 90]"""
import ctypes
import torch
from harness import DT, F32, TYPES, check, main, p, poison, random_weight, run


def test_silu_bias_embedding(lib, t):
    rows, inter = 19, 14336
    gu = torch.randn(rows, 2 * inter, device="cuda").to(DT[t])
    out = poison((rows, inter), DT[t])
    up = ctypes.c_void_p(gu.data_ptr() + inter * gu.element_size())
    run(lib, "sb_silu_mul", t, p(gu), up, 2 * inter, rows, inter, p(out))
    g, u = gu[:, :inter].double(), gu[:, inter:].double()
    check("silu(gate) * up", t, out, torch.nn.functional.silu(g) * u)
    y = torch.randn(rows, 1000, device="cuda").to(DT[t])
    b = torch.randn(1000, device="cuda").to(DT[t])
    ref = y.double() + b.double()
    run(lib, "sb_add_bias", t, p(y), p(b), rows, 1000)
    check("add bias", t, y, ref)
    table = torch.randn(500, 64, device="cuda").to(DT[t])
    tok = torch.randint(0, 500, (33,), device="cuda", dtype=torch.int32)
    out = poison((33, 64), DT[t])
    run(lib, "sb_embedding", t, p(table), p(tok), 33, 64, p(out))
    check("embedding gather", t, out, table[tok.long()].double(), 0)


def test_random_fill(lib):
    n, seed, std = 5000, 0xC0FFEE12345, 0.02
    out = poison((n,), DT[F32])
    run(lib, "sb_random_fill", F32, p(out), ctypes.c_int64(n), ctypes.c_uint64(seed), ctypes.c_float(std))
    ref = torch.tensor([random_weight(seed, i, std) for i in range(n)], dtype=torch.float64, device="cuda")
    check("random weights = rng.h randomWeight", F32, out, ref)


def run_family(lib):
    lib.sb_random_fill.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_float]
    for t in TYPES:
        test_silu_bias_embedding(lib, t)
    test_random_fill(lib)


if __name__ == "__main__":
    main(run_family, __doc__)
