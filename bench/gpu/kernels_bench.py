"""Kernel-level benchmarks on the GPU machine (scripts/gpu-check.sh --bench runs them before
bench.ts): SGMV against PyTorch's gather+bmm LoRA (Punica's baseline), the LoRA of one Mistral-7B
layer next to its adapter-byte floor, one decoder layer piece by piece at decode shape and for a
2048-token prompt (ours and cuBLAS through torch.matmul: where a step's and a TTFT's time goes),
prefill attention (paged kernel, tensor cores, torch sdpa), the sampling kernel's speed, and whether
LoRA can run beside the base GEMMs (overlap). Builds the kernels with the kernel tests' harness
(kernels/test/harness.py).
Usage: python3 bench/gpu/kernels_bench.py [--arch 90] [--out lora-bench.json] [--only lora|overlap|layer] [--no-sweep]
(--out: read by bench.ts --kernels for the LoRA-vs-PyTorch target.)
"""
import argparse, ctypes, json, math, os, sys
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "kernels", "test"))
from harness import BF16, DT, Entry, RowFinish, build, p, prefill_tiles, proj_set, upload_table  # noqa: E402


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


def lora_setup(t, nslots, ranks, din, dout):
    A = [torch.randn(r, din, device="cuda").to(DT[t]) / math.sqrt(din) for r in ranks]
    B = [torch.randn(dout, r, device="cuda").to(DT[t]) for r in ranks]
    scales = [0.5 + i * 0.25 for i in range(nslots)]
    table = upload_table([Entry(A[i].data_ptr(), B[i].data_ptr(), ranks[i], scales[i]) for i in range(nslots)])
    return A, B, scales, table


# One Mistral-7B decoder layer: (in, out) of q, k, v, o, gate, up, down, and its four LoRA projection sets.
H7, I7, Q7, KV7 = 4096, 14336, 4096, 1024
LAYER_SHAPES = [(H7, Q7), (H7, KV7), (H7, KV7), (Q7, H7), (H7, I7), (H7, I7), (I7, H7)]


def layer_adapters(t, r, nad):
    """nad rank-r adapters on all seven projections of a Mistral-7B layer: the slot table [adapter][proj]
    and the tensors it points at (kept alive by the caller)."""
    keep, entries = [], []
    for _ in range(nad):
        for din_, dout_ in LAYER_SHAPES:
            a = torch.randn(r, din_, device="cuda").to(DT[t]) / math.sqrt(din_)
            b = torch.randn(dout_, r, device="cuda").to(DT[t]) * 0.01
            keep.append((a, b))
            entries.append(Entry(a.data_ptr(), b.data_ptr(), r, 2.0))
    return upload_table(entries), keep


def layer_sets():
    """The layer's LoRA sets as (projection set, input width, output width): q|k|v, o, gate|up, down."""
    H, I, Q, KV = H7, I7, Q7, KV7
    return [(proj_set([0, 1, 2], [0, Q, Q + KV], [Q, KV, KV]), H, Q + 2 * KV), (proj_set([3], [0], [H]), Q, H),
            (proj_set([4, 5], [0, I], [I, I]), H, 2 * I), (proj_set([6], [0], [H]), I, H)]


def bench_finish_rows(lib):
    """Sampling: 64 rows with top-k 50 + top-p 0.9 (the slowest path) per vocabulary size."""
    z = torch.zeros(1, dtype=torch.int32, device="cuda")
    res_all = {}
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
        us = ev[0].elapsed_time(ev[1]) * 1000 / 20
        print(f"  finish rows: {rows} rows, top-k 50 + top-p 0.9, vocab {vocab}: {us:.1f} us")
        res_all[f"finish_rows_64_vocab{vocab}_us"] = us
    return res_all


SIMT, TC = 0, 1  # launch.h LoraKernel


def bench_lora(lib, arch, sweep=True):
    """SGMV GPU time (back-to-back reps between CUDA events): (1) batch 64 decode rows x 64 distinct rank-16
    adapters, 4096 -> 16 -> 4096, against PyTorch gather+bmm (Punica's baseline); (2) the four LoRA sets of
    one Mistral-7B decoder layer (q|k|v, o, gate|up, down; rank 16 on all seven) at batch 64 with 1, 8 and
    64 distinct adapters, next to the adapter-byte floor at 3 TB/s; (3) the same layer at prefill (one
    adapter, 1024 rows). Each through sgmvShrink + sgmvExpand and the one-call sgmv on both of its kernels
    (CUDA cores, tensor cores); then (sweep) the tensor-core grid shapes per set at batch 64."""
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
    H, I, Q, KV, nad, maxrows = H7, I7, Q7, KV7, 64, 1024
    table7, Ws = layer_adapters(t, r, nad)
    per_adapter = sum((r * i_ + o_ * r) * 2 for i_, o_ in LAYER_SHAPES)
    buf = lambda cols: torch.randn(maxrows, cols, device="cuda").to(DT[t])
    h, att, act = buf(H), buf(Q), buf(I)
    tmp7 = torch.zeros(maxrows, 3 * r, device="cuda")
    sets = [(ps_, x_, in_, buf(out_), out_) for (ps_, in_, out_), x_ in zip(layer_sets(), (h, att, h, act))]
    def layer(nseg, rows, one_call, only=None):
        seg = rows // nseg
        ss_ = torch.tensor([i * seg for i in range(nseg + 1)], dtype=torch.int32, device="cuda")
        sl_ = torch.arange(nseg, dtype=torch.int32, device="cuda")
        def f():
            rc = 0
            for ps_, x_, in_, y_, ldy in (sets if only is None else [sets[only]]):
                if one_call:
                    rc = rc or lib.sb_sgmv(t, p(x_), in_, p(tmp7), r, p(y_), ldy, p(table7), 7, ctypes.byref(ps_), p(ss_), p(sl_), nseg, seg, rows)
                else:
                    lib.sb_sgmv_shrink(t, p(x_), in_, p(tmp7), r, p(table7), 7, ctypes.byref(ps_), p(ss_), p(sl_), nseg, seg, rows)
                    lib.sb_sgmv_expand(t, p(tmp7), r, p(y_), ldy, p(table7), 7, ctypes.byref(ps_), p(ss_), p(sl_), nseg, seg)
            return rc
        return f
    def timed(kernel, f, shape=(0, 0), prefetch=True, pdl=False):
        """GPU time of f on one LoRA kernel (the choice is made at launch, so it is baked into the
        captured graph); NaN when a launch fails (a cluster shape this device cannot schedule) or,
        for programmatic dependent launches, when the graph capture refuses them."""
        lib.sb_set_lora_kernel(kernel, shape[0], shape[1], 1 if prefetch else 0, 1 if pdl else 0)
        side = torch.cuda.Stream()  # not the legacy default stream, as in the graphs gpu_time captures
        lib.sb_set_stream(ctypes.c_void_p(side.cuda_stream))
        try:
            with torch.cuda.stream(side):
                rc = f()
            torch.cuda.synchronize()
            if rc != 0:
                return float("nan")
            if not pdl:
                return gpu_time(lib, f)
            try:
                return gpu_time(lib, f)
            except RuntimeError as e:
                print(f"    (programmatic dependent launch not captured: {e})")
                return float("nan")
        finally:
            lib.sb_set_stream(None)
            lib.sb_set_lora_kernel(SIMT, 0, 0, 1, 0)
    names = ("qkv", "o", "gate|up", "down")
    print(f"  LoRA of one Mistral-7B layer (4 sets, rank 16 on all 7 projections, bf16), GPU time per layer:")
    for nseg, rows in ((1, 64), (8, 64), (64, 64), (1, 1024)):
        floor = nseg * per_adapter / 3e12 * 1e6
        t_pair = gpu_time(lib, layer(nseg, rows, False))
        t_one = timed(SIMT, layer(nseg, rows, True)) if fused else float("nan")
        t_tc = timed(TC, layer(nseg, rows, True)) if fused else float("nan")
        what = f"{rows} rows, {nseg} adapter{'s' if nseg > 1 else ''} ({rows // nseg} rows each)"
        print(f"    {what:<40} shrink+expand {t_pair:7.1f} us, sgmv simt {t_one:7.1f} us, sgmv tc {t_tc:7.1f} us; "
              f"adapter bytes {nseg * per_adapter / 1e6:6.1f} MB = floor {floor:5.1f} us")
        key = f"layer_{rows}rows_{nseg}ad"
        res[key + "_pair_us"], res[key + "_sgmv_us"], res[key + "_tc_us"], res[key + "_floor_us"] = t_pair, t_one, t_tc, floor
        per_set = [(gpu_time(lib, layer(nseg, rows, False, i)), timed(SIMT, layer(nseg, rows, True, i)), timed(TC, layer(nseg, rows, True, i)))
                   for i in range(4)] if fused else []
        print("      per set (pair / simt / tc): " + ", ".join(f"{nm} {a:.1f}/{b:.1f}/{c:.1f}" for nm, (a, b, c) in zip(names, per_set)))
        for nm, (_, b, c) in zip(names, per_set):
            res[f"{key}_{nm}_simt_us"], res[f"{key}_{nm}_tc_us"] = b, c
    if fused and sweep:
        # The tensor-core grid by hand (cluster blocks C splitting `in`, output splits E), per set at
        # batch 64: what the launcher's choice (auto) leaves on the table.
        print("  tensor-core sgmv grid sweep, batch 64, per set (us; C = cluster blocks over `in`, E = output splits):")
        grid_shapes = [(c, e) for c in (1, 2, 4, 8, 16) for e in (1, 2, 4, 8)]
        for nseg, rows in ((1, 64), (64, 64)):
            for i, nm in enumerate(names):
                auto = timed(TC, layer(nseg, rows, True, i))
                plain = timed(TC, layer(nseg, rows, True, i), prefetch=False)
                got = {sh: timed(TC, layer(nseg, rows, True, i), sh) for sh in grid_shapes}
                best = min((v, sh) for sh, v in got.items() if v == v) if any(v == v for v in got.values()) else (float("nan"), (0, 0))
                row = " ".join(f"C{c}E{e} {v:.1f}" for (c, e), v in got.items())
                print(f"    {nseg:2d} adapter(s) {nm:<8} auto {auto:6.1f} (no prefetch {plain:6.1f}), best C{best[1][0]}E{best[1][1]} {best[0]:6.1f} | {row}")
                res[f"tc_sweep_{nseg}ad_{nm}"] = {"auto": auto, "no_prefetch": plain, "best": [best[1][0], best[1][1], best[0]], "all": {f"C{c}E{e}": v for (c, e), v in got.items()}}
    if fused:
        # Last (a refused capture could leave the stream in a bad state): the tensor-core kernel as a
        # programmatic dependent launch, each sgmv's prologue overlapping the previous one's end.
        print("  tensor-core sgmv as programmatic dependent launches (us, tc / tc+pdl):")
        for nseg, rows in ((1, 64), (64, 64)):
            cells = []
            for i, nm in enumerate(names + ("layer",)):
                only = i if i < 4 else None
                a_, b_ = timed(TC, layer(nseg, rows, True, only)), timed(TC, layer(nseg, rows, True, only), pdl=True)
                cells.append(f"{nm} {a_:.1f}/{b_:.1f}")
                res[f"tc_pdl_{nseg}ad_{nm}"] = [a_, b_]
            print(f"    {nseg:2d} adapter(s): " + ", ".join(cells))
    return res


def profile_layer(lib, batch=64, ctx=1024, prefill=0, peak_tflops=750.0):
    """Times each piece of one Mistral-7B decoder layer (bf16), ours and cuBLAS via torch.matmul for the
    GEMMs, so a step's time can be attributed: at decode (`batch` rows at a `ctx`-token context, paged
    attention), or with prefill=n, one n-token prompt (tensor-core prefill attention, and the LoRA of one
    rank-16 adapter as the engine runs it for long chunks: two cuBLAS GEMMs per projection). Printed, and
    returned."""
    t, H, I, NH, NKV, D, bs, r = BF16, 4096, 14336, 32, 8, 128, 16, 16
    QKV = NH * D + 2 * NKV * D
    rows = prefill or batch
    nseq = 1 if prefill else batch
    timeit = lambda f: gpu_time(lib, f)  # in a CUDA graph, as the engine's decode steps run
    rnd = lambda *shape: torch.randn(*shape, device="cuda").to(DT[t])
    x, res, out = rnd(rows, H), rnd(rows, H), rnd(rows, H)
    w = torch.ones(H, device="cuda").to(DT[t])
    wqkv, wo, wgu, wd = rnd(QKV, H), rnd(H, NH * D), rnd(2 * I, H), rnd(H, I)
    qkv, gu, act, att = rnd(rows, QKV), rnd(rows, 2 * I), rnd(rows, I), rnd(rows, NH * D)
    keys = prefill if prefill else ctx
    per_seq = keys // bs + 1
    kc, vc = rnd(nseq * per_seq * bs, NKV * D), rnd(nseq * per_seq * bs, NKV * D)
    tables = torch.arange(nseq * per_seq, dtype=torch.int32, device="cuda").view(nseq, -1).contiguous()
    if prefill:
        rs = torch.zeros(rows, dtype=torch.int32, device="cuda")
        rp = torch.arange(rows, dtype=torch.int32, device="cuda")
        slots = rp.clone()
    else:
        rs = torch.arange(batch, dtype=torch.int32, device="cuda")
        rp = torch.full((batch,), ctx - 1, dtype=torch.int32, device="cuda")
        slots = (tables[:, (ctx - 1) // bs] * bs + (ctx - 1) % bs).int().contiguous()
    inv = 1.0 / (1e6 ** (torch.arange(0, D, 2, device="cuda", dtype=torch.float32) / D))
    sc = ctypes.c_float(D ** -0.5)
    kptr = ctypes.c_void_p(qkv.data_ptr() + NH * D * qkv.element_size())
    vptr = ctypes.c_void_p(qkv.data_ptr() + (NH + NKV) * D * qkv.element_size())
    up = ctypes.c_void_p(gu.data_ptr() + I * gu.element_size())
    if prefill:
        tiles = torch.tensor(prefill_tiles(0, rows), dtype=torch.int32, device="cuda").flatten()
        attention = lambda: lib.sb_prefill_attention(t, p(qkv), QKV, p(kc), p(vc), p(tables), per_seq, p(rs), p(rp), p(tiles), tiles.numel() // 2,
                                                     NH, NKV, D, bs, 0, sc, p(att), ctypes.c_float(0))
    else:
        ws_floats = lib.sb_attention_workspace(batch, NH, NKV, D, ctx)
        ws = torch.empty(max(ws_floats, 1), device="cuda")
        attention = lambda: lib.sb_paged_attention(t, p(qkv), QKV, p(kc), p(vc), p(tables), per_seq, p(rs), p(rp), None, batch, NH, NKV, D, bs, 0,
                                                   sc, p(att), ctx, p(ws), ctypes.c_int64(ws_floats), ctypes.c_float(0))
    parts = {
        "rmsnorm x2": 2 * timeit(lambda: lib.sb_rmsnorm(t, p(x), p(res), p(w), rows, H, ctypes.c_float(1e-5), p(out))),
        "gemm qkv": timeit(lambda: torch.matmul(x, wqkv.T)),
        "rope": timeit(lambda: lib.sb_rope(t, p(qkv), QKV, kptr, QKV, p(rp), p(inv), rows, NH, NKV, D, None, ctypes.c_float(1.0))),
        "write kv": timeit(lambda: lib.sb_write_kv(t, kptr, vptr, QKV, p(slots), rows, NKV * D, p(kc), p(vc))),
        "attention": timeit(attention),
        "gemm o": timeit(lambda: torch.matmul(att, wo.T)),
        "gemm gate|up": timeit(lambda: torch.matmul(x, wgu.T)),
        "silu*mul": timeit(lambda: lib.sb_silu_mul(t, p(gu), up, 2 * I, rows, I, p(act))),
        "gemm down": timeit(lambda: torch.matmul(act, wd.T)),
    }
    gemm_flops = 2 * rows * (QKV * H + H * NH * D + 2 * I * H + H * I)
    total = sum(parts.values())
    if prefill:
        # One adapter's LoRA as the engine runs a long chunk: x A^T then y += s (x A^T) B^T per projection.
        lo = [(rnd(r, i), rnd(o, r)) for i, o in LAYER_SHAPES]
        ins = [x, x, x, att, x, x, act]
        lora_t = timeit(lambda: [torch.matmul(torch.matmul(xi, a.T), b.T) for xi, (a, b) in zip(ins, lo)])
        att_flops = 4 * (rows * rows / 2) * D * NH
        floor = (gemm_flops + att_flops) / (peak_tflops * 1e12) * 1e6
        print(f"  one decoder layer, one {rows}-token prompt (bf16), GPU time per call:")
    else:
        weight_bytes = (QKV * H + H * NH * D + 2 * I * H + H * I) * 2
        kv_bytes = batch * ctx * NKV * D * 2 * 2
        floor = (weight_bytes + kv_bytes) / 3e12 * 1e6
        print(f"  one decoder layer at batch {batch}, {ctx}-token context (bf16), GPU time per call:")
    for k, v in parts.items():
        rate = f", {2 * rows * {'gemm qkv': QKV * H, 'gemm o': H * NH * D, 'gemm gate|up': 2 * I * H, 'gemm down': H * I}[k] / v / 1e6:.0f} TFLOP/s" if prefill and k.startswith("gemm") else ""
        print(f"    {k:<14} {v:8.1f} us  ({100 * v / total:4.1f}%{rate})")
    what = f"FLOP floor {floor:.0f} us at {peak_tflops:.0f} TFLOP/s" if prefill else f"floor {floor:.0f} us at 3 TB/s"
    print(f"    {'sum':<14} {total:8.1f} us; x32 layers = {total * 32 / 1000:.2f} ms; layer {what}")
    if prefill:
        print(f"    {'+ LoRA (1 adapter, cuBLAS)':<14} {lora_t:8.1f} us ({100 * lora_t / total:.1f}% of the layer)")
        parts["lora_one_adapter"] = lora_t
    return dict(parts)


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
        paged = gpu_time(lib, lambda: lib.sb_paged_attention(t, p(q), NH * D, p(kc), p(vc), p(table), nb, p(rs), p(rp), None, n, NH, NKV, D, bs, 0, sc, p(out), n, None, ctypes.c_int64(0), ctypes.c_float(0)))
        mma = gpu_time(lib, lambda: lib.sb_prefill_attention(t, p(q), NH * D, p(kc), p(vc), p(table), nb, p(rs), p(rp), p(tiles), tiles.numel() // 2, NH, NKV, D, bs, 0, sc, p(out), ctypes.c_float(0)))
        qh = q.view(n, NH, D).transpose(0, 1).unsqueeze(0)
        kh = kc[:n].view(n, NKV, D).transpose(0, 1).repeat_interleave(NH // NKV, 0).unsqueeze(0).contiguous()
        vh = vc[:n].view(n, NKV, D).transpose(0, 1).repeat_interleave(NH // NKV, 0).unsqueeze(0).contiguous()
        sdpa = gpu_time(lib, lambda: torch.nn.functional.scaled_dot_product_attention(qh, kh, vh, is_causal=True))
        floor = 4 * (n * n / 2) * D * NH / (peak_tflops * 1e12) * 1e6
        print(f"    {n:5d} tokens: paged {paged:8.1f} us, tensor cores {mma:7.1f} us, torch sdpa {sdpa:7.1f} us; floor {floor:6.1f} us ({peak_tflops:.0f} TFLOP/s)")
        res[f"prefill_attention_{n}"] = {"paged_us": paged, "mma_us": mma, "sdpa_us": sdpa, "floor_us": floor}
    return res


def bench_overlap(lib):
    """Can LoRA hide behind the base GEMMs? (issue 20: one adapter at batch 64 costs 16% of a decode
    step, far more than its bytes.) One Mistral-7B layer's four projection sets at decode, rank 16 on all
    seven projections: the base GEMMs (torch.mm, i.e. cuBLAS, as the engine calls it) alone, the one-call
    sgmv LoRA alone, the two one after the other on one stream (the engine today), and with each set's
    LoRA on a second stream forked from the set's input and joined after its GEMM (the LoRA writes its own
    buffer, so a consumer would add it), the side stream at normal and at high priority. All captured in
    one CUDA graph per variant, as the engine's steps run."""
    t, H, I, Q, r = BF16, H7, I7, Q7, 16
    W = [torch.randn(o, i, device="cuda").to(DT[t]) / math.sqrt(i) for _, i, o in layer_sets()]
    res = {}
    for batch, nads in ((1, (1,)), (16, (1, 16)), (64, (1, 26, 64))):
        table, keep = layer_adapters(t, r, max(nads))
        buf = lambda cols: torch.randn(batch, cols, device="cuda").to(DT[t])
        h, att, act = buf(H), buf(Q), buf(I)
        ys = [buf(out_) for _, _, out_ in layer_sets()]
        zs = [torch.zeros_like(y) for y in ys]
        tmp = torch.zeros(batch, 3 * r, device="cuda")
        sets = [(ps_, x_, in_, out_, k) for k, ((ps_, in_, out_), x_) in enumerate(zip(layer_sets(), (h, att, h, act)))]
        for nad in nads:
            seg = batch // nad
            ss = torch.tensor([i * seg for i in range(nad)] + [batch], dtype=torch.int32, device="cuda")
            sl = torch.arange(nad, dtype=torch.int32, device="cuda")
            def lora_set(k, dst, stream):
                ps, x_, in_, ldy, wi = sets[k]
                lib.sb_set_stream(ctypes.c_void_p(stream.cuda_stream))
                lib.sb_sgmv(t, p(x_), in_, p(tmp), r, p(dst), ldy, p(table), 7, ctypes.byref(ps), p(ss), p(sl), nad, batch - seg * (nad - 1), batch)
            def variant(kind, prio=0):
                main, side = torch.cuda.Stream(), torch.cuda.Stream(priority=prio)
                def f():
                    for k in range(4):
                        ps, x_, in_, ldy, wi = sets[k]
                        if kind == "base":
                            torch.mm(x_, W[wi].t(), out=ys[k])
                        elif kind == "lora":
                            lora_set(k, ys[k], main)
                        elif kind == "serial":
                            torch.mm(x_, W[wi].t(), out=ys[k])
                            lora_set(k, ys[k], main)
                        else:
                            side.wait_stream(main)
                            with torch.cuda.stream(side):
                                lora_set(k, zs[k], side)
                            torch.mm(x_, W[wi].t(), out=ys[k])
                            main.wait_stream(side)
                reps, g = 10, torch.cuda.CUDAGraph()
                with torch.cuda.stream(main):
                    f()
                torch.cuda.synchronize()
                with torch.cuda.graph(g, stream=main):
                    for _ in range(reps):
                        f()
                lib.sb_set_stream(None)
                g.replay()
                torch.cuda.synchronize()
                ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
                ev[0].record()
                for _ in range(5):
                    g.replay()
                ev[1].record()
                torch.cuda.synchronize()
                return ev[0].elapsed_time(ev[1]) * 1000 / (reps * 5)
            row = {k: variant(k) for k in ("base", "lora", "serial")}
            row["overlap"] = variant("overlap")
            row["overlap_high_prio"] = variant("overlap", prio=-1)
            res[f"b{batch}_{nad}ad"] = row
            print(f"  layer at batch {batch:2d}, {nad:2d} adapter(s): base GEMMs {row['base']:6.1f} us, LoRA {row['lora']:6.1f} us, "
                  f"serial {row['serial']:6.1f} us (+{(row['serial'] / row['base'] - 1) * 100:4.1f}%), side stream {row['overlap']:6.1f} us "
                  f"(+{(row['overlap'] / row['base'] - 1) * 100:4.1f}%), side stream high priority {row['overlap_high_prio']:6.1f} us "
                  f"(+{(row['overlap_high_prio'] / row['base'] - 1) * 100:4.1f}%)")
        del keep
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", default="90")
    ap.add_argument("--out", help="JSON file for the figures (bench.ts --kernels)")
    ap.add_argument("--only", choices=["lora", "overlap", "layer"], help="only the LoRA benchmarks (with the tensor-core grid sweep), the LoRA-beside-GEMM probe, or the layer profiles (decode, 2048-token prefill) with prefill attention")
    ap.add_argument("--no-sweep", action="store_true", help="skip the tensor-core grid sweep")
    a = ap.parse_args()
    torch.manual_seed(0)
    lib = build(a.arch)
    lib.sb_attention_workspace.restype = ctypes.c_int64
    if a.only == "lora":
        res = bench_lora(lib, a.arch, sweep=not a.no_sweep)
    elif a.only == "overlap":
        res = bench_overlap(lib)
    elif a.only == "layer":
        res = {"decode_layer_us": profile_layer(lib), "prefill_layer_us": profile_layer(lib, prefill=2048)}
        res.update(bench_prefill_attention(lib))
    else:
        res = bench_finish_rows(lib)
        res.update(bench_lora(lib, a.arch, sweep=not a.no_sweep))
        res["decode_layer_us"] = profile_layer(lib)
        res["prefill_layer_us"] = profile_layer(lib, prefill=2048)
        res.update(bench_prefill_attention(lib))
        res["overlap"] = bench_overlap(lib)
    if a.out:
        # NaN (a path or grid shape that did not run) as null: bench.ts reads this file with JSON.parse.
        clean = lambda v: {k: clean(w) for k, w in v.items()} if isinstance(v, dict) else [clean(w) for w in v] if isinstance(v, list) else None if isinstance(v, float) and v != v else v
        with open(a.out, "w") as f:
            json.dump(clean(res), f)


if __name__ == "__main__":
    main()
