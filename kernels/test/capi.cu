// C entry points over launch.h for the kernel tests and benchmarks (harness.py builds it with every
// family's <family>.cu into one library and loads it with ctypes; test_<family>.py compares each
// family with PyTorch on random data, bench/gpu/kernels_bench.py times them). Not part of the engine build.
#include "../launch.h"

using namespace sb::kern;
#define S(x) reinterpret_cast<Stream>(x)
#define E(t) static_cast<Elem>(t)

extern "C" {
// Stream of every entry (default: the legacy stream), so the bench can capture them in a CUDA graph.
static Stream gStream = nullptr;
void sb_set_stream(void* s) { gStream = S(s); }
int sb_embedding(int t, const void* table, const int32_t* tokens, int rows, int hidden, void* out) { return embedding(E(t), table, tokens, rows, hidden, out, gStream); }
int sb_rmsnorm(int t, const void* x, void* res, const void* w, int rows, int hidden, float eps, void* out) { return rmsnorm(E(t), x, res, w, rows, hidden, eps, out, gStream); }
int sb_gemma_rmsnorm(int t, const void* x, void* res, const void* w, int rows, int hidden, float eps, void* out) { return gemmaRmsnorm(E(t), x, res, w, rows, hidden, eps, out, gStream); }
int sb_head_rmsnorm(int t, void* x, int ld, int rows, int heads, int dim, const void* w, float eps, int gemma) { return headRmsnorm(E(t), x, ld, rows, heads, dim, w, eps, gemma != 0, gStream); }
int sb_rope(int t, void* q, int ldq, void* k, int ldk, const int32_t* pos, const float* inv, int rows, int heads, int kvHeads, int dim, const int32_t* freqRow, float attnFactor) { return rope(E(t), q, ldq, k, ldk, pos, inv, freqRow, attnFactor, rows, heads, kvHeads, dim, gStream); }
int sb_embedding_scaled(int t, const void* table, const int32_t* tokens, int rows, int hidden, float scale, void* out) { return embeddingScaled(E(t), table, tokens, rows, hidden, scale, out, gStream); }
int sb_gelu_tanh_mul(int t, const void* g, const void* u, int ld, int rows, int inter, void* out) { return geluTanhMul(E(t), g, u, ld, rows, inter, out, gStream); }
int sb_softcap(float* x, int64_t n, float cap) { return softcap(x, n, cap, gStream); }
int sb_moe_route(int t, const void* logits, int rows, int experts, int topK, int renormalize, int32_t* choice, float* weight) { return moeRoute(E(t), logits, rows, experts, topK, renormalize != 0, choice, weight, gStream); }
int sb_moe_plan(const int32_t* choice, int rows, int topK, int experts, int32_t* offsets, int32_t* order, int32_t* slotPos) { return moePlan(choice, rows, topK, experts, offsets, order, slotPos, gStream); }
int sb_moe_gather(int t, const void* x, const int32_t* order, int n, int topK, int hidden, void* xg) { return moeGather(E(t), x, order, n, topK, hidden, xg, gStream); }
int sb_moe_gemv(int t, const void* x, int in, const int32_t* offsets, const void* const* weights, int experts, int out, void* y) { return moeGemv(E(t), x, in, offsets, weights, experts, out, y, gStream); }
int sb_moe_combine(int t, const void* y, const int32_t* choice, const float* weight, const int32_t* slotPos, int rows, int topK, int hidden, void* out) { return moeCombine(E(t), y, choice, weight, slotPos, rows, topK, hidden, out, gStream); }
int sb_moe_shared_add(int t, const void* y, const void* gate, int rows, int hidden, void* out) { return moeSharedAdd(E(t), y, gate, rows, hidden, out, gStream); }
int sb_moe_lora(int t, const void* x, int in, void* y, int ldy, int out, int n, int topK, const int32_t* order, const int32_t* choice, const int32_t* rowSeq, const int32_t* seqSlot, const LoraSlotEntry* table, int stride, int offset, int maxRank) { return moeLora(E(t), x, in, y, ldy, out, n, topK, order, choice, rowSeq, seqSlot, table, stride, offset, maxRank, gStream); }
int sb_silu_mul(int t, const void* g, const void* u, int ld, int rows, int inter, void* out) { return siluMul(E(t), g, u, ld, rows, inter, out, gStream); }
int sb_add_bias(int t, void* y, const void* b, int rows, int cols) { return addBias(E(t), y, b, rows, cols, gStream); }
int sb_add_to(int t, void* y, const void* z, int64_t n) { return addTo(E(t), y, z, n, gStream); }
int sb_sgmv_shrink(int t, const void* x, int in, float* tmp, int maxRank, const LoraSlotEntry* table, int stride, const LoraProjSet* set, const int32_t* segStart, const int32_t* segSlot, int nseg, int maxSegRows, int rows) { return sgmvShrink(E(t), x, in, tmp, maxRank, table, stride, *set, segStart, segSlot, nseg, maxSegRows, rows, gStream); }
int sb_sgmv_expand(int t, const float* tmp, int maxRank, void* y, int ldy, const LoraSlotEntry* table, int stride, const LoraProjSet* set, const int32_t* segStart, const int32_t* segSlot, int nseg, int maxSegRows) { return sgmvExpand(E(t), tmp, maxRank, y, ldy, table, stride, *set, segStart, segSlot, nseg, maxSegRows, gStream); }
int sb_sgmv(int t, const void* x, int in, float* tmp, int maxRank, void* y, int ldy, const LoraSlotEntry* table, int stride, const LoraProjSet* set, const int32_t* segStart, const int32_t* segSlot, int nseg, int maxSegRows, int rows) { return sgmv(E(t), x, in, tmp, maxRank, y, ldy, table, stride, *set, segStart, segSlot, nseg, maxSegRows, rows, gStream); }
void sb_set_lora_kernel(int kind, int clusterBlocks, int outSplits, int prefetch, int pdl) { setLoraKernel(static_cast<LoraKernel>(kind), clusterBlocks, outSplits, prefetch != 0, pdl != 0); }
int sb_lora_kernel() { return static_cast<int>(loraKernel()); }
int sb_sgmv_path(int t, const void* x, int in, int maxRank, const void* y, int ldy, const LoraProjSet* set, int maxSegRows) { return sgmvPath(E(t), x, in, maxRank, y, ldy, *set, maxSegRows); }
int sb_lora_embedding(int t, const int32_t* tokens, const int32_t* rowSeq, const int32_t* seqSlot, int rows, const LoraSlotEntry* entries, int vocab, int hidden, float embedScale, void* x) { return loraEmbedding(E(t), tokens, rowSeq, seqSlot, rows, entries, vocab, hidden, embedScale, x, gStream); }
int sb_lora_logits(int t, const void* x, const int32_t* logitRows, const int32_t* rowSeq, const int32_t* seqSlot, int rows, const LoraSlotEntry* entries, int maxRank, int hidden, int vocab, float* tmp, float* logits) { return loraLogits(E(t), x, logitRows, rowSeq, seqSlot, rows, entries, maxRank, hidden, vocab, tmp, logits, gStream); }
int sb_write_kv(int t, const void* k, const void* v, int ld, const int32_t* slots, int rows, int kvDim, void* kc, void* vc) { return writeKv(E(t), k, v, ld, slots, rows, kvDim, kc, vc, gStream); }
int sb_paged_attention(int t, const void* q, int ldq, const void* kc, const void* vc, const int32_t* tables, int maxBlocks, const int32_t* rowSeq, const int32_t* rowPos, const int32_t* rowIndex, int rows, int heads, int kvHeads, int dim, int bs, int window, float scale, void* out, int maxKeys, float* ws, int64_t wsFloats, float softcap) { return pagedAttention(E(t), q, ldq, kc, vc, tables, maxBlocks, rowSeq, rowPos, rowIndex, rows, heads, kvHeads, dim, bs, window, scale, softcap, out, maxKeys, ws, wsFloats, gStream); }
int sb_prefill_attention_supported(int t, int dim) { return prefillAttentionSupported(E(t), dim) ? 1 : 0; }
int sb_prefill_attention(int t, const void* q, int ldq, const void* kc, const void* vc, const int32_t* tables, int maxBlocks, const int32_t* rowSeq, const int32_t* rowPos, const int32_t* tiles, int numTiles, int heads, int kvHeads, int dim, int bs, int window, float scale, void* out, float softcap) { return prefillAttention(E(t), q, ldq, kc, vc, tables, maxBlocks, rowSeq, rowPos, tiles, numTiles, heads, kvHeads, dim, bs, window, scale, softcap, out, gStream); }
int64_t sb_attention_workspace(int rows, int heads, int kvHeads, int dim, int maxKeys) { return attentionWorkspaceFloats(rows, heads, kvHeads, dim, maxKeys); }
int sb_finish_rows(const float* logits, int rows, int vocab, const RowFinish* params, const uint32_t* masks, const int32_t* pen, float* work, int32_t* results, int stride) { return finishRows(logits, rows, vocab, params, masks, pen, work, results, stride, gStream); }
int sb_quant_supports(const QuantWeight* w) { return quantGemvSupports(*w) ? 1 : 0; }
int64_t sb_quant_workspace(int t, int rows, const QuantWeight* w) { return quantGemvWorkspaceBytes(E(t), rows, *w); }
int sb_quant_gemv(int t, const void* x, int rows, const QuantWeight* w, void* y, int ldy, void* ws, int64_t wsBytes) { return quantGemv(E(t), x, rows, *w, y, ldy, ws, wsBytes, gStream); }
int sb_quant_dequant(int t, const QuantWeight* w, void* dst) { return quantDequant(E(t), *w, dst, gStream); }
void sb_set_quant_kernel(int k) { setQuantKernel(static_cast<QuantKernel>(k)); }
int sb_random_fill(int t, void* dst, int64_t n, uint64_t seed, float std) { return randomFill(E(t), dst, n, seed, std, gStream); }
}
