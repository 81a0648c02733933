"""rope family (rope.cuh, rope.cu): rotary embedding of q and k in a fused qkv buffer (one frequency table,
or one per sequence with an attention factor), against float64 PyTorch.
Usage: python3 kernels/test/test_rope.py [--arch 90]"""
import ctypes
import torch
from harness import DT, TOL, TYPES, check, main, p, run


def test_rope(lib, t):
    rows, heads, kvh, dim = 29, 32, 8, 128
    ld_q, ld_k = heads * dim + 2 * kvh * dim, heads * dim + 2 * kvh * dim
    buf = torch.randn(rows, ld_q, device="cuda").to(DT[t])
    pos = torch.randint(0, 4096, (rows,), device="cuda", dtype=torch.int32)
    inv = 1.0 / (1e6 ** (torch.arange(0, dim, 2, device="cuda", dtype=torch.float32) / dim))
    ref = buf.double().clone()
    ang = pos.double()[:, None] * inv.double()[None, :]
    cos, sin = torch.cos(ang), torch.sin(ang)
    def rot(v):  # v [rows, h, dim]
        a, b = v[..., : dim // 2], v[..., dim // 2 :]
        return torch.cat([a * cos[:, None] - b * sin[:, None], b * cos[:, None] + a * sin[:, None]], -1)
    q = ref[:, : heads * dim].view(rows, heads, dim)
    k = ref[:, heads * dim : heads * dim + kvh * dim].view(rows, kvh, dim)
    ref[:, : heads * dim] = rot(q).reshape(rows, -1)
    ref[:, heads * dim : heads * dim + kvh * dim] = rot(k).reshape(rows, -1)
    kptr = ctypes.c_void_p(buf.data_ptr() + heads * dim * buf.element_size())
    run(lib, "sb_rope", t, p(buf), ld_q, kptr, ld_k, p(pos), p(inv), rows, heads, kvh, dim, None, ctypes.c_float(1.0))
    # Angles of up to 4096 rad in fp32 carry ~1e-4 absolute error: same in transformers.
    check("rope (q, k in a fused qkv buffer)", t, buf, ref, max(TOL[t], 2e-4))


def test_rope_per_row(lib, t):
    """Issue 18: frequencies per row (freqRow picks a row of a [sequences, dim / 2] table, as dynamic
    NTK and longrope give each sequence its own) and cos/sin scaled by the attention factor (yarn, longrope)."""
    rows, heads, kvh, dim, nseq, factor = 23, 8, 2, 96, 3, 1.17
    ld = heads * dim + 2 * kvh * dim
    buf = torch.randn(rows, ld, device="cuda").to(DT[t])
    pos = torch.randint(0, 2048, (rows,), device="cuda", dtype=torch.int32)
    seq = torch.randint(0, nseq, (rows,), device="cuda", dtype=torch.int32)
    bases = torch.tensor([1e4, 5e4, 1e6], device="cuda", dtype=torch.float64)
    inv = (1.0 / (bases[:, None] ** (torch.arange(0, dim, 2, device="cuda", dtype=torch.float64) / dim))).float().contiguous()
    ref = buf.double().clone()
    ang = pos.double()[:, None] * inv.double()[seq.long()]
    cos, sin = torch.cos(ang) * factor, torch.sin(ang) * factor
    def rot(v):
        a, b = v[..., : dim // 2], v[..., dim // 2 :]
        return torch.cat([a * cos[:, None] - b * sin[:, None], b * cos[:, None] + a * sin[:, None]], -1)
    ref[:, : heads * dim] = rot(ref[:, : heads * dim].view(rows, heads, dim)).reshape(rows, -1)
    ref[:, heads * dim : (heads + kvh) * dim] = rot(ref[:, heads * dim : (heads + kvh) * dim].view(rows, kvh, dim)).reshape(rows, -1)
    kptr = ctypes.c_void_p(buf.data_ptr() + heads * dim * buf.element_size())
    run(lib, "sb_rope", t, p(buf), ld, kptr, ld, p(pos), p(inv), rows, heads, kvh, dim, p(seq), ctypes.c_float(factor))
    check("rope, per-row frequencies, attention factor", t, buf, ref, max(TOL[t], 2e-4))


def run_family(lib):
    for t in TYPES:
        test_rope(lib, t)
        test_rope_per_row(lib, t)


if __name__ == "__main__":
    main(run_family, __doc__)
