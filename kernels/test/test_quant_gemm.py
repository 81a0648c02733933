"""quant_gemm family (quant_gemm.cuh, quant_mma.cuh, quant_gemm.cu): the weight-only quantized GEMV, its
tensor-core counterpart for 16-bit activations (quantMmaKernel), and the dequantisation
for prompt chunks, on packed weights of every codebook (4-bit with a lookup table: AWQ / GPTQ integers with
zero points, NF4 values without; 8-bit unsigned with zero points, signed, float8 e4m3fn), group sizes from
16 to one group per row, a short last group, act-order permutations, decode-sized and larger row counts
and an output that is a column slice of a wider one; each against a float64 PyTorch dequantisation.
Usage: python3 kernels/test/test_quant_gemm.py [--arch 90]"""
import ctypes
import torch
from harness import DT, TYPES, QuantWeight, check, main, p, poison, run, verdict

LUT4, U8, S8, E4M3 = 0, 1, 2, 3
NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
       -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
       0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0]


class Packed:
    """A random packed weight [out, in] (launch.h QuantWeight) and its float64 dequantisation W."""

    def __init__(self, cb, out, inf, group, lut=None, zeros=False, perm=False):
        self.cb, self.out, self.inf, self.group = cb, out, inf, group
        groups = (inf + group - 1) // group
        dev = "cuda"
        if cb == LUT4:
            codes = torch.randint(0, 16, (out, inf), device=dev)
            self.lut = torch.tensor(lut if lut is not None else list(range(16)), dtype=torch.float32, device=dev)
            values = self.lut.double()[codes]
            self.codes = (codes[:, 0::2] | (codes[:, 1::2] << 4)).to(torch.uint8).contiguous()
        else:
            codes = torch.randint(0, 256, (out, inf), device=dev, dtype=torch.int32)
            if cb == E4M3:
                codes = torch.where((codes & 0x7F) == 0x7F, codes ^ 1, codes)  # no NaN codes
            self.codes = codes.to(torch.uint8).contiguous()
            self.lut = None
            if cb == U8:
                values = codes.double()
            elif cb == S8:
                values = self.codes.view(torch.int8).double()
            else:
                values = self.codes.view(torch.float8_e4m3fn).double()
        spread = 1.0 / max(1.0, values.abs().max().item())
        self.scales = (torch.rand(out, groups, device=dev) * 0.04 + 0.01) * spread
        self.zeros = (torch.randint(0, 16 if cb == LUT4 else 256, (out, groups), device=dev).float()) if zeros else None
        gi = torch.arange(inf, device=dev) // group
        wk = values - (self.zeros.double()[:, gi] if zeros else 0)
        wk = wk * self.scales.double()[:, gi]
        self.perm = torch.randperm(inf, device=dev).int() if perm else None
        self.W = torch.empty_like(wk)
        if perm:
            self.W[:, self.perm.long()] = wk  # kernel input k is input perm[k]
        else:
            self.W = wk

    def struct(self):
        w = QuantWeight()
        w.codes = self.codes.data_ptr()
        w.scales = self.scales.data_ptr()
        w.zeros = self.zeros.data_ptr() if self.zeros is not None else None
        w.lut = self.lut.data_ptr() if self.lut is not None else None
        w.perm = self.perm.data_ptr() if self.perm is not None else None
        w.out, w.in_, w.groupSize, w.codebook = self.out, self.inf, self.group, self.cb
        return w


NAMES = {LUT4: "int4", U8: "u8", S8: "s8", E4M3: "e4m3"}


def gemv_case(lib, t, name, q, rows_list, extra_cols=0, kernel="gemv"):
    qw = q.struct()
    verdict(lib.sb_quant_supports(ctypes.byref(qw)) == 1, f"quant supports {name}", f"{name}: not supported")
    for rows in rows_list:
        x = (torch.randn(rows, q.inf, device="cuda") * 0.5).to(DT[t])
        ldy = q.out + extra_cols
        # A column slice of a wider output (fused q/k/v): the columns around it must stay untouched.
        y = poison((rows, ldy), DT[t])
        ws_bytes = lib.sb_quant_workspace(t, rows, ctypes.byref(qw))
        ws = poison((max(1, ws_bytes // 4),), torch.float32)
        col = extra_cols // 2
        run(lib, "sb_quant_gemv", t, p(x), rows, ctypes.byref(qw), ctypes.c_void_p(y.data_ptr() + col * y.element_size()), ldy, p(ws), ctypes.c_int64(ws_bytes))
        ref = x.double() @ q.W.T
        check(f"{kernel} {name} rows {rows}", t, y[:, col : col + q.out], ref)
        if extra_cols:
            untouched = torch.isnan(y[:, :col]).all().item() and torch.isnan(y[:, col + q.out :]).all().item()
            verdict(untouched, f"{kernel} {name} rows {rows}: columns outside the slice untouched", f"{kernel} {name}: wrote outside its columns")


def dequant_case(lib, t, name, q):
    qw = q.struct()
    dst = poison((q.out, q.inf), DT[t])
    run(lib, "sb_quant_dequant", t, ctypes.byref(qw), p(dst))
    # Each weight is one fp32 subtraction and product, then rounded to T: as exact as T allows.
    check(f"dequant {name}", t, dst, q.W, tol={0: 1e-6, 1: 1e-3, 2: 8e-3}[t])


def run_family(lib):
    lib.sb_quant_workspace.restype = ctypes.c_int64
    cases = [
        ("int4 zeros g32 [96, 160] (short layers)", dict(cb=LUT4, out=96, inf=160, group=32, zeros=True)),
        ("int4 zeros g128 [4096, 4096]", dict(cb=LUT4, out=4096, inf=4096, group=128, zeros=True)),
        ("int4 zeros g128 act-order [1024, 4096]", dict(cb=LUT4, out=1024, inf=4096, group=128, zeros=True, perm=True)),
        ("nf4 g64 [4096, 14336] (down_proj)", dict(cb=LUT4, out=4096, inf=14336, group=64, lut=NF4)),
        ("int4 g64 short last group [72, 160]", dict(cb=LUT4, out=72, inf=160, group=64, zeros=True)),
        ("u8 zeros g128 [1000, 1024]", dict(cb=U8, out=1000, inf=1024, group=128, zeros=True)),
        ("s8 per row [512, 2048]", dict(cb=S8, out=512, inf=2048, group=2048)),
        ("e4m3 per row [4096, 4096]", dict(cb=E4M3, out=4096, inf=4096, group=4096)),
        ("e4m3 blocks of 128 [1536, 1024]", dict(cb=E4M3, out=1536, inf=1024, group=128)),
        ("e4m3 per row, odd rows [77, 4104]", dict(cb=E4M3, out=77, inf=4104, group=4104)),
        ("int4 g16 [40, 256]", dict(cb=LUT4, out=40, inf=256, group=16, zeros=True)),
    ]
    for t in TYPES:
        for name, kw in cases:
            q = Packed(**kw)
            gemv_case(lib, t, name, q, [1, 3, 16, 17, 64])
            dequant_case(lib, t, name, q)
        q = Packed(cb=LUT4, out=256, inf=512, group=128, zeros=True, perm=True)
        gemv_case(lib, t, "int4 act-order into a column slice", q, [1, 5], extra_cols=96)
        q = Packed(cb=E4M3, out=128, inf=512, group=512)
        gemv_case(lib, t, "e4m3 into a column slice", q, [2, 33], extra_cols=64)
    # The tensor-core kernel (quant_mma.cuh; SWITCHBOARD_QUANT_KERNEL=mma): 16-bit activations, inputs in
    # runs of 32 (the others, and fp32, still take the GEMV). Every n-tile count (rows 1-8, 9-16, 17-32,
    # 33-64), passes of 64 rows (65, 128), ragged outputs, each codebook, per-word groups (16), act-order.
    lib.sb_set_quant_kernel(1)
    try:
        for t in TYPES[1:]:
            for name, kw in cases:
                if kw["inf"] % 32:
                    continue
                gemv_case(lib, t, name, Packed(**kw), [1, 3, 8, 9, 16, 17, 33, 64, 65, 128], kernel="mma")
            q = Packed(cb=LUT4, out=256, inf=512, group=128, zeros=True, perm=True)
            gemv_case(lib, t, "int4 act-order into a column slice", q, [1, 40], extra_cols=96, kernel="mma")
            q = Packed(cb=E4M3, out=136, inf=512, group=512)
            gemv_case(lib, t, "e4m3 into a column slice", q, [2, 33], extra_cols=64, kernel="mma")
            q = Packed(cb=U8, out=4096, inf=14336, group=128, zeros=True)
            gemv_case(lib, t, "u8 zeros g128 [4096, 14336] (split-K)", q, [64], kernel="mma")
    finally:
        lib.sb_set_quant_kernel(0)
    # What the kernels refuse (the engine dequantises those weights at load instead).
    bad = Packed(cb=LUT4, out=8, inf=160, group=20).struct()
    verdict(lib.sb_quant_supports(ctypes.byref(bad)) == 0, "refuses groups that split a packed step", "group 20 accepted")


if __name__ == "__main__":
    main(run_family, __doc__)
