"""Each kernel family against PyTorch on fresh random data (run on the GPU machine).

Builds kernels.cu + capi.cu into a shared library, poisons every output with NaN before each
launch, and compares with a float64 PyTorch reference by relative error. Also times our SGMV
against PyTorch's gather+bmm LoRA (the peer from PERFORMANCE.md) in the same run.
Usage: python3 kernels/test/kernels_test.py [--arch 90] [--bench-out FILE]
"""
import argparse, ctypes, json, math, os, subprocess, sys, tempfile
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
F32, F16, BF16 = 0, 1, 2
DT = {F32: torch.float32, F16: torch.float16, BF16: torch.bfloat16}
TOL = {F32: 1e-5, F16: 2e-3, BF16: 1.2e-2}
failures = []


def build(arch):
    out = os.path.join(tempfile.mkdtemp(), "libsbkernels.so")
    cmd = ["nvcc", "-std=c++17", "-O3", "--expt-relaxed-constexpr", "-shared", "-Xcompiler", "-fPIC",
           f"-gencode=arch=compute_{arch},code=sm_{arch}", os.path.join(HERE, "..", "kernels.cu"), os.path.join(HERE, "capi.cu"), "-o", out]
    subprocess.run(cmd, check=True)
    return ctypes.CDLL(out)


def p(t):
    return ctypes.c_void_p(t.data_ptr())


def rel(out, ref):
    out, ref = out.double(), ref.double()
    if torch.isnan(out).any():
        return float("inf")
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def check(name, t, out, ref, tol=None):
    e = rel(out, ref)
    ok = e <= (tol or TOL[t])
    print(f"  {'ok ' if ok else 'BAD'} {name:<48} {['f32','f16','bf16'][t]:>5}  rel err {e:.2e}")
    if not ok:
        failures.append(f"{name} {t}: {e}")


def run(lib, fn, *args):
    rc = getattr(lib, fn)(*args)
    torch.cuda.synchronize()
    if rc != 0:
        failures.append(f"{fn}: CUDA error {rc}")
        print(f"  BAD {fn}: CUDA error {rc}")


def poison(shape, dtype):
    return torch.full(shape, float("nan"), dtype=dtype, device="cuda")


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
    run(lib, "sb_rope", t, p(buf), ld_q, kptr, ld_k, p(pos), p(inv), rows, heads, kvh, dim)
    # Angles of up to 4096 rad in fp32 carry ~1e-4 absolute error: same in transformers.
    check("rope (q, k in a fused qkv buffer)", t, buf, ref, max(TOL[t], 2e-4))


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


class Entry(ctypes.Structure):
    _fields_ = [("a", ctypes.c_void_p), ("b", ctypes.c_void_p), ("rank", ctypes.c_int), ("scale", ctypes.c_float)]


class ProjSet(ctypes.Structure):
    _fields_ = [("count", ctypes.c_int), ("entryOffset", ctypes.c_int * 3), ("yCol", ctypes.c_int * 3), ("out", ctypes.c_int * 3)]


def proj_set(offsets, cols, outs):
    ps = ProjSet()
    ps.count = len(offsets)
    for i in range(len(offsets)):
        ps.entryOffset[i], ps.yCol[i], ps.out[i] = offsets[i], cols[i], outs[i]
    return ps


def upload_table(entries):
    host = (Entry * len(entries))(*entries)
    dev = torch.empty(ctypes.sizeof(host), dtype=torch.uint8, device="cuda")
    dev.copy_(torch.frombuffer(bytearray(host), dtype=torch.uint8))
    return dev


def lora_setup(t, nslots, ranks, din, dout):
    A = [torch.randn(r, din, device="cuda").to(DT[t]) / math.sqrt(din) for r in ranks]
    B = [torch.randn(dout, r, device="cuda").to(DT[t]) for r in ranks]
    scales = [0.5 + i * 0.25 for i in range(nslots)]
    table = upload_table([Entry(A[i].data_ptr(), B[i].data_ptr(), ranks[i], scales[i]) for i in range(nslots)])
    return A, B, scales, table


def test_sgmv(lib, t):
    """Three projections sharing one input (like q/k/v) through one launch each for shrink and expand,
    four adapters of ranks 8..128, segments of 1..64 rows, a segment without adapter, a missing module."""
    din, outs = 4096, [1024, 256, 256]
    cols = [0, 1024, 1280]
    ranks = [8, 16, 64, 128]
    nproj = len(outs)
    A = [[torch.randn(r, din, device="cuda").to(DT[t]) / math.sqrt(din) for _ in outs] for r in ranks]
    B = [[torch.randn(o, r, device="cuda").to(DT[t]) for o in outs] for r in ranks]
    scales = [0.5 + i * 0.25 for i in range(len(ranks))]
    absent = {(1, 2)}  # slot 1 has no adapter on projection 2
    entries = []
    for sl_, r in enumerate(ranks):
        for pj in range(nproj):
            if (sl_, pj) in absent:
                entries.append(Entry(None, None, 0, 0.0))
            else:
                entries.append(Entry(A[sl_][pj].data_ptr(), B[sl_][pj].data_ptr(), r, scales[sl_]))
    table = upload_table(entries)
    seg_rows = [3, 1, 17, 5, 1, 9, 64]
    seg_slot = [0, -1, 2, 3, 1, 2, 1]
    start = [0]
    for n in seg_rows:
        start.append(start[-1] + n)
    rows, max_rank, width = start[-1], max(ranks), sum(outs)
    x = torch.randn(rows, din, device="cuda").to(DT[t])
    y = torch.randn(rows, width, device="cuda").to(DT[t])
    y0 = y.double().clone()
    tmp = torch.full((rows, nproj * max_rank), float("nan"), device="cuda")
    ss = torch.tensor(start, dtype=torch.int32, device="cuda")
    sl = torch.tensor(seg_slot, dtype=torch.int32, device="cuda")
    ps = proj_set(list(range(nproj)), cols, outs)
    run(lib, "sb_sgmv_shrink", t, p(x), din, p(tmp), max_rank, p(table), nproj, ctypes.byref(ps), p(ss), p(sl), len(seg_rows), max(seg_rows), rows)
    run(lib, "sb_sgmv_expand", t, p(tmp), max_rank, p(y), width, p(table), nproj, ctypes.byref(ps), p(ss), p(sl), len(seg_rows), max(seg_rows))
    ref = y0.clone()
    for i, n in enumerate(seg_rows):
        s_ = seg_slot[i]
        if s_ < 0:
            continue
        xs = x[start[i] : start[i] + n].double()
        for pj in range(nproj):
            if (s_, pj) in absent:
                continue
            ref[start[i] : start[i] + n, cols[pj] : cols[pj] + outs[pj]] += scales[s_] * (xs @ A[s_][pj].double().T) @ B[s_][pj].double().T
    # Only the LoRA delta carries kernel error; compare it against the reference delta.
    check("sgmv 3 projections, ranks 8..128, mixed segments", t, y.double() - y0, ref - y0)


def torch_attention(q, kc, vc, tables, row_seq, row_pos, heads, kvh, dim, bs, window, scale):
    out = torch.zeros(q.shape[0], heads, dim, dtype=torch.float64, device="cuda")
    g = heads // kvh
    for r in range(q.shape[0]):
        pos = int(row_pos[r])
        lo = max(0, pos - window + 1) if window > 0 else 0
        idx = torch.arange(lo, pos + 1, device="cuda")
        slots = tables[int(row_seq[r])][idx // bs].long() * bs + idx % bs
        K = kc[slots].double().view(-1, kvh, dim)
        V = vc[slots].double().view(-1, kvh, dim)
        for h in range(heads):
            s = (K[:, h // g] @ q[r, h].double()) * scale
            out[r, h] = torch.softmax(s, 0) @ V[:, h // g]
    return out


def test_attention(lib, t):
    lib.sb_attention_workspace.restype = ctypes.c_int64
    prefill = [(0, 40), (33, 1), (0, 3), (70, 1), (12, 9)]  # (start position of this chunk, rows)
    decode = [(900, 1), (1000, 1)]  # few rows, long contexts: split-K
    for heads, kvh, dim, window, seqs in [(32, 8, 128, 0, prefill), (4, 2, 16, 5, prefill), (28, 4, 128, 0, prefill), (8, 8, 64, 7, prefill),
                                         (32, 8, 128, 0, decode), (28, 4, 128, 0, decode), (4, 2, 16, 300, decode)]:
        bs = 16
        nblocks = 160
        row_seq, row_pos = [], []
        for s, (p0, n) in enumerate(seqs):
            for j in range(n):
                row_seq.append(s)
                row_pos.append(p0 + j)
        rows = len(row_seq)
        max_blocks = max(p0 + n for p0, n in seqs) // bs + 1
        perm = torch.randperm(nblocks, device="cuda")[: len(seqs) * max_blocks].view(len(seqs), max_blocks).int().contiguous()
        kvdim = kvh * dim
        kc = torch.randn(nblocks * bs, kvdim, device="cuda").to(DT[t])
        vc = torch.randn(nblocks * bs, kvdim, device="cuda").to(DT[t])
        q = torch.randn(rows, heads * dim, device="cuda").to(DT[t])
        k_new = torch.randn(rows, kvdim, device="cuda").to(DT[t])
        v_new = torch.randn(rows, kvdim, device="cuda").to(DT[t])
        rs = torch.tensor(row_seq, dtype=torch.int32, device="cuda")
        rp = torch.tensor(row_pos, dtype=torch.int32, device="cuda")
        slots = (perm[rs.long(), (rp // bs).long()] * bs + rp % bs).int()
        run(lib, "sb_write_kv", t, p(k_new), p(v_new), kvdim, p(slots), rows, kvdim, p(kc), p(vc))
        ok = torch.equal(kc[slots.long()], k_new) and torch.equal(vc[slots.long()], v_new)
        print(f"  {'ok ' if ok else 'BAD'} write_kv into paged cache                            {['f32','f16','bf16'][t]:>5}")
        if not ok:
            failures.append("write_kv")
        out = poison((rows, heads * dim), DT[t])
        scale = 1 / math.sqrt(dim)
        max_keys = max(row_pos) + 1
        ws_floats = lib.sb_attention_workspace(rows, heads, kvh, dim, max_keys)
        ws = torch.full((max(ws_floats, 1),), float("nan"), device="cuda")
        run(lib, "sb_paged_attention", t, p(q), heads * dim, p(kc), p(vc), p(perm), max_blocks, p(rs), p(rp), rows, heads, kvh, dim, bs, window, ctypes.c_float(scale), p(out), max_keys, p(ws), ctypes.c_int64(ws_floats))
        ref = torch_attention(q.view(rows, heads, dim), kc, vc, perm, row_seq, row_pos, heads, kvh, dim, bs, window, scale)
        check(f"paged attention h{heads}/kv{kvh} d{dim} window {window}{' split-K' if ws_floats else ''}", t, out.view(rows, heads, dim), ref)


def test_argmax(lib):
    rows, vocab = 13, 32000
    logits = torch.randn(rows, vocab, device="cuda") * 3
    logits[3, 100] = logits[3, 200] = 50.0  # a tie: the lower id wins, as torch.argmax
    ids = torch.full((rows,), -1, dtype=torch.int32, device="cuda")
    lp = torch.full((rows,), float("nan"), device="cuda")
    lse = torch.full((rows,), float("nan"), device="cuda")
    run(lib, "sb_argmax_logprob", p(logits), rows, vocab, p(ids), p(lp), p(lse))
    ref_ids = logits.argmax(-1)
    ref_lsm = torch.log_softmax(logits.double(), -1)
    ok = torch.equal(ids.long(), ref_ids)
    print(f"  {'ok ' if ok else 'BAD'} argmax (ties -> lowest id)")
    if not ok:
        failures.append("argmax")
    check("argmax logprob", F32, lp, ref_lsm.gather(1, ref_ids[:, None])[:, 0])
    check("log-sum-exp", F32, lse, torch.logsumexp(logits.double(), -1))


def bench_lora(lib, arch):
    """SGMV vs PyTorch gather+bmm (Punica's baseline): batch 64 decode rows, 64 distinct rank-16 adapters, 4096 -> 16 -> 4096."""
    t, n, din, dout, r = BF16, 64, 4096, 4096, 16
    A, B, scales, table = lora_setup(t, n, [r] * n, din, dout)
    x = torch.randn(n, din, device="cuda").to(DT[t])
    y = torch.zeros(n, dout, device="cuda").to(DT[t])
    tmp = torch.zeros(n, r, device="cuda")
    ss = torch.arange(n + 1, dtype=torch.int32, device="cuda")
    sl = torch.arange(n, dtype=torch.int32, device="cuda")
    ps = proj_set([0], [0], [dout])
    def ours():
        lib.sb_sgmv_shrink(t, p(x), din, p(tmp), r, p(table), 1, ctypes.byref(ps), p(ss), p(sl), n, 1, n)
        lib.sb_sgmv_expand(t, p(tmp), r, p(y), dout, p(table), 1, ctypes.byref(ps), p(ss), p(sl), n, 1)
    Ast, Bst = torch.stack(A), torch.stack(B)  # [n, r, din], [n, dout, r]
    idx = torch.arange(n, device="cuda")
    def peer():
        a = Ast[idx]  # gather each row's adapter
        b = Bst[idx]
        h = torch.bmm(x[:, None, :], a.transpose(1, 2))
        return y + torch.bmm(h, b.transpose(1, 2))[:, 0]
    def timeit(f):
        for _ in range(20):
            f()
        torch.cuda.synchronize()
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
        times = []
        for _ in range(50):
            ev[0].record(); f(); ev[1].record(); torch.cuda.synchronize()
            times.append(ev[0].elapsed_time(ev[1]) * 1000)
        times.sort()
        return times[len(times) // 2]
    t_ours, t_peer = timeit(ours), timeit(peer)
    bytes_moved = n * (r * din + dout * r) * 2
    print(f"  LoRA batch 64 x 64 distinct rank-16 adapters 4096->16->4096: SGMV {t_ours:.1f} us, PyTorch gather+bmm {t_peer:.1f} us; adapter bytes {bytes_moved/1e6:.1f} MB")
    return {"sgmv_us": t_ours, "torch_gather_bmm_us": t_peer, "adapter_bytes": bytes_moved}


def profile_decode_layer(lib, batch=64, ctx=1024):
    """Times each piece of one Mistral-7B decoder layer at decode shape (bf16), ours and cuBLAS via
    torch.matmul for the GEMMs, so the step time can be attributed. Printed, and returned."""
    t, H, I, NH, NKV, D, bs = BF16, 4096, 14336, 32, 8, 128, 16
    QKV = NH * D + 2 * NKV * D
    def timeit(f, reps=50):
        for _ in range(10):
            f()
        torch.cuda.synchronize()
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
        ev[0].record()
        for _ in range(reps):
            f()
        ev[1].record()
        torch.cuda.synchronize()
        return ev[0].elapsed_time(ev[1]) * 1000 / reps
    x = torch.randn(batch, H, device="cuda").to(DT[t])
    res = torch.randn(batch, H, device="cuda").to(DT[t])
    w = torch.ones(H, device="cuda").to(DT[t])
    out = torch.empty(batch, H, device="cuda").to(DT[t])
    wqkv, wo = torch.randn(QKV, H, device="cuda").to(DT[t]), torch.randn(H, NH * D, device="cuda").to(DT[t])
    wgu, wd = torch.randn(2 * I, H, device="cuda").to(DT[t]), torch.randn(H, I, device="cuda").to(DT[t])
    qkv = torch.randn(batch, QKV, device="cuda").to(DT[t])
    gu = torch.randn(batch, 2 * I, device="cuda").to(DT[t])
    act = torch.empty(batch, I, device="cuda").to(DT[t])
    nblocks = batch * (ctx // bs + 1)
    kc = torch.randn(nblocks * bs, NKV * D, device="cuda").to(DT[t])
    vc = torch.randn(nblocks * bs, NKV * D, device="cuda").to(DT[t])
    tables = torch.arange(nblocks, dtype=torch.int32, device="cuda").view(batch, -1).contiguous()
    rs = torch.arange(batch, dtype=torch.int32, device="cuda")
    rp = torch.full((batch,), ctx - 1, dtype=torch.int32, device="cuda")
    slots = (tables[:, (ctx - 1) // bs] * bs + (ctx - 1) % bs).int().contiguous()
    inv = 1.0 / (1e6 ** (torch.arange(0, D, 2, device="cuda", dtype=torch.float32) / D))
    att = torch.empty(batch, NH * D, device="cuda").to(DT[t])
    ws_floats = lib.sb_attention_workspace(batch, NH, NKV, D, ctx)
    ws = torch.empty(max(ws_floats, 1), device="cuda")
    kptr = ctypes.c_void_p(qkv.data_ptr() + NH * D * qkv.element_size())
    vptr = ctypes.c_void_p(qkv.data_ptr() + (NH + NKV) * D * qkv.element_size())
    up = ctypes.c_void_p(gu.data_ptr() + I * gu.element_size())
    parts = {
        "rmsnorm x2": 2 * timeit(lambda: lib.sb_rmsnorm(t, p(x), p(res), p(w), batch, H, ctypes.c_float(1e-5), p(out))),
        "gemm qkv": timeit(lambda: torch.matmul(x, wqkv.T)),
        "rope": timeit(lambda: lib.sb_rope(t, p(qkv), QKV, kptr, QKV, p(rp), p(inv), batch, NH, NKV, D)),
        "write kv": timeit(lambda: lib.sb_write_kv(t, kptr, vptr, QKV, p(slots), batch, NKV * D, p(kc), p(vc))),
        "attention": timeit(lambda: lib.sb_paged_attention(t, p(qkv), QKV, p(kc), p(vc), p(tables), tables.shape[1], p(rs), p(rp), batch, NH, NKV, D, bs, 0, ctypes.c_float(D ** -0.5), p(att), ctx, p(ws), ctypes.c_int64(ws_floats))),
        "gemm o": timeit(lambda: torch.matmul(att, wo.T)),
        "gemm gate|up": timeit(lambda: torch.matmul(x, wgu.T)),
        "silu*mul": timeit(lambda: lib.sb_silu_mul(t, p(gu), up, 2 * I, batch, I, p(act))),
        "gemm down": timeit(lambda: torch.matmul(act, wd.T)),
    }
    total = sum(parts.values())
    weight_bytes = (QKV * H + H * NH * D + 2 * I * H + H * I) * 2
    kv_bytes = batch * ctx * NKV * D * 2 * 2
    print(f"  one decoder layer at batch {batch}, {ctx}-token context (bf16), GPU time per call:")
    for k, v in parts.items():
        print(f"    {k:<14} {v:8.1f} us  ({100 * v / total:4.1f}%)")
    print(f"    {'sum':<14} {total:8.1f} us; x32 layers = {total * 32 / 1000:.2f} ms; layer floor {((weight_bytes + kv_bytes) / 3e12) * 1e6:.0f} us at 3 TB/s "
          f"(weights {weight_bytes / 1e6:.0f} MB, KV {kv_bytes / 1e6:.0f} MB)")
    return {k: v for k, v in parts.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="90")
    ap.add_argument("--bench-out")
    a = ap.parse_args()
    torch.manual_seed(0)
    lib = build(a.arch)
    for t in (F32, F16, BF16):
        print(f"[{['float32','float16','bfloat16'][t]}]")
        test_rmsnorm(lib, t)
        test_rope(lib, t)
        test_silu_bias_embedding(lib, t)
        test_sgmv(lib, t)
        test_attention(lib, t)
    test_argmax(lib)
    res = bench_lora(lib, a.arch)
    res["decode_layer_us"] = profile_decode_layer(lib)
    if a.bench_out:
        with open(a.bench_out, "w") as f:
            json.dump(res, f)
    print(f"{len(failures)} failed" if failures else "all kernel checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
