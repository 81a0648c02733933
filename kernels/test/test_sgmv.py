"""sgmv family (sgmv.cuh, sgmv.cu): LoRA over adapter segments through sgmvShrink + sgmvExpand and
through the one-call sgmv on each of its kernels (the CUDA-core one and the tensor-core one, chosen
with setLoraKernel), each against a float64 PyTorch reference.
Usage: python3 kernels/test/test_sgmv.py [--arch 90]"""
import ctypes, math
import torch
from harness import DT, F32, SHORT, TYPES, Entry, check, main, p, proj_set, run, upload_table, verdict

SIMT, TC = 0, 1  # launch.h LoraKernel
PATH = {0: "shrink+expand", 1: "simt", 2: "tc"}


def tc_expected(t, din, outs, cols, width, max_rank, seg_rows):
    """Whether sgmv() must take the tensor-core kernel for this call (launch.h's conditions)."""
    return (t != F32 and 0 < max_rank <= 128 and max(seg_rows) <= 64 and din % 8 == 0 and width % 8 == 0
            and all(c % 8 == 0 for c in cols) and all(o % 8 == 0 for o in outs) and torch.cuda.get_device_capability() >= (9, 0))


def sgmv_case(lib, t, name, din, outs, ranks, seg_rows, seg_slot, absent=frozenset(), tc_shapes=()):
    """One LoRA set (len(outs) projections sharing x) over segments, through sgmvShrink + sgmvExpand
    and through the one-call sgmv on both kernels, each against a float64 reference. ranks[i] is
    slot i's rank. tc_shapes: extra (cluster blocks, output splits) to force on the tensor-core kernel."""
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
    want_tc = tc_expected(t, din, outs, cols, width, max_rank, seg_rows)
    # kernel: (LoraKernel, cluster blocks, output splits, prefetch, programmatic dependent launch)
    runs = [("shrink+expand", None), ("sgmv simt", (SIMT, 0, 0, 1, 0)), ("sgmv tc", (TC, 0, 0, 1, 0))]
    runs += [(f"sgmv tc C{c} E{e}", (TC, c, e, 1, 0)) for c, e in tc_shapes if want_tc]
    if tc_shapes and want_tc:
        runs += [("sgmv tc, no prefetch", (TC, 0, 0, 0, 0)), ("sgmv tc, pdl", (TC, 0, 0, 1, 1))]
    for api, kernel in runs:
        y = y0.clone()
        tmp = torch.full((rows, nproj * max_rank), float("nan"), device="cuda")
        if kernel is None:
            run(lib, "sb_sgmv_shrink", t, p(x), din, p(tmp), max_rank, p(table), nproj, ctypes.byref(ps), p(ss), p(sl), len(seg_rows), max(seg_rows), rows)
            run(lib, "sb_sgmv_expand", t, p(tmp), max_rank, p(y), width, p(table), nproj, ctypes.byref(ps), p(ss), p(sl), len(seg_rows), max(seg_rows))
        else:
            lib.sb_set_lora_kernel(*kernel)
            path = lib.sb_sgmv_path(t, p(x), din, max_rank, p(y), width, ctypes.byref(ps), max(seg_rows))
            if kernel[0] == TC:
                verdict((path == 2) == want_tc, f"sgmv {name} [{api}] takes the {PATH[path]} path{'' if (path == 2) == want_tc else ' (unexpected)'}",
                        f"sgmv {name} {SHORT[t]}: path {PATH[path]}, tensor cores expected: {want_tc}")
            if kernel[1] > 8:
                # Clusters of more than 8 blocks are a non-portable size the device may refuse (auto never uses them).
                rc = lib.sb_sgmv(t, p(x), din, p(tmp), max_rank, p(y), width, p(table), nproj, ctypes.byref(ps), p(ss), p(sl), len(seg_rows), max(seg_rows), rows)
                torch.cuda.synchronize()
                if rc != 0:
                    print(f"  --  sgmv {name} [{api}]: launch refused (CUDA error {rc}), skipped")
                    continue
            elif kernel[4]:
                # A programmatic dependent launch on a stream of its own, right after the copy it depends on.
                st = torch.cuda.Stream()
                st.wait_stream(torch.cuda.current_stream())
                lib.sb_set_stream(ctypes.c_void_p(st.cuda_stream))
                with torch.cuda.stream(st):
                    y = y0.clone()
                    run(lib, "sb_sgmv", t, p(x), din, p(tmp), max_rank, p(y), width, p(table), nproj, ctypes.byref(ps), p(ss), p(sl), len(seg_rows), max(seg_rows), rows)
                lib.sb_set_stream(None)
            else:
                run(lib, "sb_sgmv", t, p(x), din, p(tmp), max_rank, p(y), width, p(table), nproj, ctypes.byref(ps), p(ss), p(sl), len(seg_rows), max(seg_rows), rows)
            if api == "sgmv tc" and want_tc:
                # Same inputs, same grid: bit-identical (fixed-order reductions, no atomics).
                y2 = y0.clone()
                run(lib, "sb_sgmv", t, p(x), din, p(tmp), max_rank, p(y2), width, p(table), nproj, ctypes.byref(ps), p(ss), p(sl), len(seg_rows), max(seg_rows), rows)
                verdict(torch.equal(y, y2), f"sgmv {name} [tc] repeats bit for bit", f"sgmv {name} {SHORT[t]}: tc not deterministic")
        # Only the LoRA delta carries kernel error; compare it against the reference delta.
        check(f"sgmv {name} [{api}]", t, y.double() - y0.double(), ref - y0.double())
    lib.sb_set_lora_kernel(SIMT, 0, 0, 1, 0)


def test_sgmv(lib, t):
    """LoRA sets of 1..3 projections sharing one input (like q/k/v), both entry points, both kernels
    of the one-call sgmv: adapters of ranks 8..128 (and 6, 10, 12, 20), segments
    of 1..300 rows, a segment without adapter, a missing module, decode shapes (64 one-row segments;
    one 64-row segment) at Mistral-7B's q|k|v, o, gate|up and down, odd sizes (fallback paths)."""
    sgmv_case(lib, t, "3 proj, ranks 8..128, mixed segs", 4096, [1024, 256, 256], [8, 16, 64, 128],
              [3, 1, 17, 5, 1, 9, 64], [0, -1, 2, 3, 1, 2, 1], absent={(1, 2)}, tc_shapes=[(1, 1), (3, 2), (8, 1), (2, 5), (16, 1)])
    sgmv_case(lib, t, "64 one-row segs, 64 rank-16 adapters", 4096, [2048, 512, 512], [16] * 64,
              [1] * 64, [i if i != 5 else -1 for i in range(64)], absent={(3, 1)}, tc_shapes=[(1, 1), (8, 3)])
    sgmv_case(lib, t, "one 64-row seg, rank 16", 4096, [2048, 512, 512], [16], [64], [0], tc_shapes=[(4, 4), (8, 2)])
    sgmv_case(lib, t, "64 one-row segs, ranks 8..64, in 14336", 14336, [1024], [8, 16, 32, 64], [1] * 64, [i % 4 for i in range(64)])
    sgmv_case(lib, t, "8 segs x 8 rows, 2 proj, rank 32", 4096, [1536, 1536], [32] * 8, [8] * 8, list(range(8)))
    sgmv_case(lib, t, "in 1000, rank 12, 2 proj", 1000, [300, 77], [12, 8], [2, 1, 5], [0, 1, 0])
    sgmv_case(lib, t, "in 1001 (unaligned), ranks 12/8", 1001, [300], [12, 8], [1, 1, 1], [1, 0, -1])
    sgmv_case(lib, t, "prefill 300 rows + 2 decode rows", 4096, [1024], [16, 32], [300, 1, 1], [0, 1, 0])
    # Tensor-core kernel: ranks that are not multiples of 16 (12, 20) or of 4 (6, 10: element loads
    # of B), `in` not a multiple of 32 (a partial last chunk), outputs not a multiple of 32.
    sgmv_case(lib, t, "in 1000, ranks 12/20/6/10, outs 296+40", 1000, [296, 40], [12, 20, 6, 10], [2, 1, 5, 9, 3], [0, 1, 3, 2, 2],
              tc_shapes=[(3, 1), (1, 2)])
    sgmv_case(lib, t, "segs of 1..64 rows, ranks 16/64", 2048, [512, 128, 128], [16, 64, 16],
              [1, 2, 7, 8, 9, 15, 16, 31, 33, 64], [0, 1, 2, 0, 1, 2, -1, 1, 0, 2], tc_shapes=[(2, 2)])
    sgmv_case(lib, t, "rank 128, 33 + 31 rows, 3 proj", 2048, [512, 256, 256], [128, 128], [33, 31], [1, 0], tc_shapes=[(8, 1), (1, 1)])
    sgmv_case(lib, t, "64 one-row segs, ranks 8/16/64/128", 4096, [1024, 256, 256], [8, 16, 64, 128], [1] * 64, [i % 4 for i in range(64)])
    # Mistral-7B decode shapes at batch 64 (what the engine runs 4 times per layer).
    for nseg, what in ((1, "1 adapter x 64 rows"), (64, "64 adapters x 1 row")):
        ranks, rows, slots = [16] * nseg, [64 // nseg] * nseg, list(range(nseg))
        sgmv_case(lib, t, f"q|k|v 4096->[4096,1024,1024], {what}", 4096, [4096, 1024, 1024], ranks, rows, slots)
        sgmv_case(lib, t, f"o 4096->4096, {what}", 4096, [4096], ranks, rows, slots)
        sgmv_case(lib, t, f"gate|up 4096->[14336,14336], {what}", 4096, [14336, 14336], ranks, rows, slots)
        sgmv_case(lib, t, f"down 14336->4096, {what}", 14336, [4096], ranks, rows, slots)


def test_switch(lib):
    """setLoraKernel and loraKernel agree; fp32 never takes the tensor-core kernel."""
    lib.sb_set_lora_kernel(TC, 0, 0, 1, 0)
    got = lib.sb_lora_kernel()
    x = torch.zeros(8, 64, device="cuda")
    ps = proj_set([0], [0], [64])
    path = lib.sb_sgmv_path(F32, p(x), 64, 16, p(x), 64, ctypes.byref(ps), 1)
    lib.sb_set_lora_kernel(SIMT, 0, 0, 1, 0)
    verdict(got == TC and lib.sb_lora_kernel() == SIMT and path != 2, f"LoRA kernel switch (tc -> {got}, fp32 path {PATH[path]})", "LoRA kernel switch")


def run_family(lib):
    test_switch(lib)
    for t in TYPES:
        test_sgmv(lib, t)


if __name__ == "__main__":
    main(run_family, __doc__)
