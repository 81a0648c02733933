"""Each kernel family against PyTorch on fresh random data (run on the GPU machine).

Builds kernels.cu + capi.cu into a shared library, poisons every output with NaN before each
launch, and compares with a float64 PyTorch reference by relative error. Also times our SGMV
against PyTorch's gather+bmm LoRA (the peer from PERFORMANCE.md) in the same run.
Usage: python3 kernels/test/kernels_test.py [--arch 90] [--bench-out FILE] [--only attention,bench]
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


def sgmv_case(lib, t, name, din, outs, ranks, seg_rows, seg_slot, absent=frozenset()):
    """One LoRA set (len(outs) projections sharing x) over segments, through sgmvShrink + sgmvExpand
    and through the one-call sgmv, each against a float64 reference. ranks[i] is slot i's rank."""
    nproj = len(outs)
    cols = [sum(outs[:i]) for i in range(nproj)]
    A = [[torch.randn(r, din, device="cuda").to(DT[t]) / math.sqrt(din) for _ in outs] for r in ranks]
    B = [[torch.randn(o, r, device="cuda").to(DT[t]) for o in outs] for r in ranks]
    scales = [0.5 + (i % 4) * 0.25 for i in range(len(ranks))]
    entries = []
    for sl_, r in enumerate(ranks):
        for pj in range(nproj):
            if (sl_, pj) in absent:
                entries.append(Entry(None, None, 0, 0.0))
            else:
                entries.append(Entry(A[sl_][pj].data_ptr(), B[sl_][pj].data_ptr(), r, scales[sl_]))
    table = upload_table(entries)
    start = [0]
    for n in seg_rows:
        start.append(start[-1] + n)
    rows, max_rank, width = start[-1], max(ranks), sum(outs)
    x = torch.randn(rows, din, device="cuda").to(DT[t])
    y0 = torch.randn(rows, width, device="cuda").to(DT[t])
    ss = torch.tensor(start, dtype=torch.int32, device="cuda")
    sl = torch.tensor(seg_slot, dtype=torch.int32, device="cuda")
    ps = proj_set(list(range(nproj)), cols, outs)
    ref = y0.double().clone()
    for i, n in enumerate(seg_rows):
        s_ = seg_slot[i]
        if s_ < 0:
            continue
        xs = x[start[i] : start[i] + n].double()
        for pj in range(nproj):
            if (s_, pj) in absent:
                continue
            ref[start[i] : start[i] + n, cols[pj] : cols[pj] + outs[pj]] += scales[s_] * (xs @ A[s_][pj].double().T) @ B[s_][pj].double().T
    for api in ("shrink+expand", "sgmv"):
        y = y0.clone()
        tmp = torch.full((rows, nproj * max_rank), float("nan"), device="cuda")
        if api == "sgmv":
            run(lib, "sb_sgmv", t, p(x), din, p(tmp), max_rank, p(y), width, p(table), nproj, ctypes.byref(ps), p(ss), p(sl), len(seg_rows), max(seg_rows), rows)
        else:
            run(lib, "sb_sgmv_shrink", t, p(x), din, p(tmp), max_rank, p(table), nproj, ctypes.byref(ps), p(ss), p(sl), len(seg_rows), max(seg_rows), rows)
            run(lib, "sb_sgmv_expand", t, p(tmp), max_rank, p(y), width, p(table), nproj, ctypes.byref(ps), p(ss), p(sl), len(seg_rows), max(seg_rows))
        # Only the LoRA delta carries kernel error; compare it against the reference delta.
        check(f"sgmv {name} [{api}]", t, y.double() - y0.double(), ref - y0.double())


def test_sgmv(lib, t):
    """LoRA sets of 1..3 projections sharing one input (like q/k/v), both entry points: adapters of
    ranks 8..128, segments of 1..300 rows, a segment without adapter, a missing module, decode
    shapes (64 one-row segments; one 64-row segment), odd sizes (scalar paths)."""
    sgmv_case(lib, t, "3 proj, ranks 8..128, mixed segs", 4096, [1024, 256, 256], [8, 16, 64, 128],
              [3, 1, 17, 5, 1, 9, 64], [0, -1, 2, 3, 1, 2, 1], absent={(1, 2)})
    sgmv_case(lib, t, "64 one-row segs, 64 rank-16 adapters", 4096, [2048, 512, 512], [16] * 64,
              [1] * 64, [i if i != 5 else -1 for i in range(64)], absent={(3, 1)})
    sgmv_case(lib, t, "one 64-row seg, rank 16", 4096, [2048, 512, 512], [16], [64], [0])
    sgmv_case(lib, t, "64 one-row segs, ranks 8..64, in 14336", 14336, [1024], [8, 16, 32, 64], [1] * 64, [i % 4 for i in range(64)])
    sgmv_case(lib, t, "8 segs x 8 rows, 2 proj, rank 32", 4096, [1536, 1536], [32] * 8, [8] * 8, list(range(8)))
    sgmv_case(lib, t, "in 1000, rank 12, 2 proj", 1000, [300, 77], [12, 8], [2, 1, 5], [0, 1, 0])
    sgmv_case(lib, t, "in 1001 (unaligned), ranks 12/8", 1001, [300], [12, 8], [1, 1, 1], [1, 0, -1])
    sgmv_case(lib, t, "prefill 300 rows + 2 decode rows", 4096, [1024], [16, 32], [300, 1, 1], [0, 1, 0])


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


def prefill_tiles(r0, n):
    """The engine's tiles for a prompt chunk of n rows starting at batch row r0: (first row, rows), 64 at most."""
    return [(r0 + k, min(64, n - k)) for k in range(0, n, 64)]


def test_attention(lib, t):
    lib.sb_attention_workspace.restype = ctypes.c_int64
    prefill = [(0, 40), (33, 1), (0, 3), (70, 1), (12, 9)]  # (start position of this chunk, rows)
    decode = [(900, 1), (1000, 1)]  # few rows, long contexts: split-K
    batch64 = [(1000 + (i * 7) % 24, 1) for i in range(64)]  # 64 decode rows ~1K keys: no split, fragmented tables
    long1 = [(4095, 1)]  # batch 1, 4K keys: many splits (the last one empty)
    mixed = [(4000, 1), (5, 1), (100, 1), (2047, 1)]  # splits sized by the longest row: short rows leave most empty
    chunks = [(300, 5), (50, 1), (2, 3)]  # a prefill chunk beside decode rows, split-K
    prompt = [(0, 300), (5, 1)]  # a long prompt (tiles of 64 on tensor cores) beside a decode row
    chunked = [(100, 130), (0, 20), (7, 2)]  # a later chunk of a prompt (unaligned start), a short prompt, two rows
    for heads, kvh, dim, window, seqs in [(32, 8, 128, 0, prefill), (4, 2, 16, 5, prefill), (28, 4, 128, 0, prefill), (8, 8, 64, 7, prefill),
                                         (32, 8, 128, 0, decode), (28, 4, 128, 0, decode), (4, 2, 16, 300, decode),
                                         (32, 8, 128, 0, batch64), (32, 8, 128, 0, long1), (28, 4, 128, 0, mixed), (16, 2, 64, 0, mixed),
                                         (32, 8, 128, 1000, mixed), (32, 8, 128, 0, chunks), (12, 4, 96, 0, chunks), (8, 2, 256, 0, long1),
                                         (8, 2, 128, 0, prompt), (8, 2, 128, 64, chunked), (8, 4, 64, 0, chunked), (4, 2, 16, 0, prompt), (8, 8, 32, 5, prefill)]:
        bs = 16
        row_seq, row_pos = [], []
        for s, (p0, n) in enumerate(seqs):
            for j in range(n):
                row_seq.append(s)
                row_pos.append(p0 + j)
        rows = len(row_seq)
        max_blocks = max(p0 + n for p0, n in seqs) // bs + 1
        nblocks = max(160, len(seqs) * max_blocks + 7)
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
        run(lib, "sb_paged_attention", t, p(q), heads * dim, p(kc), p(vc), p(perm), max_blocks, p(rs), p(rp), None, rows, heads, kvh, dim, bs, window, ctypes.c_float(scale), p(out), max_keys, p(ws), ctypes.c_int64(ws_floats))
        ref = torch_attention(q.view(rows, heads, dim), kc, vc, perm, row_seq, row_pos, heads, kvh, dim, bs, window, scale)
        check(f"paged attention h{heads}/kv{kvh} d{dim} window {window} rows {rows} keys {max_keys}{' split-K' if ws_floats else ''}", t, out.view(rows, heads, dim), ref)
        if lib.sb_prefill_attention_supported(t, dim):
            # As the engine splits a step: sequences with >= 8 rows in tiles of 64 on tensor cores,
            # every other row through the paged kernel's row list.
            tiles, others, r0 = [], [], 0
            for p0, n in seqs:
                if n >= 8:
                    tiles += prefill_tiles(r0, n)
                else:
                    others += range(r0, r0 + n)
                r0 += n
            if tiles:
                out2 = poison((rows, heads * dim), DT[t])
                tl = torch.tensor(tiles, dtype=torch.int32, device="cuda").flatten()
                run(lib, "sb_prefill_attention", t, p(q), heads * dim, p(kc), p(vc), p(perm), max_blocks, p(rs), p(rp), p(tl), len(tiles), heads, kvh, dim, bs, window, ctypes.c_float(scale), p(out2))
                if others:
                    ri = torch.tensor(others, dtype=torch.int32, device="cuda")
                    run(lib, "sb_paged_attention", t, p(q), heads * dim, p(kc), p(vc), p(perm), max_blocks, p(rs), p(rp), p(ri), len(others), heads, kvh, dim, bs, window, ctypes.c_float(scale), p(out2), max_keys, None, ctypes.c_int64(0))
                check(f"prefill attention (mma) h{heads}/kv{kvh} d{dim} window {window} tiles {len(tiles)} + {len(others)} rows", t, out2.view(rows, heads, dim), ref)


class RowFinish(ctypes.Structure):
    _fields_ = [("seed", ctypes.c_uint64), ("position", ctypes.c_uint64), ("temperature", ctypes.c_float), ("topP", ctypes.c_float),
                ("repetitionPenalty", ctypes.c_float), ("topK", ctypes.c_int32), ("maskOffset", ctypes.c_int32),
                ("penaltyOffset", ctypes.c_int32), ("penaltyCount", ctypes.c_int32), ("target", ctypes.c_int32),
                ("topN", ctypes.c_int32), ("sample", ctypes.c_int32), ("workRow", ctypes.c_int32)]


M64 = (1 << 64) - 1


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def uniform(seed, position):
    """native/src/sampler.cc's uniformFromSeed in Python integers."""
    h = splitmix64(splitmix64(seed) ^ ((position * 0xD1B54A32D192ED03) & M64))
    return (h >> 11) * (1.0 / 9007199254740992.0)


def ref_choose(x, r, mask_bits, pen):
    """The documented semantics of sampling.cuh, written plainly (float32 logits, exact int64 weights)."""
    z = x.clone()
    if mask_bits is not None:
        z[~mask_bits] = float("-inf")
    if pen:
        idx = torch.tensor(sorted(set(pen)), device=x.device).long()
        zz, pt = z[idx], torch.tensor(r.repetitionPenalty, device=x.device)
        z[idx] = torch.where(zz > 0, zz / pt, zz * pt)  # tensor / tensor: true division, as the kernel
    fin = z != float("-inf")
    if not fin.any():
        return -1
    if r.temperature <= 0:
        return int(torch.nonzero(z == z.max())[0])  # lowest id among the best
    z = z / torch.tensor(r.temperature, device=x.device)
    m = z[fin].max()
    w = torch.where(fin, torch.round(torch.exp(z - m) * 4294967296.0).double(), torch.zeros_like(z, dtype=torch.float64)).long()
    kept = fin.clone()
    if 0 < r.topK < int(fin.sum()):
        kept &= z >= torch.topk(z[fin], r.topK).values[-1]
    if r.topP < 1:
        total = int(w[kept].sum())
        want = min(max(math.ceil(r.topP * total), 1), total)
        order = torch.argsort(z[kept], descending=True, stable=True)
        zs, cw = z[kept][order], torch.cumsum(w[kept][order], 0)
        kept &= z >= zs[int(torch.nonzero(cw >= want)[0])]  # every tie of the edge value stays
    wk = torch.where(kept, w, torch.zeros_like(w))
    S = int(wk.sum())
    rr = min(int(uniform(r.seed, r.position) * S), S - 1)
    cum = torch.cumsum(wk, 0)
    return int(torch.nonzero(cum > rr)[0])


def test_finish_rows(lib):
    """Prompt logprobs, alternatives, greedy, and seeded sampling with mask / penalty / temperature /
    top-k / top-p, against a plain reference of the same semantics; plus a distribution check."""
    for vocab in (32000, 152064):
        gen = torch.Generator(device="cuda").manual_seed(vocab)
        rows = 48
        logits = torch.randn(rows, vocab, device="cuda", generator=gen) * 4
        logits[0, 100] = logits[0, 200] = 50.0  # a tie: the lower id wins, as torch.argmax
        logits[5, :300] = 30.0  # many ties at the k-th value: top-k keeps them all
        params = (RowFinish * rows)()
        masks, pens, mask_of, pen_of = [], [], {}, {}
        words = (vocab + 31) // 32
        for i in range(rows):
            r = params[i]
            r.seed, r.position = 1000 + i, 7 + 3 * i
            r.temperature = [0.0, 0.7, 1.0, 1.5][i % 4] if i > 0 else 0.0
            r.topP = [1.0, 0.9, 0.5, 1.0, 0.95][i % 5]
            r.repetitionPenalty = 1.0
            r.topK = [0, 50, 1, 0, 5, 0][i % 6] if i != 5 else 40
            r.maskOffset, r.penaltyOffset, r.penaltyCount = -1, 0, 0
            r.target = (i * 7919) % vocab if i % 3 else -1
            r.topN = [0, 5, 20][i % 3]
            r.sample, r.workRow = int(i % 8 != 7), i
            if i % 4 == 2:
                allowed = torch.rand(vocab, device="cuda", generator=gen) < 0.3
                if i == 10:
                    allowed[:] = False  # nothing allowed: status 1
                bits = torch.zeros(words * 32, dtype=torch.int64, device="cuda")
                bits[:vocab] = allowed.long()
                w = (bits.view(words, 32) << torch.arange(32, device="cuda")).sum(1)
                r.maskOffset = sum(len(m_) for m_ in masks)
                masks.append(w)
                mask_of[i] = allowed
            if i % 5 == 3:
                pen = torch.randint(0, vocab, (40,), device="cuda", generator=gen).unique().int()
                pen = torch.cat([pen, logits[i].topk(3).indices.int()]).unique()
                r.repetitionPenalty, r.penaltyOffset, r.penaltyCount = 1.3, sum(len(q) for q in pens), len(pen)
                pens.append(pen)
                pen_of[i] = pen.tolist()
        dev_params = torch.frombuffer(bytearray(params), dtype=torch.uint8).cuda()
        dmask = torch.cat(masks)  # 32-bit words held in int64: wrap into int32
        dmask = torch.where(dmask >= 2**31, dmask - 2**32, dmask).int()
        dpen = torch.cat(pens) if pens else torch.zeros(1, dtype=torch.int32, device="cuda")
        work = torch.full((rows, vocab), float("nan"), device="cuda")
        max_n = 20
        stride = 4 + 2 * max_n
        res = torch.full((rows, stride), -7, dtype=torch.int32, device="cuda")
        run(lib, "sb_finish_rows", p(logits), rows, vocab, p(dev_params), p(dmask), p(dpen), p(work), p(res), stride)
        lsm = torch.log_softmax(logits.double(), -1)
        bad = []
        lp_err = []
        for i in range(rows):
            r = params[i]
            out = res[i]
            if r.target >= 0:
                lp_err.append(abs(out[2:3].view(torch.float32).item() - lsm[i, r.target].item()))
            if r.topN:
                ids = out[4 : 4 + 2 * r.topN : 2].long()
                lps = out[5 : 5 + 2 * r.topN : 2].view(torch.float32)
                ref_ids = torch.argsort(-logits[i], stable=True)[: r.topN]  # ties: lower id first
                if not torch.equal(ids, ref_ids):
                    bad.append(f"row {i} top-{r.topN} ids")
                lp_err.append((lps.double() - lsm[i, ref_ids]).abs().max().item())
            if not r.sample:
                continue
            want = ref_choose(logits[i], r, mask_of.get(i), pen_of.get(i, []))
            got = int(out[0])
            if got != want:
                bad.append(f"row {i}: token {got}, reference {want}")
            if want < 0:
                if int(out[3]) != 1:
                    bad.append(f"row {i}: no status for an empty mask")
            else:
                lp_err.append(abs(out[1:2].view(torch.float32).item() - lsm[i, got].item()))
        ok = not bad and max(lp_err) < 1e-4
        print(f"  {'ok ' if ok else 'BAD'} finish rows vocab {vocab}: {rows} rows, tokens equal the reference, logprob err {max(lp_err):.1e} {bad[:4]}")
        if not ok:
            failures.append(f"finish rows {vocab}: {bad[:4]} {max(lp_err)}")
    # Distribution: 20000 draws from one row, top-k 8, temperature 0.8 -> frequencies match softmax.
    vocab, n = 32000, 20000
    base = torch.randn(vocab, device="cuda") * 0.5
    base[:8] = torch.tensor([6.0, 5.5, 5.2, 5.0, 4.0, 3.9, 3.0, 2.5], device="cuda")
    logits = base.expand(n, vocab).contiguous()
    params = (RowFinish * n)()
    for i in range(n):
        params[i].seed, params[i].position, params[i].temperature, params[i].topP = 42, i, 0.8, 1.0
        params[i].repetitionPenalty, params[i].topK, params[i].maskOffset, params[i].target = 1.0, 8, -1, -1
        params[i].sample, params[i].workRow = 1, i
    dev_params = torch.frombuffer(bytearray(params), dtype=torch.uint8).cuda()
    work = torch.empty(n, vocab, device="cuda")
    res = torch.zeros(n, 4, dtype=torch.int32, device="cuda")
    z = torch.zeros(1, dtype=torch.int32, device="cuda")
    run(lib, "sb_finish_rows", p(logits), n, vocab, p(dev_params), p(z), p(z), p(work), p(res), 4)
    top = torch.topk(base / 0.8, 8)
    expect = torch.softmax(top.values.double(), 0)
    counts = torch.bincount(res[:, 0].long(), minlength=vocab)[top.indices].double()
    tv = 0.5 * (counts / n - expect).abs().sum().item()
    outside = n - int(counts.sum())
    ok = tv < 0.025 and outside == 0
    print(f"  {'ok ' if ok else 'BAD'} sampled frequencies vs softmax over top-8 (20000 draws): total variation {tv:.4f}, outside top-k {outside}")
    if not ok:
        failures.append(f"sampling distribution tv {tv} outside {outside}")
    # Speed: 64 rows sampling with top-p (the slowest path) per vocabulary size.
    for vocab in (32000, 152064):
        rows = 64
        logits = torch.randn(rows, vocab, device="cuda") * 3
        params = (RowFinish * rows)()
        for i in range(rows):
            params[i].seed, params[i].position, params[i].temperature, params[i].topP = i, 1, 1.0, 0.9
            params[i].repetitionPenalty, params[i].topK, params[i].maskOffset, params[i].target = 1.0, 50, -1, -1
            params[i].sample, params[i].workRow = 1, i
        dev_params = torch.frombuffer(bytearray(params), dtype=torch.uint8).cuda()
        work = torch.empty(rows, vocab, device="cuda")
        res = torch.zeros(rows, 4, dtype=torch.int32, device="cuda")
        f = lambda: lib.sb_finish_rows(p(logits), rows, vocab, p(dev_params), p(z), p(z), p(work), p(res), 4)
        for _ in range(3):
            f()
        torch.cuda.synchronize()
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
        ev[0].record()
        for _ in range(20):
            f()
        ev[1].record()
        torch.cuda.synchronize()
        print(f"  finish rows: {rows} rows, top-k 50 + top-p 0.9, vocab {vocab}: {ev[0].elapsed_time(ev[1]) * 1000 / 20:.1f} us")


def gpu_time(lib, f, reps=20, replays=5):
    """GPU time per call of f (which only enqueues work): `reps` calls captured in one CUDA graph (as the
    engine runs a decode step), replayed between CUDA events; launch latency on the host is not counted."""
    st = torch.cuda.Stream()
    lib.sb_set_stream(ctypes.c_void_p(st.cuda_stream))
    try:
        with torch.cuda.stream(st):
            for _ in range(3):
                f()
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=st):
            for _ in range(reps):
                f()
    finally:
        lib.sb_set_stream(None)
    g.replay()
    torch.cuda.synchronize()
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
    ev[0].record()
    for _ in range(replays):
        g.replay()
    ev[1].record()
    torch.cuda.synchronize()
    return ev[0].elapsed_time(ev[1]) * 1000 / (reps * replays)


def bench_lora(lib, arch):
    """SGMV GPU time (back-to-back reps between CUDA events): (1) batch 64 decode rows x 64 distinct rank-16
    adapters, 4096 -> 16 -> 4096, against PyTorch gather+bmm (Punica's baseline); (2) the four LoRA sets of
    one Mistral-7B decoder layer (q|k|v, o, gate|up, down; rank 16 on all seven) at batch 64 with 1, 8 and
    64 distinct adapters, next to the adapter-byte floor at 3 TB/s; (3) the same layer at prefill (one
    adapter, 1024 rows). Each through sgmvShrink + sgmvExpand and (where built) the one-call sgmv."""
    res = {}
    fused = hasattr(lib, "sb_sgmv")
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
    def ours_fused():
        lib.sb_sgmv(t, p(x), din, p(tmp), r, p(y), dout, p(table), 1, ctypes.byref(ps), p(ss), p(sl), n, 1, n)
    Ast, Bst = torch.stack(A), torch.stack(B)  # [n, r, din], [n, dout, r]
    idx = torch.arange(n, device="cuda")
    def peer():
        a = Ast[idx]  # gather each row's adapter
        b = Bst[idx]
        h = torch.bmm(x[:, None, :], a.transpose(1, 2))
        return y + torch.bmm(h, b.transpose(1, 2))[:, 0]
    t_ours, t_peer = gpu_time(lib, ours), gpu_time(lib, peer)
    t_fused = gpu_time(lib, ours_fused) if fused else float("nan")
    bytes_moved = n * (r * din + dout * r) * 2
    print(f"  LoRA batch 64 x 64 distinct rank-16 adapters 4096->16->4096: SGMV {t_ours:.1f} us (one-call sgmv {t_fused:.1f} us), "
          f"PyTorch gather+bmm {t_peer:.1f} us; adapter bytes {bytes_moved/1e6:.1f} MB = {bytes_moved / 3e12 * 1e6:.1f} us at 3 TB/s")
    res.update({"sgmv_us": t_ours, "sgmv_fused_us": t_fused, "torch_gather_bmm_us": t_peer, "adapter_bytes": bytes_moved})
    del A, B, Ast, Bst

    # One Mistral-7B decoder layer's LoRA: table [adapter][q, k, v, o, gate, up, down].
    H, I, Q, KV, nad, maxrows = 4096, 14336, 4096, 1024, 64, 1024
    shapes = [(H, Q), (H, KV), (H, KV), (Q, H), (H, I), (H, I), (I, H)]  # (in, out)
    Ws, entries = [], []
    for s_ in range(nad):
        for din_, dout_ in shapes:
            a = torch.randn(r, din_, device="cuda").to(DT[t]) / math.sqrt(din_)
            b = torch.randn(dout_, r, device="cuda").to(DT[t]) * 0.01
            Ws.append((a, b))
            entries.append(Entry(a.data_ptr(), b.data_ptr(), r, 2.0))
    table7 = upload_table(entries)
    per_adapter = sum((r * i_ + o_ * r) * 2 for i_, o_ in shapes)
    buf = lambda cols: torch.randn(maxrows, cols, device="cuda").to(DT[t])
    h, qkv, att, obuf, gu, act, xo = buf(H), buf(Q + 2 * KV), buf(Q), buf(H), buf(2 * I), buf(I), buf(H)
    tmp7 = torch.zeros(maxrows, 3 * r, device="cuda")
    sets = [(proj_set([0, 1, 2], [0, Q, Q + KV], [Q, KV, KV]), h, H, qkv, Q + 2 * KV),
            (proj_set([3], [0], [H]), att, Q, obuf, H),
            (proj_set([4, 5], [0, I], [I, I]), h, H, gu, 2 * I),
            (proj_set([6], [0], [H]), act, I, xo, H)]
    def layer(nseg, rows, one_call, only=None):
        seg = rows // nseg
        ss_ = torch.tensor([i * seg for i in range(nseg + 1)], dtype=torch.int32, device="cuda")
        sl_ = torch.arange(nseg, dtype=torch.int32, device="cuda")
        def f():
            for ps_, x_, in_, y_, ldy in (sets if only is None else [sets[only]]):
                if one_call:
                    lib.sb_sgmv(t, p(x_), in_, p(tmp7), r, p(y_), ldy, p(table7), 7, ctypes.byref(ps_), p(ss_), p(sl_), nseg, seg, rows)
                else:
                    lib.sb_sgmv_shrink(t, p(x_), in_, p(tmp7), r, p(table7), 7, ctypes.byref(ps_), p(ss_), p(sl_), nseg, seg, rows)
                    lib.sb_sgmv_expand(t, p(tmp7), r, p(y_), ldy, p(table7), 7, ctypes.byref(ps_), p(ss_), p(sl_), nseg, seg)
        return f
    print(f"  LoRA of one Mistral-7B layer (4 sets, rank 16 on all 7 projections, bf16), GPU time per layer:")
    for nseg, rows in ((1, 64), (8, 64), (64, 64), (1, 1024)):
        floor = nseg * per_adapter / 3e12 * 1e6
        t_pair = gpu_time(lib, layer(nseg, rows, False))
        t_one = gpu_time(lib, layer(nseg, rows, True)) if fused else float("nan")
        what = f"{rows} rows, {nseg} adapter{'s' if nseg > 1 else ''} ({rows // nseg} rows each)"
        print(f"    {what:<40} shrink+expand {t_pair:7.1f} us, sgmv {t_one:7.1f} us; adapter bytes {nseg * per_adapter / 1e6:6.1f} MB = floor {floor:5.1f} us")
        key = f"layer_{rows}rows_{nseg}ad"
        res[key + "_pair_us"], res[key + "_sgmv_us"], res[key + "_floor_us"] = t_pair, t_one, floor
        per_set = [(gpu_time(lib, layer(nseg, rows, False, i)), gpu_time(lib, layer(nseg, rows, True, i)) if fused else float("nan")) for i in range(4)]
        print("      per set (pair / sgmv): " + ", ".join(f"{nm} {a:.1f}/{b:.1f}" for nm, (a, b) in zip(("qkv", "o", "gate|up", "down"), per_set)))
    return res


def profile_decode_layer(lib, batch=64, ctx=1024):
    """Times each piece of one Mistral-7B decoder layer at decode shape (bf16), ours and cuBLAS via
    torch.matmul for the GEMMs, so the step time can be attributed. Printed, and returned."""
    t, H, I, NH, NKV, D, bs = BF16, 4096, 14336, 32, 8, 128, 16
    QKV = NH * D + 2 * NKV * D
    timeit = lambda f: gpu_time(lib, f)  # in a CUDA graph, as the engine's decode steps run
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
        "attention": timeit(lambda: lib.sb_paged_attention(t, p(qkv), QKV, p(kc), p(vc), p(tables), tables.shape[1], p(rs), p(rp), None, batch, NH, NKV, D, bs, 0, ctypes.c_float(D ** -0.5), p(att), ctx, p(ws), ctypes.c_int64(ws_floats))),
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


def bench_prefill_attention(lib, peak_tflops=750.0):
    """One layer's attention for one prompt (Mistral-7B heads, bf16, causal): the paged kernel (CUDA
    cores), the tensor-core prefill kernel, and PyTorch's scaled_dot_product_attention (flash) on
    contiguous q/k/v as the peer, against the FLOP floor at the matmul peak."""
    t, NH, NKV, D, bs = BF16, 32, 8, 128, 16
    res = {}
    print("  prefill attention, one layer (32 heads / 8 kv heads, d 128, bf16, causal), GPU time:")
    for n in (512, 2048):
        nb = n // bs + 1
        kc = torch.randn(nb * bs, NKV * D, device="cuda").to(DT[t])
        vc = torch.randn(nb * bs, NKV * D, device="cuda").to(DT[t])
        q = torch.randn(n, NH * D, device="cuda").to(DT[t])
        table = torch.arange(nb, dtype=torch.int32, device="cuda").view(1, nb)
        rs = torch.zeros(n, dtype=torch.int32, device="cuda")
        rp = torch.arange(n, dtype=torch.int32, device="cuda")
        out = torch.empty(n, NH * D, device="cuda").to(DT[t])
        tiles = torch.tensor(prefill_tiles(0, n), dtype=torch.int32, device="cuda").flatten()
        sc = ctypes.c_float(D ** -0.5)
        paged = gpu_time(lib, lambda: lib.sb_paged_attention(t, p(q), NH * D, p(kc), p(vc), p(table), nb, p(rs), p(rp), None, n, NH, NKV, D, bs, 0, sc, p(out), n, None, ctypes.c_int64(0)))
        mma = gpu_time(lib, lambda: lib.sb_prefill_attention(t, p(q), NH * D, p(kc), p(vc), p(table), nb, p(rs), p(rp), p(tiles), tiles.numel() // 2, NH, NKV, D, bs, 0, sc, p(out)))
        qh = q.view(n, NH, D).transpose(0, 1).unsqueeze(0)
        kh = kc[:n].view(n, NKV, D).transpose(0, 1).repeat_interleave(NH // NKV, 0).unsqueeze(0).contiguous()
        vh = vc[:n].view(n, NKV, D).transpose(0, 1).repeat_interleave(NH // NKV, 0).unsqueeze(0).contiguous()
        sdpa = gpu_time(lib, lambda: torch.nn.functional.scaled_dot_product_attention(qh, kh, vh, is_causal=True))
        floor = 4 * (n * n / 2) * D * NH / (peak_tflops * 1e12) * 1e6
        print(f"    {n:5d} tokens: paged {paged:8.1f} us, tensor cores {mma:7.1f} us, torch sdpa {sdpa:7.1f} us; floor {floor:6.1f} us ({peak_tflops:.0f} TFLOP/s)")
        res[f"prefill_attention_{n}"] = {"paged_us": paged, "mma_us": mma, "sdpa_us": sdpa, "floor_us": floor}
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="90")
    ap.add_argument("--bench-out")
    ap.add_argument("--only", help="comma-separated families: norm,rope,elementwise,sgmv,attention,sampling,bench")
    a = ap.parse_args()
    only = set(a.only.split(",")) if a.only else None
    want = lambda name: only is None or name in only
    torch.manual_seed(0)
    lib = build(a.arch)
    per_type = [("norm", test_rmsnorm), ("rope", test_rope), ("elementwise", test_silu_bias_embedding), ("sgmv", test_sgmv), ("attention", test_attention)]
    for t in (F32, F16, BF16):
        print(f"[{['float32','float16','bfloat16'][t]}]")
        for name, test in per_type:
            if want(name):
                test(lib, t)
    if want("sampling"):
        test_finish_rows(lib)
    res = {}
    if want("bench"):
        res = bench_lora(lib, a.arch)
        res["decode_layer_us"] = profile_decode_layer(lib)
        res.update(bench_prefill_attention(lib))
    if a.bench_out:
        with open(a.bench_out, "w") as f:
            json.dump(res, f)
    print(f"{len(failures)} failed" if failures else "all kernel checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
