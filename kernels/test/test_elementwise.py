"""elementwise family (elementwise.cuh, elementwise.cu): SiLU(gate)·up, gelu-tanh(gate)·up, bias add, y += z,
embedding gather (plain and scaled), final-logit soft-capping
against float64 PyTorch, and random weights against kernels/rng.h's randomWeight computed in
Python (the CPU engine draws the same numbers on the host).
Usage: python3 kernels/test/test_elementwise.py [--arch 90]"""
import ctypes
import torch
from harness import DT, F32, TYPES, check, main, p, poison, random_weight, run, verdict


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
    # y += z (LoRA beside the GEMM): exact sums rounded once; n not a multiple of 8 (the scalar tail), and
    # an unaligned pair (the element path).
    for n, off in ((64 * 6144 + 5, 0), (1001, 1)):
        y = torch.randn(n + off, device="cuda").to(DT[t])
        z = torch.randn(n + off, device="cuda").to(DT[t])
        ref = (y[off:].double() + z[off:].double()).to(DT[t]).double()
        run(lib, "sb_add_to", t, ctypes.c_void_p(y.data_ptr() + off * y.element_size()), ctypes.c_void_p(z.data_ptr() + off * z.element_size()), ctypes.c_int64(n))
        same = torch.equal(y[off:].double(), ref)
        verdict(same, f"y += z ({n} elements{', unaligned' if off else ''}) {'equals' if same else 'differs from'} the sums rounded once", f"add_to {t} n={n}")
    table = torch.randn(500, 64, device="cuda").to(DT[t])
    tok = torch.randint(0, 500, (33,), device="cuda", dtype=torch.int32)
    out = poison((33, 64), DT[t])
    run(lib, "sb_embedding", t, p(table), p(tok), 33, 64, p(out))
    check("embedding gather", t, out, table[tok.long()].double(), 0)


def test_family_elementwise(lib, t):
    """Issue 18: gelu-tanh(gate) * up, scaled embeddings (the scale cast to t first), logit soft-capping."""
    rows, inter = 13, 9216
    gu = (2 * torch.randn(rows, 2 * inter, device="cuda")).to(DT[t])
    out = poison((rows, inter), DT[t])
    up = ctypes.c_void_p(gu.data_ptr() + inter * gu.element_size())
    run(lib, "sb_gelu_tanh_mul", t, p(gu), up, 2 * inter, rows, inter, p(out))
    g, u = gu[:, :inter].double(), gu[:, inter:].double()
    check("gelu_tanh(gate) * up", t, out, torch.nn.functional.gelu(g, approximate="tanh") * u)
    table = torch.randn(500, 3584, device="cuda").to(DT[t])
    tok = torch.randint(0, 500, (9,), device="cuda", dtype=torch.int32)
    out = poison((9, 3584), DT[t])
    scale = 3584 ** 0.5
    run(lib, "sb_embedding_scaled", t, p(table), p(tok), 9, 3584, ctypes.c_float(scale), p(out))
    # transformers multiplies by torch.tensor(scale, dtype=t): the rounded scale is part of the model.
    check("embedding gather * sqrt(hidden)", t, out, table[tok.long()].double() * torch.tensor(scale, dtype=DT[t]).double())
    logits = (40 * torch.randn(7, 32000, device="cuda")).float()
    ref = torch.tanh(logits.double() / 30.0) * 30.0
    run(lib, "sb_softcap", p(logits), ctypes.c_int64(logits.numel()), ctypes.c_float(30.0))
    check("final-logit soft-capping (fp32)", F32, logits, ref)


def test_random_fill(lib):
    n, seed, std = 5000, 0xC0FFEE12345, 0.02
    out = poison((n,), DT[F32])
    run(lib, "sb_random_fill", F32, p(out), ctypes.c_int64(n), ctypes.c_uint64(seed), ctypes.c_float(std))
    ref = torch.tensor([random_weight(seed, i, std) for i in range(n)], dtype=torch.float64, device="cuda")
    check("random weights = rng.h randomWeight", F32, out, ref)


def run_family(lib):
    lib.sb_random_fill.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_float]
    lib.sb_softcap.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_float]
    for t in TYPES:
        test_silu_bias_embedding(lib, t)
        test_family_elementwise(lib, t)
    test_random_fill(lib)


if __name__ == "__main__":
    main(run_family, __doc__)
