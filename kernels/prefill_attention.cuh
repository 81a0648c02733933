// Prefill attention on tensor cores (after FlashAttention-2, with mma.sync m16n8k16): a block
// takes a tile of up to 64 consecutive query rows of one sequence (a prompt chunk: consecutive
// positions) and one query head; each of its four warps holds 16 rows. Tiles of 64 keys and
// values stream from the paged cache into shared memory with cp.async, double-buffered; S = Q K^T
// and O += P V run as 16-bit mma with fp32 accumulators, and the online softmax works on the
// accumulator fragments (a thread holds pieces of two rows, a quad of lanes one row's slice).
// Why: attention.cuh scores keys on CUDA cores one query row per block, which is right for decode
// (one row, memory-bound) but makes a 2048-token prompt's attention cost more than its GEMMs.
// Shared-memory rows are swizzled by 16-byte chunk (chunk ^ row % 8) so that the eight row
// addresses of an ldmatrix fall in distinct banks. Q goes straight from global memory into each
// warp's A fragments (it is read once), so shared memory holds only the K/V stages: 64 KiB at
// head dim 128, three blocks per SM. Head dims 16, 32, 64, 80, 96 and 128.
#pragma once

#include "attention.cuh"

#include <type_traits>

namespace sb::kern {

constexpr int PFA_ROWS = kPrefillTileRows;  // query rows per block (4 warps x 16)
constexpr int PFA_KEYS = 64;                 // keys per tile
constexpr int PFA_THREADS = 128;
static_assert(PFA_ROWS == 4 * 16, "four warps of 16 rows");

template <int D>
struct PfaCfg {
  static_assert(D % 16 == 0 && D <= 128, "head dims 16..128, multiples of 16");
  static constexpr int CH = D / 8;                       // 16-byte chunks per row
  // Head dims 80 and 96: 8 chunks swizzled by row % 8, then a tail of 2 or 4 by row % tail.
  static constexpr int FULL = (CH & (CH - 1)) == 0 ? CH : CH / 8 * 8;
  static constexpr int TAIL = CH - FULL;
  static_assert(TAIL == 0 || (TAIL & (TAIL - 1)) == 0, "a power-of-two tail of chunks");
  static constexpr int LOADERS = PFA_THREADS / CH * CH;  // threads that copy (whole rows of chunks)
  static constexpr int KV_ELEMS = PFA_KEYS * D;
  static constexpr int SMEM = 4 * KV_ELEMS * 2;  // (K, V) for two stages
};

// Swizzled position of 16-byte chunk `chunk` in row `row` (only row % 8 matters): chunk ^ row % 8
// within whole groups of eight chunks (fewer for head dims 16 and 32), chunk ^ row % tail in the tail.
template <int D>
__device__ __forceinline__ int pfaSwz(int chunk, int row) {
  using C = PfaCfg<D>;
  if constexpr (C::TAIL == 0) return chunk ^ (row & (C::CH < 8 ? C::CH - 1 : 7));
  else return chunk < C::FULL ? chunk ^ (row & 7) : chunk ^ (row & (C::TAIL - 1));
}

// Element offset of (row, col) in a swizzled [rows][D] tile; col a multiple of 8.
template <int D>
__device__ __forceinline__ int pfaAt(int row, int col) {
  return row * D + (pfaSwz<D>(col >> 3, row) << 3);
}

// Four 8x8 matrices of 16-bit elements from shared memory, one row address per lane (lanes 8i..8i+7
// address matrix i); Trans hands each lane the transposed fragment (the B operand of P V).
template <bool Trans>
__device__ __forceinline__ void ldsm4(uint32_t (&r)[4], const void* p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  if constexpr (Trans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
#else
  __trap();
#endif
}

// 2^x on the special-function unit (the softmax's inputs are <= 0, its outputs rounded to 16 bits).
__device__ __forceinline__ float pfaExp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// grid (tiles, heads). tiles[2 i] is the first batch row of tile i and tiles[2 i + 1] its row
// count (<= 64); a tile's rows belong to one sequence and have consecutive positions. Blocks run
// the tiles in reverse order: later tiles of a prompt see more keys, so they start first.
// scaleLog2 = softmax scale * log2(e) (the softmax runs in base 2). Soft-capping (Gemma 2), when
// Cap (a template flag, so the other models' kernel keeps its registers): each raw score s becomes capOut * tanh(s * capIn) (capIn = scale / cap, capOut =
// cap * log2(e)), already in base 2, and scaleLog2 is then 1.
template <typename T, int D, bool Cap>
__global__ void __launch_bounds__(PFA_THREADS, 3) prefillAttentionKernel(
    const T* __restrict__ q, int ldq, const T* __restrict__ kCache, const T* __restrict__ vCache,
    const int32_t* __restrict__ blockTables, int maxBlocks, const int32_t* __restrict__ rowSeq,
    const int32_t* __restrict__ rowPos, const int32_t* __restrict__ tiles, int heads, int kvHeads, int blockSize,
    int window, float scaleLog2, float capIn, float capOut, T* __restrict__ out) {
  using C = PfaCfg<D>;
  constexpr int KT = D / 16;  // k-steps of Q K^T, and pairs of 8-column output tiles of P V
  extern __shared__ __align__(128) unsigned char pfaSmem[];
  T* skv = reinterpret_cast<T*>(pfaSmem);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int tile = gridDim.x - 1 - blockIdx.x;
  const int head = blockIdx.y, kvh = head / (heads / kvHeads);
  const int row0 = tiles[2 * tile], nRows = tiles[2 * tile + 1];
  const int pos0 = rowPos[row0];
  const int last = pos0 + nRows - 1;  // keys past the tile's last position are never needed
  const int lo = window > 0 ? max(0, pos0 - window + 1) : 0;
  const int kStart = lo / PFA_KEYS * PFA_KEYS;
  const int nTiles = (last - kStart) / PFA_KEYS + 1;
  const int32_t* table = blockTables + static_cast<int64_t>(rowSeq[row0]) * maxBlocks;
  const int64_t kvDim = static_cast<int64_t>(kvHeads) * D;
  const T* kBase = kCache + kvh * D;
  const T* vBase = vCache + kvh * D;

  // Keys past `last` are zero-filled (never NaN: their probabilities are 0 but they are multiplied).
  // Each thread copies one 16-byte column chunk of every (PFA_THREADS / CH)-th key row; a power-of-two
  // block size (the usual case) takes shifts instead of divisions.
  const int bShift = (blockSize & (blockSize - 1)) == 0 ? __ffs(blockSize) - 1 : -1;
  const int cc = (tid % C::CH) * 8, rr = tid / C::CH;
  auto loadKv = [&](int base, int stage) {
    T* ks = skv + stage * 2 * C::KV_ELEMS;
    T* vs = ks + C::KV_ELEMS;
    if (tid >= C::LOADERS) return;  // head dims 80 and 96: 128 threads are not whole rows of chunks
#pragma unroll
    for (int r = rr; r < PFA_KEYS; r += PFA_THREADS / C::CH) {
      const int j = base + r;
      const bool ok = j <= last;
      int64_t slot = 0;
      if (ok) slot = bShift >= 0 ? static_cast<int64_t>(table[j >> bShift]) * blockSize + (j & (blockSize - 1))
                                 : static_cast<int64_t>(table[j / blockSize]) * blockSize + j % blockSize;
      const int64_t off = slot * kvDim + cc;
      attCopy16(ks + pfaAt<D>(r, cc), kBase + off, ok);
      attCopy16(vs + pfaAt<D>(r, cc), vBase + off, ok);
    }
  };
  loadKv(kStart, 0);
  attCommit();

  const int g = lane >> 2, t4 = lane & 3;  // fragment row (and row + 8) and column pair
  const int mi = lane >> 3, mr = lane & 7;  // ldmatrix: which 8x8 matrix this lane addresses, and its row
  const int wr = warp * 16;
  // ldmatrix addresses: every row a lane addresses is (a multiple of 8) + mr, so its swizzled column
  // is (chunk ^ mr): per lane, a row base plus one column offset per k-step (K) or column pair (V).
  const int kRow = ((mi >> 1) * 8 + mr) * D, vRow = ((mi & 1) * 8 + mr) * D;
  int kCol[KT], vCol[KT];
#pragma unroll
  for (int i = 0; i < KT; i++) {
    kCol[i] = pfaSwz<D>(2 * i + (mi & 1), mr) << 3;
    vCol[i] = pfaSwz<D>(2 * i + (mi >> 1), mr) << 3;
  }
  const int wFirst = pos0 + wr, wLast = wFirst + 15;
  const int pr[2] = {wFirst + g, wFirst + g + 8};
  const bool warpActive = wr < nRows;
  // Q's A fragments: rows wr + g and wr + g + 8, column pairs 2 t4 and 2 t4 + 8 of each k-step.
  uint32_t qf[KT][4];
#pragma unroll
  for (int h = 0; h < 2; h++) {
    const int r = wr + g + 8 * h;
    const uint32_t* src = reinterpret_cast<const uint32_t*>(q + static_cast<int64_t>(row0 + min(r, nRows - 1)) * ldq + head * D + 2 * t4);
#pragma unroll
    for (int kk = 0; kk < KT; kk++) {
      qf[kk][h] = r < nRows ? src[kk * 8] : 0u;
      qf[kk][h + 2] = r < nRows ? src[kk * 8 + 4] : 0u;
    }
  }
  float o[2 * KT][4];
#pragma unroll
  for (int i = 0; i < 2 * KT; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

  for (int it = 0; it < nTiles; it++) {
    const int base = kStart + it * PFA_KEYS;
    if (it + 1 < nTiles) loadKv(base + PFA_KEYS, (it + 1) & 1);
    attCommit();
    attWait<1>();
    __syncthreads();
    const T* ks = skv + (it & 1) * 2 * C::KV_ELEMS;
    const T* vs = ks + C::KV_ELEMS;
    // Warps whose rows see none of this tile (above the diagonal, or below the window) skip it.
    const bool any = warpActive && base <= wLast && (window <= 0 || base + PFA_KEYS - 1 > wFirst - window);
    if (any) {
      float s[8][4];
#pragma unroll
      for (int i = 0; i < 8; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < KT; kk++) {
#pragma unroll
        for (int np = 0; np < 4; np++) {
          uint32_t b[4];
          ldsm4<false>(b, ks + kRow + np * 16 * D + kCol[kk]);
          mma16816<T>(s[2 * np], qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3], b[0], b[1]);
          mma16816<T>(s[2 * np + 1], qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3], b[2], b[3]);
        }
      }
      if constexpr (Cap) {
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
          for (int e = 0; e < 4; e++) s[nt][e] = capOut * tanhf(s[nt][e] * capIn);
      }
      // Causal and window masks, only where the tile crosses the diagonal or the window's edge.
      const bool full = base + PFA_KEYS - 1 <= wFirst && (window <= 0 || base > wLast - window);
      if (!full) {
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int j = base + nt * 8 + 2 * t4 + (e & 1), p = pr[e >> 1];
            if (j > p || (window > 0 && j <= p - window)) s[nt][e] = -INFINITY;
          }
      }
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int nt = 0; nt < 8; nt++) {
        mx[0] = fmaxf(mx[0], fmaxf(s[nt][0], s[nt][1]));
        mx[1] = fmaxf(mx[1], fmaxf(s[nt][2], s[nt][3]));
      }
      float corr[2], mu[2];
#pragma unroll
      for (int i = 0; i < 2; i++) {
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
        const float mNew = fmaxf(m[i], mx[i] * scaleLog2);
        mu[i] = mNew == -INFINITY ? 0.0f : mNew;  // a row with no key yet: p = 0, nothing rescaled to NaN
        corr[i] = pfaExp2(m[i] - mu[i]);
        m[i] = mNew;
      }
      float ls[2] = {0.0f, 0.0f};
#pragma unroll
      for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const float pv = pfaExp2(s[nt][e] * scaleLog2 - mu[e >> 1]);
          s[nt][e] = pv;
          ls[e >> 1] += pv;
        }
#pragma unroll
      for (int i = 0; i < 2; i++) {
        ls[i] += __shfl_xor_sync(0xffffffffu, ls[i], 1);
        ls[i] += __shfl_xor_sync(0xffffffffu, ls[i], 2);
        l[i] = l[i] * corr[i] + ls[i];
      }
#pragma unroll
      for (int i = 0; i < 2 * KT; i++) {
        o[i][0] *= corr[0];
        o[i][1] *= corr[0];
        o[i][2] *= corr[1];
        o[i][3] *= corr[1];
      }
      // O += P V: the score accumulators of two 8-key tiles are exactly one A fragment.
#pragma unroll
      for (int kk = 0; kk < 4; kk++) {
        const uint32_t a[4] = {pack2<T>(s[2 * kk][0], s[2 * kk][1]), pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                               pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]), pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
        for (int dp = 0; dp < KT; dp++) {
          uint32_t b[4];
          ldsm4<true>(b, vs + vRow + kk * 16 * D + vCol[dp]);
          mma16816<T>(o[2 * dp], a[0], a[1], a[2], a[3], b[0], b[1]);
          mma16816<T>(o[2 * dp + 1], a[0], a[1], a[2], a[3], b[2], b[3]);
        }
      }
    }
    __syncthreads();  // the next iteration's copies overwrite this stage
  }
  attWait<0>();
  if (!warpActive) return;
  const float inv[2] = {l[0] > 0.0f ? 1.0f / l[0] : 0.0f, l[1] > 0.0f ? 1.0f / l[1] : 0.0f};
#pragma unroll
  for (int h = 0; h < 2; h++) {
    const int r = wr + g + 8 * h;
    if (r >= nRows) continue;
    T* dst = out + (static_cast<int64_t>(row0 + r) * heads + head) * D + 2 * t4;
#pragma unroll
    for (int dt = 0; dt < 2 * KT; dt++)
      *reinterpret_cast<uint32_t*>(dst + dt * 8) = pack2<T>(o[dt][2 * h] * inv[h], o[dt][2 * h + 1] * inv[h]);
  }
}

}  // namespace sb::kern
