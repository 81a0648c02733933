"""A lane-level mirror of sgmvTcKernel's index math (kernels/sgmv.cuh), runnable without a GPU (numpy):
the warp units and slices of the shrink, the fixed-order reductions, the cluster exchange into the T
tile, the expand's output groups, and the permuted k order and output columns, with mma.sync
m16n8k16 emulated from the PTX ISA's fragment layout (not from the kernel's assumptions), checked
against a float64 reference. Values stay float64: it checks the mapping, not the rounding (the GPU
test, test_sgmv.py, checks both). Keep it in step with the kernel when either changes.
Usage: python3 kernels/test/sgmv_tc_mirror.py"""
import sys
import numpy as np
TC_ROWS, TC_WARPS, TC_MAX_RANK, TC_RED_SLOTS, TC_UNROLL, TC_GROUPS = 8, 8, 128, 32, 2, 2
TC_TLD = 3 * 128 + 16

def mma(c, a, b):
    """c[lane][4] += A.B; a[lane] = 4 words (pairs), b[lane] = 2 words (pairs), per PTX m16n8k16."""
    A = np.zeros((16, 16)); B = np.zeros((16, 8))
    for lane in range(32):
        g, t4 = lane >> 2, lane & 3
        for e in range(2):
            A[g][2*t4+e] = a[lane][0][e]; A[g+8][2*t4+e] = a[lane][1][e]
            A[g][2*t4+8+e] = a[lane][2][e]; A[g+8][2*t4+8+e] = a[lane][3][e]
            B[2*t4+e][g] = b[lane][0][e]; B[2*t4+8+e][g] = b[lane][1][e]
    D = A @ B
    for lane in range(32):
        g, t4 = lane >> 2, lane & 3
        c[lane][0] += D[g][2*t4]; c[lane][1] += D[g][2*t4+1]; c[lane][2] += D[g+8][2*t4]; c[lane][3] += D[g+8][2*t4+1]

def load8(arr, off, valid):
    v = np.zeros(8)
    for i in range(8):
        if i < valid: v[i] = arr[off + i]
    return v

def words(v):  # 8 elements -> 4 words of pairs
    return [(v[0], v[1]), (v[2], v[3]), (v[4], v[5]), (v[6], v[7])]

ZW = (0.0, 0.0)

def run(x, inn, y, ldy, table, stride, cnt, eoff, ycol, outs, seg_start, seg_slot, C, E, max_seg_rows):
    """x flat [rows*in], y flat [rows*ldy] (modified), table[i] = (A flat, B flat, rank, scale)."""
    nseg = len(seg_slot)
    row_tiles = (max_seg_rows + 7) // 8
    for bx_item in range(nseg * E):
        for by in range(row_tiles):
            item = bx_item; seg, e = item // E, item % E
            slot, s0, s1 = seg_slot[seg], seg_start[seg], seg_start[seg+1]
            r0 = s0 + by * TC_ROWS; n = min(TC_ROWS, s1 - r0)
            if slot < 0 or n <= 0: continue
            pa, pb, rk, tb, gb, sc = [None]*3, [None]*3, [0]*3, [0]*3, [0]*3, [0.0]*3
            MT = NG = 0
            for p in range(3):
                en = table[slot*stride + eoff[p]] if p < cnt else (None, None, 0, 0.0)
                pa[p], pb[p] = en[0], en[1]
                rk[p] = max(0, min(en[2], TC_MAX_RANK)) if p < cnt else 0
                sc[p] = en[3]; tb[p] = MT; gb[p] = NG
                MT += (rk[p] + 15) // 16
                NG += (outs[p] + 31) // 32 if rk[p] > 0 else 0
            if MT == 0: continue
            G = 8 // min(MT & -MT, 8)
            while G > 1 and G * MT > TC_RED_SLOTS: G >>= 1
            nch = (inn + 31) // 32
            parts_smem = []
            for c in range(C):
                cb0, cb1 = c * nch // C, (c + 1) * nch // C
                red = np.full(TC_RED_SLOTS * 128, np.nan)
                for warp in range(TC_WARPS):
                    for u in range(warp, MT * G, TC_WARPS):
                        t, kp = u // G, u % G
                        p = 2 if t >= tb[2] else 1 if t >= tb[1] else 0
                        rank, a = rk[p], pa[p]
                        q0, q1 = cb0 + kp * (cb1 - cb0) // G, cb0 + (kp + 1) * (cb1 - cb0) // G
                        acc = [[0.0]*4 for _ in range(32)]
                        for q in range(q0, q1, TC_UNROLL):
                            for i in range(TC_UNROLL):
                                afr, bfr = [], []
                                av = {}
                                for lane in range(32):
                                    g, t4 = lane >> 2, lane & 3
                                    j0 = 16 * (t - tb[p]) + g; j1 = j0 + 8
                                    col = (q + i) * 32 + 8 * t4
                                    valid = min(8, inn - col) if q + i < q1 else 0
                                    a0 = load8(a, min(j0, rank-1) * inn + col, valid if j0 < rank else 0)
                                    a1 = load8(a, min(j1, rank-1) * inn + col, valid if j1 < rank else 0)
                                    xv = load8(x, (r0 + min(g, n-1)) * inn + col, valid if g < n else 0)
                                    av[lane] = (words(a0), words(a1), words(xv))
                                for ks in range(2):
                                    afr = [(av[l][0][2*ks], av[l][1][2*ks], av[l][0][2*ks+1], av[l][1][2*ks+1]) for l in range(32)]
                                    bfr = [(av[l][2][2*ks], av[l][2][2*ks+1]) for l in range(32)]
                                    mma(acc, afr, bfr)
                        for lane in range(32):
                            red[(kp * MT + t) * 128 + lane * 4: (kp * MT + t) * 128 + lane * 4 + 4] = acc[lane]
                part = np.zeros(MT * 128)
                for i in range(MT * 128):
                    t, f = i >> 7, i & 127
                    part[i] = sum(red[(kp * MT + t) * 128 + f] for kp in range(G))
                parts_smem.append(part)
            # exchange
            NE = MT * 128
            tsh = [np.full(TC_ROWS * TC_TLD, np.nan) for _ in range(C)]
            def toff(i):
                t, f = i >> 7, i & 127; ln, k = f >> 2, f & 3
                p = 2 if t >= tb[2] else 1 if t >= tb[1] else 0
                j = 16 * (t - tb[p]) + (ln >> 2) + 8 * (k >> 1)
                row = 2 * (ln & 3) + (k & 1)
                return row * TC_TLD + p * TC_MAX_RANK + j
            per = (NE + C - 1) // C
            for c in range(C):
                for i in range(c * per, min(NE, (c + 1) * per)):
                    s = sum(parts_smem[b][i] for b in range(C))
                    for b in range(C): tsh[b][toff(i)] = s
            # expand
            parts = E * C
            for c in range(C):
                P = e * C + c
                g0, g1 = P * NG // parts, (P + 1) * NG // parts
                for warp in range(TC_WARPS):
                    for gi in range(g0 + warp, g1, TC_GROUPS * TC_WARPS):
                        for h in range(TC_GROUPS):
                            gg = gi + h * TC_WARPS
                            has = gg < g1
                            p = 2 if gg >= gb[2] else 1 if gg >= gb[1] else 0
                            rank = rk[p] if has else 0
                            kEnd = (rank + 15) // 16 * 16
                            out, o0, b = outs[p], 32 * (gg - gb[p]), pb[p]
                            acc = [[[0.0]*4 for _ in range(32)] for j in range(4)]
                            for kc in range(0, kEnd, 16):
                                lanes = {}
                                for lane in range(32):
                                    g, t4 = lane >> 2, lane & 3
                                    k = kc + 4 * t4
                                    tw = tsh[c][g * TC_TLD + p * TC_MAX_RANK + k: g * TC_TLD + p * TC_MAX_RANK + k + 4]
                                    assert not np.isnan(tw).any(), "read unwritten T"
                                    bv = []
                                    for j in range(4):
                                        o = o0 + 8 * (g >> 1) + 2 * j + (g & 1)
                                        ok = k < rank and o < out
                                        v = load8(b, o * rank + k if ok else 0, min(4, rank - k) if ok else 0)[:4]
                                        bv.append([(v[0], v[1]), (v[2], v[3])])
                                    lanes[lane] = ([(tw[0], tw[1]), (tw[2], tw[3])], bv)
                                for j in range(4):
                                    afr = [(lanes[l][0][0], ZW, lanes[l][0][1], ZW) for l in range(32)]
                                    bfr = [(lanes[l][1][j][0], lanes[l][1][j][1]) for l in range(32)]
                                    mma(acc[j], afr, bfr)
                            for lane in range(32):
                                g, t4 = lane >> 2, lane & 3
                                yok = has and g < n and o0 + 8 * t4 < out
                                if not yok: continue
                                base = (r0 + g) * ldy + ycol[p] + o0 + 8 * t4
                                for j in range(4):
                                    for i in range(2):
                                        y[base + 2*j + i] += acc[j][lane][i] * sc[p]

def case(inn, outs, ranks, seg_rows, seg_slot, C, E, absent=()):
    rng = np.random.default_rng(1)
    cnt = len(outs); cols = [sum(outs[:i]) for i in range(cnt)]
    A = [[rng.standard_normal(r * inn) for _ in outs] for r in ranks]
    B = [[rng.standard_normal(o * r) for o in outs] for r in ranks]
    scales = [0.5 + i * 0.25 for i in range(len(ranks))]
    table = []
    for s, r in enumerate(ranks):
        for p in range(cnt):
            table.append((None, None, 0, 0.0) if (s, p) in absent else (A[s][p], B[s][p], r, scales[s]))
    start = [0]
    for k in seg_rows: start.append(start[-1] + k)
    rows, width = start[-1], sum(outs)
    x = rng.standard_normal(rows * inn)
    y0 = rng.standard_normal(rows * width)
    ref = y0.reshape(rows, width).copy()
    for i, k in enumerate(seg_rows):
        s = seg_slot[i]
        if s < 0: continue
        xs = x.reshape(rows, inn)[start[i]:start[i]+k]
        for p in range(cnt):
            if (s, p) in absent: continue
            r = ranks[s]
            ref[start[i]:start[i]+k, cols[p]:cols[p]+outs[p]] += scales[s] * (xs @ A[s][p].reshape(r, inn).T) @ B[s][p].reshape(outs[p], r).T
    y = y0.copy()
    run(x, inn, y, width, table, cnt, cnt, list(range(cnt)), cols, outs + [0] * (3 - cnt), start, seg_slot, C, E, max(seg_rows))
    err = np.abs(y.reshape(rows, width) - ref).max() / np.abs(ref - y0.reshape(rows, width)).max()
    print(f"in {inn} outs {outs} ranks {ranks} segs {seg_rows} C {C} E {E}: rel err {err:.2e}", "OK" if err < 1e-9 else "BAD")
    return err < 1e-9

if __name__ == "__main__":
    ok = True
    ok &= case(96, [40], [16], [3], [0], 1, 1)  # one tile, G = 8 parts, a partial output group
    ok &= case(128, [64, 24, 24], [8, 16, 48], [9, 1, 2], [2, 0, 1], 2, 1)  # q|k|v-like, mixed ranks, a 9-row segment (two row tiles)
    ok &= case(256, [72, 40], [12, 40], [5, 11], [1, 0], 3, 2, absent={(0, 1)})  # odd ranks, a missing module, C 3, E 2
    ok &= case(200, [32], [128], [2], [0], 2, 3)  # rank 128, `in` not a multiple of 32, more blocks than groups
    ok &= case(64, [48, 16, 16], [24, 8], [1, 1, 1, 1], [0, -1, 1, 0], 4, 1, absent={(1, 2)})  # decode rows, a segment without adapter
    ok &= case(96, [32, 16, 16], [128, 48], [3, 8], [0, 1], 1, 2)  # 24 tiles (G 1), 9 tiles (G 2), no cluster
    ok &= case(160, [24, 8], [6, 10], [2, 3], [0, 1], 2, 1)  # ranks that are not multiples of 4 (element loads of B)
    print("all mirror checks passed" if ok else "mirror checks FAILED")
    sys.exit(0 if ok else 1)
