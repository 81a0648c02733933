"""Shared harness of the kernel tests (one test_<family>.py per kernel family, all.py runs them all)
and of bench/gpu/kernels_bench.py: builds every family's launchers (kernels/<family>.cu) with the
C entry points of capi.cu into one shared library loaded with ctypes, and holds what the tests
share: NaN-poisoned outputs, relative-error checks against float64 PyTorch references, the ctypes
mirrors of launch.h's structs, and the attention cases both attention families are checked on.
Runs on the GPU machine (PyTorch with CUDA, nvcc).
"""
import argparse, concurrent.futures, ctypes, hashlib, math, os, subprocess, sys, tempfile
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
KERNELS = os.path.dirname(HERE)
# The families of kernels/CMakeLists.txt, each a <family>.cu beside its <family>.cuh.
FAMILIES = ["norm", "rope", "elementwise", "sgmv", "attention", "prefill_attention", "sampling", "moe", "quant_gemm", "lora_model"]
F32, F16, BF16 = 0, 1, 2
TYPES = (F32, F16, BF16)
DT = {F32: torch.float32, F16: torch.float16, BF16: torch.bfloat16}
TOL = {F32: 1e-5, F16: 2e-3, BF16: 1.2e-2}
SHORT = ["f32", "f16", "bf16"]
failures = []


def sources():
    return [os.path.join(KERNELS, f"{f}.cu") for f in FAMILIES] + [os.path.join(HERE, "capi.cu")]


def build(arch):
    """The kernels as a shared library for sm_<arch>; each family compiles in parallel, and the
    result is reused while no source or header changes (all.py and single test files share it)."""
    h = hashlib.sha256(arch.encode())
    for d in (KERNELS, HERE):
        for name in sorted(os.listdir(d)):
            if name.endswith((".cu", ".cuh", ".h")):
                with open(os.path.join(d, name), "rb") as f:
                    h.update(name.encode() + f.read())
    out_dir = os.path.join(os.environ.get("SB_KERNEL_CACHE", tempfile.gettempdir()), f"sb-kernels-{h.hexdigest()[:16]}")
    lib = os.path.join(out_dir, "libsbkernels.so")
    if not os.path.exists(lib):
        os.makedirs(out_dir, exist_ok=True)
        flags = ["-std=c++17", "-O3", "--expt-relaxed-constexpr", "-Xcompiler", "-fPIC", f"-gencode=arch=compute_{arch},code=sm_{arch}"]
        objs = [os.path.join(out_dir, os.path.basename(s) + ".o") for s in sources()]
        with concurrent.futures.ThreadPoolExecutor() as ex:
            for r in ex.map(lambda so: subprocess.run(["nvcc", *flags, "-c", so[0], "-o", so[1]]), zip(sources(), objs)):
                if r.returncode != 0:
                    sys.exit(f"nvcc failed on {r.args[-3]}")
        subprocess.run(["nvcc", "-shared", f"-gencode=arch=compute_{arch},code=sm_{arch}", *objs, "-o", lib + ".tmp"], check=True)
        os.replace(lib + ".tmp", lib)
    return ctypes.CDLL(lib)


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
    print(f"  {'ok ' if ok else 'BAD'} {name:<48} {SHORT[t]:>5}  rel err {e:.2e}")
    if not ok:
        failures.append(f"{name} {t}: {e}")


def verdict(ok, line, failure):
    print(f"  {'ok ' if ok else 'BAD'} {line}")
    if not ok:
        failures.append(failure)


def run(lib, fn, *args):
    rc = getattr(lib, fn)(*args)
    torch.cuda.synchronize()
    if rc != 0:
        failures.append(f"{fn}: CUDA error {rc}")
        print(f"  BAD {fn}: CUDA error {rc}")


def poison(shape, dtype):
    return torch.full(shape, float("nan"), dtype=dtype, device="cuda")


# ctypes mirrors of launch.h's structs.
class Entry(ctypes.Structure):
    _fields_ = [("a", ctypes.c_void_p), ("b", ctypes.c_void_p), ("rank", ctypes.c_int), ("scale", ctypes.c_float)]


class ProjSet(ctypes.Structure):
    _fields_ = [("count", ctypes.c_int), ("entryOffset", ctypes.c_int * 3), ("yCol", ctypes.c_int * 3), ("out", ctypes.c_int * 3)]


class RowFinish(ctypes.Structure):
    _fields_ = [("seed", ctypes.c_uint64), ("position", ctypes.c_uint64), ("temperature", ctypes.c_float), ("topP", ctypes.c_float),
                ("repetitionPenalty", ctypes.c_float), ("topK", ctypes.c_int32), ("maskOffset", ctypes.c_int32),
                ("penaltyOffset", ctypes.c_int32), ("penaltyCount", ctypes.c_int32), ("target", ctypes.c_int32),
                ("topN", ctypes.c_int32), ("sample", ctypes.c_int32), ("workRow", ctypes.c_int32),
                ("biasOffset", ctypes.c_int32), ("biasCount", ctypes.c_int32)]


class QuantWeight(ctypes.Structure):
    _fields_ = [("codes", ctypes.c_void_p), ("scales", ctypes.c_void_p), ("zeros", ctypes.c_void_p), ("lut", ctypes.c_void_p),
                ("perm", ctypes.c_void_p), ("out", ctypes.c_int), ("in_", ctypes.c_int), ("groupSize", ctypes.c_int), ("codebook", ctypes.c_int)]


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


# kernels/rng.h in Python integers: the counter-based hash behind sampling draws and random weights.
M64 = (1 << 64) - 1


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def uniform(seed, position):
    """rng.h's uniformFromSeed."""
    h = splitmix64(splitmix64(seed) ^ ((position * 0xD1B54A32D192ED03) & M64))
    return (h >> 11) * (1.0 / 9007199254740992.0)


def random_weight(seed, index, std):
    """rng.h's randomWeight, in float64."""
    h = splitmix64(((seed * 0x632BE59BD9B4E019) & M64) ^ index)
    u1 = ((h >> 40) + 0.5) / 16777216.0
    u2 = ((h >> 16) & 0xFFFFFF) / 16777216.0
    return std * math.sqrt(-2.0 * math.log(u1)) * math.cos(6.2831853 * u2)


# Attention: the cases both attention families are checked on, and their float64 reference.
BLOCK = 16
_prefill = [(0, 40), (33, 1), (0, 3), (70, 1), (12, 9)]  # (start position of this chunk, rows)
_decode = [(900, 1), (1000, 1)]  # few rows, long contexts: split-K
_batch64 = [(1000 + (i * 7) % 24, 1) for i in range(64)]  # 64 decode rows ~1K keys: no split, fragmented tables
_long1 = [(4095, 1)]  # batch 1, 4K keys: many splits (the last one empty)
_mixed = [(4000, 1), (5, 1), (100, 1), (2047, 1)]  # splits sized by the longest row: short rows leave most empty
_chunks = [(300, 5), (50, 1), (2, 3)]  # a prefill chunk beside decode rows, split-K
_prompt = [(0, 300), (5, 1)]  # a long prompt (tiles of 64 on tensor cores) beside a decode row
_chunked = [(100, 130), (0, 20), (7, 2)]  # a later chunk of a prompt (unaligned start), a short prompt, two rows
# (heads, kv heads, head dim, window, sequences, soft-cap); soft-cap 0 = off.
_PLAIN_CASES = [(32, 8, 128, 0, _prefill), (4, 2, 16, 5, _prefill), (28, 4, 128, 0, _prefill), (8, 8, 64, 7, _prefill),
                   (32, 8, 128, 0, _decode), (28, 4, 128, 0, _decode), (4, 2, 16, 300, _decode),
                   (32, 8, 128, 0, _batch64), (32, 8, 128, 0, _long1), (28, 4, 128, 0, _mixed), (16, 2, 64, 0, _mixed),
                   (32, 8, 128, 1000, _mixed), (32, 8, 128, 0, _chunks), (12, 4, 96, 0, _chunks), (8, 2, 256, 0, _long1),
                   (8, 2, 128, 0, _prompt), (8, 2, 128, 64, _chunked), (8, 4, 64, 0, _chunked), (4, 2, 16, 0, _prompt), (8, 8, 32, 5, _prefill)]
# Issue 18: head dims 80 (the paged kernel's P.V on 16 lanes of 5) and 96 with prompts (the
# tensor-core kernel's tail swizzle), and Gemma 2's attention-logit
# soft-capping on both kernels (cap 5 bites on random unit data scaled by 1/sqrt(d); 50 is Gemma 2's).
_FAMILY_CASES = [(32, 32, 80, 0, _prefill, 0.0), (20, 4, 80, 0, _decode, 0.0), (8, 2, 80, 0, _chunks, 0.0), (16, 8, 80, 64, _chunked, 0.0),
                 (4, 2, 16, 5, _prefill, 5.0), (8, 2, 32, 0, _prompt, 1.0), (16, 8, 256, 0, _long1, 50.0), (8, 4, 64, 64, _chunked, 2.0),
                 (32, 8, 128, 0, _decode, 3.0), (8, 2, 128, 0, _prompt, 1.5), (20, 4, 80, 7, _prefill, 2.0),
                 (12, 4, 96, 0, _prompt, 0.0), (24, 8, 96, 32, _chunked, 0.0), (32, 32, 96, 0, _prefill, 4.0), (8, 2, 80, 0, _prompt, 0.0)]
ATTENTION_CASES = [c + (0.0,) for c in _PLAIN_CASES] + _FAMILY_CASES


def torch_attention(q, kc, vc, tables, row_seq, row_pos, heads, kvh, dim, bs, window, scale, softcap=0.0):
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
            if softcap > 0:
                s = torch.tanh(s / softcap) * softcap
            out[r, h] = torch.softmax(s, 0) @ V[:, h // g]
    return out


def prefill_tiles(r0, n):
    """The engine's tiles for a prompt chunk of n rows starting at batch row r0: (first row, rows), 64 at most."""
    return [(r0 + k, min(64, n - k)) for k in range(0, n, 64)]


def engine_split(seqs):
    """As the engine splits a step: sequences with >= 8 rows in tiles of 64 on tensor cores (tiles),
    every other row through the paged kernel's row list (others)."""
    tiles, others, r0 = [], [], 0
    for _, n in seqs:
        if n >= 8:
            tiles += prefill_tiles(r0, n)
        else:
            others += range(r0, r0 + n)
        r0 += n
    return tiles, others


class AttentionCase:
    """Random q and a paged cache over shuffled blocks for `seqs` (this step's new keys and values
    still to be written with write_kv), and the float64 reference output, computed on demand."""

    def __init__(self, t, heads, kvh, dim, window, seqs, softcap=0.0):
        self.t, self.heads, self.kvh, self.dim, self.window, self.seqs, self.bs = t, heads, kvh, dim, window, seqs, BLOCK
        self.softcap = softcap
        self.row_seq, self.row_pos = [], []
        for s, (p0, n) in enumerate(seqs):
            for j in range(n):
                self.row_seq.append(s)
                self.row_pos.append(p0 + j)
        self.rows = len(self.row_seq)
        self.max_blocks = max(p0 + n for p0, n in seqs) // BLOCK + 1
        nblocks = max(160, len(seqs) * self.max_blocks + 7)
        self.tables = torch.randperm(nblocks, device="cuda")[: len(seqs) * self.max_blocks].view(len(seqs), self.max_blocks).int().contiguous()
        self.kvdim = kvh * dim
        self.kc = torch.randn(nblocks * BLOCK, self.kvdim, device="cuda").to(DT[t])
        self.vc = torch.randn(nblocks * BLOCK, self.kvdim, device="cuda").to(DT[t])
        self.q = torch.randn(self.rows, heads * dim, device="cuda").to(DT[t])
        self.k_new = torch.randn(self.rows, self.kvdim, device="cuda").to(DT[t])
        self.v_new = torch.randn(self.rows, self.kvdim, device="cuda").to(DT[t])
        self.rs = torch.tensor(self.row_seq, dtype=torch.int32, device="cuda")
        self.rp = torch.tensor(self.row_pos, dtype=torch.int32, device="cuda")
        self.slots = (self.tables[self.rs.long(), (self.rp // BLOCK).long()] * BLOCK + self.rp % BLOCK).int()
        self.scale = 1 / math.sqrt(dim)
        self.max_keys = max(self.row_pos) + 1
        self._ref = None

    def name(self):
        return f"h{self.heads}/kv{self.kvh} d{self.dim} window {self.window}" + (f" softcap {self.softcap:g}" if self.softcap else "")

    def write_kv(self, lib):
        run(lib, "sb_write_kv", self.t, p(self.k_new), p(self.v_new), self.kvdim, p(self.slots), self.rows, self.kvdim, p(self.kc), p(self.vc))

    def ref(self):
        if self._ref is None:
            self._ref = torch_attention(self.q.view(self.rows, self.heads, self.dim), self.kc, self.vc, self.tables, self.row_seq, self.row_pos,
                                        self.heads, self.kvh, self.dim, self.bs, self.window, self.scale, self.softcap)
        return self._ref


def main(run_family, doc):
    """Command line of a single family's test file: builds, runs, reports, exits 1 on a failure."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--arch", default="90")
    a = ap.parse_args()
    torch.manual_seed(0)
    run_family(build(a.arch))
    finish()


def finish():
    print(f"{len(failures)} failed" if failures else "all kernel checks passed")
    sys.exit(1 if failures else 0)
