"""prefill_attention family (prefill_attention.cuh, prefill_attention.cu): prompt chunks on tensor
cores, on the cases of harness.ATTENTION_CASES that have a chunk of 8 rows or more, split as the
engine splits a step (tiles of 64 rows on tensor cores, the other rows through the paged kernel's
row list), against the same float64 reference as the paged kernel. fp16/bf16 and the head dims
prefillAttentionSupported accepts, with and without soft-capping.
Usage: python3 kernels/test/test_prefill_attention.py [--arch 90]"""
import ctypes
import torch
from harness import ATTENTION_CASES, BF16, DT, F16, AttentionCase, check, engine_split, main, p, poison, run


def test_prefill_attention(lib, t):
    for heads, kvh, dim, window, seqs, cap in ATTENTION_CASES:
        tiles, others = engine_split(seqs)
        if not tiles or not lib.sb_prefill_attention_supported(t, dim):
            continue
        c = AttentionCase(t, heads, kvh, dim, window, seqs, cap)
        c.write_kv(lib)
        out = poison((c.rows, heads * dim), DT[t])
        tl = torch.tensor(tiles, dtype=torch.int32, device="cuda").flatten()
        run(lib, "sb_prefill_attention", t, p(c.q), heads * dim, p(c.kc), p(c.vc), p(c.tables), c.max_blocks, p(c.rs), p(c.rp), p(tl), len(tiles),
            heads, kvh, dim, c.bs, window, ctypes.c_float(c.scale), p(out), ctypes.c_float(cap))
        if others:
            ri = torch.tensor(others, dtype=torch.int32, device="cuda")
            run(lib, "sb_paged_attention", t, p(c.q), heads * dim, p(c.kc), p(c.vc), p(c.tables), c.max_blocks, p(c.rs), p(c.rp), p(ri), len(others),
                heads, kvh, dim, c.bs, window, ctypes.c_float(c.scale), p(out), c.max_keys, None, ctypes.c_int64(0), ctypes.c_float(cap))
        check(f"prefill attention (mma) {c.name()} tiles {len(tiles)} + {len(others)} rows", t, out.view(c.rows, heads, dim), c.ref())


def run_family(lib):
    for t in (F16, BF16):
        test_prefill_attention(lib, t)


if __name__ == "__main__":
    main(run_family, __doc__)
