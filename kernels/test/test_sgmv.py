"""sgmv family (sgmv.cuh, sgmv.cu): LoRA over adapter segments through sgmvShrink + sgmvExpand and
through the one-call sgmv, each against a float64 PyTorch reference.
Usage: python3 kernels/test/test_sgmv.py [--arch 90]"""
import ctypes, math
import torch
from harness import DT, TYPES, Entry, check, main, p, proj_set, run, upload_table


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


def run_family(lib):
    for t in TYPES:
        test_sgmv(lib, t)


if __name__ == "__main__":
    main(run_family, __doc__)
