"""A lane-level mirror of quantMmaKernel's index math (kernels/quant_mma.cuh), runnable without a GPU
(numpy): the blocks, warps and split-K slices, each lane's 16- or 32-byte code reads and their nibble or
byte extraction, the per-run or per-word scale groups, the permuted k order of the A and B fragments,
the x reads per n tile, the C fragment's stores and the in-order reduction of the slices, with
mma.sync m16n8k16 emulated from the PTX ISA's fragment layout (not from the kernel's assumptions);
checked against x @ W^T in float64 for every codebook, ragged outputs, rows and inputs, group sizes
from 16 to one group, and several k slicings. Values stay float64: it checks the mapping, not the
rounding (test_quant_gemm.py on a GPU checks both). Keep it in step with the kernel when either changes.
Usage: python3 kernels/test/quant_mma_mirror.py"""
import sys
import numpy as np

LUT4, U8, S8, E4M3 = 0, 1, 2, 3
WARPS, MTILES, OUTS_PER_BLOCK, KBLOCK, MAX_ROWS = 4, 2, 128, 128, 64


def mma(c, a, b):
    """c[lane][4] += A.B with a[lane] = 4 registers of value pairs, b[lane] = 2, per PTX m16n8k16 (.row.col)."""
    A, B = np.zeros((16, 16)), np.zeros((16, 8))
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        for e in range(2):
            A[g][2 * t + e], A[g + 8][2 * t + e] = a[lane][0][e], a[lane][1][e]
            A[g][2 * t + 8 + e], A[g + 8][2 * t + 8 + e] = a[lane][2][e], a[lane][3][e]
            B[2 * t + e][g], B[2 * t + 8 + e][g] = b[lane][0][e], b[lane][1][e]
    D = A @ B
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        c[lane][0] += D[g][2 * t]; c[lane][1] += D[g][2 * t + 1]
        c[lane][2] += D[g + 8][2 * t]; c[lane][3] += D[g + 8][2 * t + 1]


def e4m3(b):
    s = -1.0 if b & 0x80 else 1.0
    e, m = (b >> 3) & 0xF, b & 7
    return s * (m / 8.0) * 2.0 ** -6 if e == 0 else s * (1 + m / 8.0) * 2.0 ** (e - 7)


def value(cb, code, lut):
    if cb == LUT4: return lut[code]
    if cb == U8: return float(code)
    if cb == S8: return float(code - 256 if code > 127 else code)
    return e4m3(code)


class Weight:
    """Packed codes [out, in] as the engines store them (q4: low nibble = even k) and the float64 W."""

    def __init__(self, rng, cb, out, inn, group, zeros, lut=None):
        self.cb, self.out, self.inn, self.group = cb, out, inn, group
        self.lut = lut if lut is not None else list(range(16))
        groups = (inn + group - 1) // group
        if cb == LUT4:
            codes = rng.integers(0, 16, (out, inn))
            self.bytes = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)
        else:
            codes = rng.integers(0, 256, (out, inn))
            if cb == E4M3: codes = np.where((codes & 0x7F) == 0x7F, codes ^ 1, codes)
            self.bytes = codes.astype(np.uint8)
        self.scales = rng.uniform(0.01, 0.05, (out, groups))
        self.zeros = rng.integers(0, 16 if cb == LUT4 else 256, (out, groups)).astype(np.float64) if zeros else None
        gi = np.arange(inn) // group
        vals = np.vectorize(lambda c: value(cb, int(c), self.lut))(codes)
        self.W = (vals - (self.zeros[:, gi] if zeros else 0)) * self.scales[:, gi]


def lane_run(w, o, k, valid):
    """qmmaLoad: the lane's 32 codes' bytes of row o from input k (16 bytes q4, 32 bytes q8), zero if not valid."""
    n = 16 if w.cb == LUT4 else 32
    if not valid: return np.zeros(n, dtype=np.uint8)
    flat = w.bytes.reshape(-1)
    start = o * (w.inn // 2) + k // 2 if w.cb == LUT4 else o * w.inn + k
    return flat[start:start + n]


def decode(w, run, c):
    """qmmaDecode: chunk c's 8 values from the run's 32-bit little-endian words."""
    words = run.view("<u4")
    if w.cb == LUT4:
        u = int(words[c])
        return [w.lut[(u >> (4 * j)) & 0xF] for j in range(8)]
    return [value(w.cb, (int(words[2 * c + j // 4]) >> (8 * (j & 3))) & 0xFF, w.lut) for j in range(8)]


def kernel(w, x, rows, slice_k, bx, by, y, partial):
    """One block of quantMmaKernel<T, CB, NT> with NT n tiles (rows <= 8 NT)."""
    NT = 1 if rows <= 8 else 2 if rows <= 16 else 4 if rows <= 32 else 8
    inn, out = w.inn, w.out
    groups = (inn + w.group - 1) // w.group
    wpg = w.group // 8  # as the kernel; the group index is clamped to the last group below
    run_groups = wpg == 0 or wpg % 4 == 0
    k_begin, k_end = by * slice_k, min(inn, by * slice_k + slice_k)
    for warp in range(WARPS):
        m0 = bx * OUTS_PER_BLOCK + warp * MTILES * 16
        acc = [[[[0.0] * 4 for _ in range(32)] for _ in range(NT)] for _ in range(MTILES)]
        orow = [[[min(m0 + 16 * i + 8 * j + (lane >> 2), out - 1) for j in range(2)] for i in range(MTILES)] for lane in range(32)]
        for kb in range(k_begin, k_end, KBLOCK):
            runs, sc, zp = {}, {}, {}
            for lane in range(32):
                t = lane & 3
                k = kb + 32 * t
                for i in range(MTILES):
                    for j in range(2):
                        runs[lane, i, j] = lane_run(w, orow[lane][i][j], k, k < k_end)
            for c in range(4):
                pk = {}
                for lane in range(32):
                    t = lane & 3
                    k = kb + 32 * t
                    for i in range(MTILES):
                        for j in range(2):
                            if c == 0 or not run_groups:
                                grp = (k + 8 * c) // 8 // wpg if wpg > 0 else 0
                                at = (orow[lane][i][j], min(grp, groups - 1))
                                sc[lane, i, j] = w.scales[at]
                                zp[lane, i, j] = w.zeros[at] if w.zeros is not None else 0.0
                            v = decode(w, runs[lane, i, j], c)
                            pk[lane, i, j] = [((v[2 * q] - zp[lane, i, j]) * sc[lane, i, j], (v[2 * q + 1] - zp[lane, i, j]) * sc[lane, i, j]) for q in range(4)]
                for n in range(NT):
                    xw = {}
                    for lane in range(32):
                        g, t = lane >> 2, lane & 3
                        row, k = 8 * n + g, kb + 32 * t
                        xv = x[row, k + 8 * c:k + 8 * c + 8] if (k < k_end and row < rows) else np.zeros(8)
                        xw[lane] = [(xv[2 * q], xv[2 * q + 1]) for q in range(4)]
                    for h in range(2):
                        for i in range(MTILES):
                            a = [[pk[lane, i, 0][2 * h], pk[lane, i, 1][2 * h], pk[lane, i, 0][2 * h + 1], pk[lane, i, 1][2 * h + 1]] for lane in range(32)]
                            b = [[xw[lane][2 * h], xw[lane][2 * h + 1]] for lane in range(32)]
                            mma(acc[i][n], a, b)
        for lane in range(32):
            g, t = lane >> 2, lane & 3
            for i in range(MTILES):
                for n in range(NT):
                    for e in range(4):
                        o, row = m0 + 16 * i + g + 8 * (e >> 1), 8 * n + 2 * t + (e & 1)
                        if o >= out or row >= rows: continue
                        if partial is not None: partial[by, row, o] = acc[i][n][lane][e]
                        else: y[row, o] = acc[i][n][lane][e]


def gemm(w, x, slice_k):
    """The launcher: passes of 64 rows, the grid, the slices, the in-order reduction."""
    rows = x.shape[0]
    y = np.full((rows, w.out), np.nan)
    k_blocks = (w.inn + KBLOCK - 1) // KBLOCK
    per = slice_k // KBLOCK
    splits = (k_blocks + per - 1) // per
    for r0 in range(0, rows, MAX_ROWS):
        n = min(MAX_ROWS, rows - r0)
        xp, yp = x[r0:r0 + n], y[r0:r0 + n]
        partial = np.full((splits, n, w.out), np.nan) if splits > 1 else None
        for bx in range((w.out + OUTS_PER_BLOCK - 1) // OUTS_PER_BLOCK):
            for by in range(splits):
                kernel(w, xp, n, slice_k, bx, by, yp, partial)
        if partial is not None:
            yp[:] = 0.0
            for s in range(splits): yp += partial[s]
    return y


def main():
    rng = np.random.default_rng(7)
    nf4 = [-1.0, -0.696, -0.525, -0.395, -0.284, -0.185, -0.091, 0.0, 0.080, 0.161, 0.246, 0.338, 0.441, 0.563, 0.723, 1.0]
    cases = [
        ("int4 zeros g32, ragged outputs, tail k block", dict(cb=LUT4, out=40, inn=416, group=32, zeros=True), (1, 5, 13), (128, 256)),
        ("int4 g16 (per-word groups)", dict(cb=LUT4, out=150, inn=256, group=16, zeros=True), (8, 9), (128,)),
        ("nf4 g64 (runs), no zeros", dict(cb=LUT4, out=33, inn=384, group=64, zeros=False, lut=nf4), (3, 33), (128, 384)),
        ("u8 zeros g128", dict(cb=U8, out=20, inn=256, group=128, zeros=True), (2, 17), (128,)),
        ("s8 one group", dict(cb=S8, out=17, inn=160, group=160, zeros=False), (7,), (128, 256)),
        ("e4m3 g32", dict(cb=E4M3, out=129, inn=192, group=32, zeros=False), (70,), (128,)),
    ]
    bad = 0
    for name, kw, rows_list, slices in cases:
        w = Weight(rng, **kw)
        for rows in rows_list:
            x = rng.standard_normal((rows, w.inn))
            ref = x @ w.W.T
            for sk in slices:
                y = gemm(w, x, sk)
                err = np.abs(y - ref).max() / max(1e-30, np.abs(ref).max()) if not np.isnan(y).any() else float("inf")
                ok = err < 1e-12
                bad += not ok
                print(f"  {'ok ' if ok else 'BAD'} {name}: rows {rows}, k slices of {sk}: max rel err {err:.1e}")
    print("quant_mma mirror: " + ("all passed" if bad == 0 else f"{bad} FAILED"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
