"""attention family (attention.cuh, attention.cu): KV cache writes, and paged attention over every
case of harness.ATTENTION_CASES (prefill chunks, decode with split-K, sliding windows, GQA, head
dims 16-256 with 80, attention-logit soft-capping) against a float64 PyTorch reference.
Usage: python3 kernels/test/test_attention.py [--arch 90]"""
import ctypes
import torch
from harness import ATTENTION_CASES, DT, SHORT, TYPES, AttentionCase, check, main, p, poison, run, verdict


def test_attention(lib, t):
    lib.sb_attention_workspace.restype = ctypes.c_int64
    for heads, kvh, dim, window, seqs, cap in ATTENTION_CASES:
        c = AttentionCase(t, heads, kvh, dim, window, seqs, cap)
        c.write_kv(lib)
        ok = torch.equal(c.kc[c.slots.long()], c.k_new) and torch.equal(c.vc[c.slots.long()], c.v_new)
        verdict(ok, f"write_kv into paged cache                            {SHORT[t]:>5}", "write_kv")
        out = poison((c.rows, heads * dim), DT[t])
        ws_floats = lib.sb_attention_workspace(c.rows, heads, kvh, dim, c.max_keys)
        ws = torch.full((max(ws_floats, 1),), float("nan"), device="cuda")
        run(lib, "sb_paged_attention", t, p(c.q), heads * dim, p(c.kc), p(c.vc), p(c.tables), c.max_blocks, p(c.rs), p(c.rp), None, c.rows,
            heads, kvh, dim, c.bs, window, ctypes.c_float(c.scale), p(out), c.max_keys, p(ws), ctypes.c_int64(ws_floats), ctypes.c_float(cap))
        check(f"paged attention {c.name()} rows {c.rows} keys {c.max_keys}{' split-K' if ws_floats else ''}", t, out.view(c.rows, heads, dim), c.ref())


def run_family(lib):
    for t in TYPES:
        test_attention(lib, t)


if __name__ == "__main__":
    main(run_family, __doc__)
