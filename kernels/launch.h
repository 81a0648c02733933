// Host-side entry points of the CUDA kernels: plain C++ (no CUDA syntax), so the engine, built
// by the host compiler, can call them. Every pointer is a device pointer; element types are
// chosen at run time by `Elem` and dispatched to template instances inside the .cu files.
// Each launcher returns the cudaError_t of its launch (0 = success) as an int.
#pragma once

#include <cstdint>

namespace sb::kern {

enum class Elem : int { F32 = 0, F16 = 1, BF16 = 2 };

typedef struct CUstream_st* Stream;

// out[r] = table[tokens[r]]  (rows of `hidden`)
int embedding(Elem t, const void* table, const int32_t* tokens, int rows, int hidden, void* out, Stream s);
// out[r] = table[tokens[r]] * scale, the scale cast to t first (Gemma's sqrt(hidden) normaliser).
int embeddingScaled(Elem t, const void* table, const int32_t* tokens, int rows, int hidden, float scale, void* out, Stream s);

// If residual != null: residual += x (in place), then out = rmsnorm(residual) * w.
// Else out = rmsnorm(x) * w. Sums of squares in fp32, as transformers does.
int rmsnorm(Elem t, const void* x, void* residual, const void* w, int rows, int hidden, float eps, void* out, Stream s);
// The same with Gemma's weight: out = rmsnorm(x) * (1 + w), in fp32, rounded once.
int gemmaRmsnorm(Elem t, const void* x, void* residual, const void* w, int rows, int hidden, float eps, void* out, Stream s);
// Per-head RMSNorm in place (q_norm / k_norm): row r's `heads` vectors of `dim` start at x + r * ld;
// w [dim] (gemma: (1 + w)).
int headRmsnorm(Elem t, void* x, int ld, int rows, int heads, int dim, const void* w, float eps, bool gemma, Stream s);

// Rotates q (rows of `ldq` elements, heads x dim at the start) and k (rows of `ldk`, kvHeads x dim)
// in place (rotate-half layout), angle = positions[r] * invFreq[i] in fp32, cos and sin times
// attnFactor (yarn, longrope; 1 otherwise). freqRow null: every row uses invFreq[0..dim/2); else row r
// uses invFreq row freqRow[r] (frequencies that follow each sequence's length: dynamic, longrope).
int rope(Elem t, void* q, int ldq, void* k, int ldk, const int32_t* positions, const float* invFreq, const int32_t* freqRow,
         float attnFactor, int rows, int heads, int kvHeads, int dim, Stream s);

// out[r, i] = silu(gate[r, i]) * up[r, i]; gate/up rows have stride `ld` (e.g. a fused [gate|up] buffer).
int siluMul(Elem t, const void* gate, const void* up, int ld, int rows, int inter, void* out, Stream s);
// out[r, i] = gelu_tanh(gate[r, i]) * up[r, i] (Gemma's MLP), same layout as siluMul.
int geluTanhMul(Elem t, const void* gate, const void* up, int ld, int rows, int inter, void* out, Stream s);

// x[i] = cap * tanh(x[i] / cap) over n fp32 values (final-logit soft-capping).
int softcap(float* x, int64_t n, float cap, Stream s);

// y += bias (broadcast over rows), y [rows, cols].
int addBias(Elem t, void* y, const void* bias, int rows, int cols, Stream s);
// y[i] += z[i] for n elements (each sum rounded once to t).
int addTo(Elem t, void* y, const void* z, int64_t n, Stream s);

// LoRA over segments of rows that share an adapter (SGMV). A segment i covers rows
// [segStart[i], segStart[i+1]) and uses adapter slot segSlot[i] (-1: none). The slot table holds,
// for (slot, layer, proj), pointers to A [rank, in] and B [out, rank], the rank and the scale.
struct LoraSlotEntry {
  const void* a;
  const void* b;
  int rank;  // 0 = module absent
  float scale;
};
// Up to three projections that read the same input (q/k/v, or gate/up) go through one launch.
// Projection p uses table entry entryOffset[p], writes output columns [yCol[p], yCol[p] + out[p])
// of y, and its slice of tmp is columns [p * maxRank, (p + 1) * maxRank).
struct LoraProjSet {
  int count;
  int entryOffset[3];
  int yCol[3];
  int out[3];
};
// tmp [rows, count * maxRank] fp32 = x A_p^T for each segment's adapter (rows = segStart[numSegs]).
int sgmvShrink(Elem t, const void* x, int in, float* tmp, int maxRank, const LoraSlotEntry* table, int tableStride,
               const LoraProjSet& set, const int32_t* segStart, const int32_t* segSlot, int numSegs, int maxSegRows,
               int rows, Stream s);
// y (row stride ldy) += scale_p * tmp_p B_p^T, for every projection of the set.
int sgmvExpand(Elem t, const float* tmp, int maxRank, void* y, int ldy, const LoraSlotEntry* table, int tableStride,
               const LoraProjSet& set, const int32_t* segStart, const int32_t* segSlot, int numSegs, int maxSegRows,
               Stream s);
// The whole LoRA of a set: y += scale_p * (x A_p^T) B_p^T, the same result as sgmvShrink then
// sgmvExpand (same arguments, same rounding). Why: at decode (few rows per segment) that pair is
// latency-bound - two launches, a memset, atomics and a tmp round trip per set. Here, on sm_90,
// with segments of at most 64 rows and ranks <= 128, one launch does it: a thread-block cluster
// per (segment, rows, projection) reduces the shrink in shared memory and expands straight into
// y; tmp is untouched. Elsewhere (prefill segments, larger ranks, pre-sm_90) it runs the pair
// through tmp, so tmp must be sized as for sgmvShrink. Capturable (no sync, no allocation); the
// choice depends only on the host arguments.
int sgmv(Elem t, const void* x, int in, float* tmp, int maxRank, void* y, int ldy, const LoraSlotEntry* table, int tableStride,
         const LoraProjSet& set, const int32_t* segStart, const int32_t* segSlot, int numSegs, int maxSegRows, int rows, Stream s);
// Which kernels sgmv() runs for segments of up to 64 rows. Simt: the CUDA-core cluster kernel
// above. TensorCore: one launch per set on mma.sync (sgmvTcKernel in sgmv.cuh) for fp16/bf16,
// ranks <= 128, in, ldy, every yCol and out multiples of 8, x and y 16-byte aligned, sm_90; any
// other call still takes the Simt choice. The process-wide default comes from
// SWITCHBOARD_LORA_KERNEL=tc|tc+pdl|simt (read once; unset: simt) so benchmarks can compare the two;
// setLoraKernel overrides it (kernel tests). clusterBlocks / outSplits > 0 force the tensor-core
// grid's split of `in` over a cluster (1..16) and of the outputs over clusters (tuning sweeps);
// 0 = chosen per call; prefetch false drops the kernel's up-front L2 prefetches (for comparison).
// pdl (SWITCHBOARD_LORA_KERNEL=tc+pdl) launches it as a programmatic dependent launch: its
// prologue (segments, slot table, prefetch of A) overlaps the end of the kernel before it, so
// segStart, segSlot, the table and the adapter weights must not be written by that kernel (x and
// y may be: it waits for that kernel before reading them). Off by default until measured.
enum class LoraKernel : int { Simt = 0, TensorCore = 1 };
void setLoraKernel(LoraKernel k, int clusterBlocks = 0, int outSplits = 0, bool prefetch = true, bool pdl = false);
LoraKernel loraKernel();
// The path sgmv() takes for these host arguments: 0 shrink + expand through tmp, 1 the fused
// CUDA-core kernel, 2 the tensor-core kernel.
int sgmvPath(Elem t, const void* x, int in, int maxRank, const void* y, int ldy, const LoraProjSet& set, int maxSegRows);

// LoRA on the model-level modules (lora_model.cu), for rows whose sequence s has seqSlot[s] >= 0 and
// entries[seqSlot[s]].rank > 0 (entries: one per adapter slot). loraEmbedding: PEFT's Embedding LoRA,
// x[r] (the scaled embedding of tokens[r]) += round(B A[:, tokens[r]] * scale) * embedScale, with
// A [rank, vocab], B [hidden, rank]. loraLogits: logit row i (of row logitRows[i], input x[i] [hidden])
// gets round(round(x[i] A^T) B^T * scale) added to its fp32 logits [vocab]; tmp [rows, maxRank] fp32,
// maxRank >= every entry's rank. Capturable.
int loraEmbedding(Elem t, const int32_t* tokens, const int32_t* rowSeq, const int32_t* seqSlot, int rows, const LoraSlotEntry* entries,
                  int vocab, int hidden, float embedScale, void* x, Stream s);
int loraLogits(Elem t, const void* x, const int32_t* logitRows, const int32_t* rowSeq, const int32_t* seqSlot, int rows,
               const LoraSlotEntry* entries, int maxRank, int hidden, int vocab, float* tmp, float* logits, Stream s);

// Writes each row's k and v (kvDim elements at the start of rows of stride `ld`) into the paged
// caches at slot index slots[r] (block * blockSize + offset); caches are [numBlocks * blockSize, kvDim].
int writeKv(Elem t, const void* k, const void* v, int ld, const int32_t* slots, int rows, int kvDim, void* kCache,
            void* vCache, Stream s);

// Attention for query rows over the paged cache: row r (of sequence rowSeq[r], at position
// rowPos[r]) attends to positions [max(0, pos - window + 1), pos] (window 0 = all) through
// blockTables[rowSeq[r] * maxBlocks + ...]. q rows have stride ldq; out is [rows, heads, dim].
// The rows served are 0..rows-1, or rowIndex[0..rows-1] when rowIndex is given (the others are
// left alone, e.g. prompt rows that prefillAttention serves; no split-K then).
// GQA: kvHeads divides heads (at most 8 query heads per kv head). softcap > 0: each scaled score s
// becomes softcap * tanh(s / softcap) before the softmax (Gemma 2); 0 = off.
// With few rows, keys are split over several blocks (flash-decoding): pass an upper bound on the
// key range any row attends to (maxKeys) and an fp32 workspace; attentionWorkspaceFloats() says
// how much is used (0 disables splitting). maxKeys only picks the number of splits (and so the
// workspace size): each block splits its own row's range, so a launch stays valid, e.g. replayed
// from a CUDA graph, while contexts grow, as long as the same (bucketed) maxKeys is passed.
int pagedAttention(Elem t, const void* q, int ldq, const void* kCache, const void* vCache, const int32_t* blockTables,
                   int maxBlocks, const int32_t* rowSeq, const int32_t* rowPos, const int32_t* rowIndex, int rows, int heads,
                   int kvHeads, int dim, int blockSize, int window, float scale, float softcap, void* out, int maxKeys,
                   float* workspace, int64_t workspaceFloats, Stream s);
int64_t attentionWorkspaceFloats(int rows, int heads, int kvHeads, int dim, int maxKeys);

// The same attention for prompt chunks, on tensor cores (prefill_attention.cuh): tiles[2 i] is
// the first row of tile i and tiles[2 i + 1] its row count (1..64); a tile's rows are consecutive
// rows of one sequence with consecutive positions. Only fp16/bf16, head dims 16/32/64/80/96/128, sm_80+:
// prefillAttentionSupported says whether this device and shape can take it.
constexpr int kPrefillTileRows = 64;
constexpr int kPrefillMinRows = 8;  // a sequence's rows in a step from which it pays
bool prefillAttentionSupported(Elem t, int dim);
int prefillAttention(Elem t, const void* q, int ldq, const void* kCache, const void* vCache, const int32_t* blockTables,
                     int maxBlocks, const int32_t* rowSeq, const int32_t* rowPos, const int32_t* tiles, int numTiles, int heads,
                     int kvHeads, int dim, int blockSize, int window, float scale, float softcap, void* out, Stream s);

// Mixture of experts (moe.cuh). Router logits [rows, experts] (type t) -> each row's topK experts
// (choice [rows, topK], largest probability first, ties to the lower expert) and weights (fp32
// softmax probabilities, divided by their sum over the chosen when renormalize). topK <= 32.
int moeRoute(Elem t, const void* logits, int rows, int experts, int topK, bool renormalize, int32_t* choice, float* weight, Stream s);
// Groups the rows * topK slots (r * topK + k) by expert: order[offsets[e] .. offsets[e + 1]) are
// expert e's slots, ascending; slotPos[slot] is the slot's index in order. offsets has experts + 1.
int moePlan(const int32_t* choice, int rows, int topK, int experts, int32_t* offsets, int32_t* order, int32_t* slotPos, Stream s);
// xg[i] = x[order[i] / topK] for i < n (rows of hidden): the expert GEMMs' inputs, grouped by expert.
int moeGather(Elem t, const void* x, const int32_t* order, int n, int topK, int hidden, void* xg, Stream s);
// For steps of few rows: y[i] = x[i] W_e^T for every grouped row i of every expert e (rows
// offsets[e] .. offsets[e + 1] of x [*, in] and y [*, out]), weights[e] the device address of
// expert e's [out, in] matrix; one launch whatever the routing (capturable into a CUDA graph).
// in * sizeof(t) <= 48 KiB.
int moeGemv(Elem t, const void* x, int in, const int32_t* offsets, const void* const* weights, int experts, int out, void* y, Stream s);
// out[r] = sum over r's choices in ascending expert order of y[slotPos[slot]] * weight[slot] (weight
// cast to t), rounded to t after each product and add, as transformers' per-expert index_add_.
int moeCombine(Elem t, const void* y, const int32_t* choice, const float* weight, const int32_t* slotPos, int rows, int topK, int hidden,
               void* out, Stream s);
// Qwen2-MoE's shared expert: out[r] += sigmoid(gate[r]) * y[r] for rows of hidden (gate [rows], all
// type t), rounded to t after the sigmoid, the product and the add, as transformers computes it.
int moeSharedAdd(Elem t, const void* y, const void* gate, int rows, int hidden, void* out, Stream s);
// LoRA on the experts' weights (PEFT target_parameters) for the n grouped rows of an expert GEMM (x [n, in],
// y [n, ldy]): row i is slot order[i] (token row order[i] / topK, expert choice[order[i]]); its sequence's adapter
// slot seqSlot[rowSeq[row]] (-1: none) picks table[slot * stride + offset] = {a [E][r][in], b [E][out][r], rank,
// scale}, and y[i, :out] += scale * B_e (A_e x[i]) (fp32 sums, one rounding to t). maxRank bounds the ranks.
int moeLora(Elem t, const void* x, int in, void* y, int ldy, int out, int n, int topK, const int32_t* order, const int32_t* choice,
            const int32_t* rowSeq, const int32_t* seqSlot, const LoraSlotEntry* table, int stride, int offset, int maxRank, Stream s);

// What the engine wants from one row of fp32 logits (sampling.cuh has the semantics).
struct RowFinish {
  uint64_t seed;
  uint64_t position;        // draw counter: the position of the token being chosen
  float temperature;        // <= 0: greedy
  float topP;               // 1 = off
  float repetitionPenalty;  // applied to the penaltyCount distinct tokens at penaltyOffset
  int32_t topK;             // 0 = off
  int32_t maskOffset;       // word offset of this row's allowed-token bitmask in `masks`, -1 = none
  int32_t penaltyOffset, penaltyCount;
  int32_t target;           // token whose log-probability is wanted (prompt logprobs), -1 = none
  int32_t topN;             // alternatives wanted (best raw log-probabilities)
  int32_t sample;           // 1: choose a token
  int32_t workRow;          // row of `work` ([*, vocab] fp32) for the processed logits when sampling
  int32_t biasOffset, biasCount;  // additive biases: biasCount distinct token ids at biasOffset in
                                  // penaltyTokens, then their float bits, added after the penalty
};
// Result words per row (resultStride >= 4 + 2 * max topN): [0] chosen token, [1] its raw
// log-probability (float bits), [2] the target's log-probability, [3] status (1 = the mask allows
// no token), then topN (id, log-probability bits) pairs, best first, ties to the lower id.
int finishRows(const float* logits, int rows, int vocab, const RowFinish* params, const uint32_t* masks,
               const int32_t* penaltyTokens, float* work, int32_t* results, int resultStride, Stream s);

// Weight-only quantized linear layers (quant_gemm.cuh): W [out, in] in the engines' packed layout
// (native/quantized/packed.ts, native/src/engine.h PackedWeight), on the device:
//   W[o, perm[k]] = (value(code[o, k]) - zeros[o, g]) * scales[o, g], g = k / groupSize.
// Lut4: codes are 32-bit words [out, in / 8], nibble j of word w is input 8 w + j, value = lut[code];
// U8 / S8 / E4M3: one byte per code [out, in], the byte as unsigned, signed or float8 e4m3fn.
enum class QuantCodebook : int { Lut4 = 0, U8 = 1, S8 = 2, E4M3 = 3 };
struct QuantWeight {
  const void* codes;
  const float* scales;  // [out, ceil(in / groupSize)]
  const float* zeros;   // same, or null (no zero points)
  const float* lut;     // Lut4: 16 values; else null
  const int32_t* perm;  // [in], or null (identity)
  int out, in, groupSize;
  QuantCodebook codebook;
};
// Whether these kernels take w: in a multiple of 8, groups of whole packed steps (groupSize a multiple
// of 8, or one group). The engine dequantises other weights to 16 bits at load.
bool quantGemvSupports(const QuantWeight& w);
// y [rows, out] (row stride ldy) = x [rows, in] W^T in element type t, fp32 accumulation, weights dequantised in
// registers: each packed weight is read once per 16 rows of x (decode batches). Needs a workspace of
// quantGemvWorkspaceBytes (split-K partial sums; x permuted for act-order). Capturable.
int64_t quantGemvWorkspaceBytes(Elem t, int rows, const QuantWeight& w);
int quantGemv(Elem t, const void* x, int rows, const QuantWeight& w, void* y, int ldy, void* workspace, int64_t workspaceBytes, Stream s);
// Which kernel quantGemv runs for 16-bit activations: the CUDA-core GEMV, or the tensor-core GEMM
// (kernels/quant_mma.cuh: each packed weight read and dequantised once per 64 rows, mma.sync; inputs in
// runs of 32, sm_80+). SWITCHBOARD_QUANT_KERNEL=mma|gemv picks it at start (gemv until the mma kernel has
// been measured on a GPU); setQuantKernel for tests and benchmarks.
enum class QuantKernel : int { Gemv = 0, Mma = 1 };
void setQuantKernel(QuantKernel k);
QuantKernel quantKernel();
// dst [out, in] = W in element type t (permutation undone): long prompt chunks then run a tensor-core GEMM.
int quantDequant(Elem t, const QuantWeight& w, void* dst, Stream s);

// Converts fp32 host-staged data already on the device into element type t (weights upload).
int convertF32(Elem t, const float* src, void* dst, int64_t n, Stream s);

// Converts 16-bit source bits (fp16 or bf16, given by srcIsBf16) into element type t.
int convert16(Elem t, const uint16_t* src, bool srcIsBf16, void* dst, int64_t n, Stream s);

// dst[i] = std * N(0, 1) from a hash of (seed, i): the same numbers as the CPU engine's randomWeight.
int randomFill(Elem t, void* dst, int64_t n, uint64_t seed, float std, Stream s);

}  // namespace sb::kern
