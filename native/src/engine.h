// The engine's C++ interface: tensors, slots and KV blocks in, tokens and logprobs out.
// Nothing here knows about HTTP, tenants or text. The N-API layer (addon.cc) converts JS
// objects into these structs on the JS thread; everything else runs on a worker thread.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace sb {

enum class DType { F32, F16, BF16 };

// A quantized linear weight W [out, in] in the engines' packed layout (native/quantized/packed.ts):
// W[o, perm[k]] = (value(code[o, k]) - zeros[o, g]) * scales[o, g], g = k / groupSize. q4: two codes a
// byte (low nibble = even k), value = lut[code]; q8: a code a byte, as unsigned, signed or e4m3fn.
enum class PackedLayout { Q4, Q8 };
enum class PackedCodebook { Lut, U8, S8, E4M3 };
struct PackedWeight {
  PackedLayout layout = PackedLayout::Q4;
  PackedCodebook codebook = PackedCodebook::Lut;
  int64_t out = 0, in = 0, groupSize = 1;
  std::vector<uint8_t> codes;
  std::vector<float> lut;      // q4: 16 values
  std::vector<float> scales;   // [out, groups]
  std::vector<float> zeros;    // [out, groups], or empty: no zero points
  std::vector<int32_t> perm;   // [in], or empty: identity
  int64_t groups() const { return (in + groupSize - 1) / groupSize; }
};

struct TensorRef {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::string file;     // empty when inlineData is used
  int64_t offset = 0;
  int64_t nbytes = 0;
  std::vector<float> inlineData;
  bool hasInline = false;
  // Synthetic weights (benchmarks of shapes no checkpoint can be downloaded for): normal(0, std)
  // from a counter-based hash of (seed, index), the same on every engine.
  bool random = false;
  uint64_t randomSeed = 0;
  float randomStd = 0.0f;
  // A quantized weight (readTensorF32 dequantises it; the CUDA engine keeps it packed). Shared: cheap to copy.
  std::shared_ptr<const PackedWeight> packed;

  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

enum class RopeType { Default, Linear, Llama3, Yarn, Dynamic, LongRope };

struct ModelConfig {
  std::string arch;
  int hidden = 0, intermediate = 0, layers = 0, heads = 0, kvHeads = 0, headDim = 0, vocab = 0;
  float rmsNormEps = 1e-6f;
  double ropeTheta = 10000.0;
  RopeType ropeType = RopeType::Default;
  double ropeFactor = 1.0, ropeLowFreqFactor = 1.0, ropeHighFreqFactor = 4.0;
  int ropeOriginalMaxPositions = 8192;
  std::vector<int> slidingWindow;  // per layer, 0 = full attention
  bool attentionBias = false;
  bool tieWordEmbeddings = false;
  // Family features (issue 18); the defaults are the Llama behaviour.
  bool qkNorm = false;        // per-head RMSNorm of q and k before RoPE (Qwen3, Gemma 3)
  bool gemmaNorm = false;     // every RMSNorm multiplies by (1 + w)
  bool sandwichNorm = false;  // Gemma: norm on the attention output, pre/post feed-forward norms
  float embedScale = 1.0f;
  bool geluTanh = false;      // MLP gate activation: gelu (tanh form) instead of silu
  float attnScale = 0.0f;     // 0: headDim^-0.5
  float attnSoftcap = 0.0f, finalSoftcap = 0.0f;  // 0: off
  double ropeLocalTheta = 0;  // > 0: sliding-window layers use a plain RoPE of this base (Gemma 3)
  double ropeAttentionFactor = 1.0;  // yarn / longrope: factor on cos and sin
  double ropeBetaFast = 32, ropeBetaSlow = 1;
  bool ropeTruncate = true;
  std::vector<float> ropeShortFactor, ropeLongFactor;  // longrope, headDim / 2 each
  // Mixture of experts (Qwen3-MoE, Mixtral, Qwen2-MoE): layers with moeLayer[l] route each token to
  // expertsPerToken of numExperts MLPs of width moeIntermediate (softmax, top-k, optionally renormalised).
  int numExperts = 0, expertsPerToken = 0, moeIntermediate = 0;
  bool normTopkProb = false;
  std::vector<uint8_t> moeLayer;
  // Qwen2-MoE: > 0: every MoE layer also runs a shared expert MLP of this width, scaled by
  // sigmoid(shared_expert_gate . h), added to the routed experts' sum.
  int sharedExpertIntermediate = 0;
};

// Everything an engine is opened with (addon.cc parses it from NativeEngineOptions, engine.ts
// fills the defaults, environment variables included): nothing is read from the environment later.
struct EngineOptions {
  int numBlocks = 0;
  int blockSize = 16;
  int maxAdapters = 8;
  int threads = 0;                     // CPU engine: worker threads, 0 = hardware threads
  std::string dtype = "bfloat16";      // CUDA engine: float32 | float16 | bfloat16
  bool cudaGraphs = true;              // CUDA engine: decode steps replay captured CUDA graphs
  bool prefillAttention = true;        // CUDA engine: prompt chunks attend on tensor cores
  int quantGemvRows = 64;              // CUDA engine: steps of up to this many rows take the quantized GEMV (0..256)
};

// The seven projections a LoRA adapter may target in each layer, in a fixed order used for indexing,
// then the two model-level modules (LoraModuleSpec.layer -1): the token embeddings (PEFT's Embedding
// LoRA: row t gains scale * B A[:, t], times embedScale) and the output head (logits += scale * B A h),
// then a MoE layer's fused expert weights (PEFT target_parameters): numExperts LoRAs of one rank,
// stacked as PEFT's ParamWrapper stores them (A [E*r, in]: expert e's rows e*r..; B [out, r*E]:
// expert e's column k at k*E + e), expert e's weight gaining scale * B_e A_e. In a MoE layer with a
// shared expert, kGate/kUp/kDown are the shared expert's projections.
enum Proj { kQ = 0, kK, kV, kO, kGate, kUp, kDown, kNumProj, kEmbedTokens = kNumProj, kLmHead, kExpertGateUp, kExpertDown, kNumModules };
const char* projName(int p);
int projFromName(const std::string& name);  // -1 when unknown
inline bool modelLevel(int proj) { return proj == kEmbedTokens || proj == kLmHead; }
inline bool expertLevel(int proj) { return proj == kExpertGateUp || proj == kExpertDown; }

// Input and output features of projection `proj` in `c` (what its LoRA A and B must fit).
inline void projDims(const ModelConfig& c, int proj, int& in, int& out) {
  const int H = c.hidden, I = c.intermediate, Q = c.heads * c.headDim, KV = c.kvHeads * c.headDim;
  switch (proj) {
    case kQ: in = H; out = Q; break;
    case kK: case kV: in = H; out = KV; break;
    case kO: in = Q; out = H; break;
    case kGate: case kUp: in = H; out = I; break;
    case kEmbedTokens: in = c.vocab; out = H; break;  // lora_embedding_A [r, vocab], lora_embedding_B [hidden, r]
    case kLmHead: in = H; out = c.vocab; break;
    case kExpertGateUp: in = H; out = 2 * c.moeIntermediate; break;  // one expert's
    case kExpertDown: in = c.moeIntermediate; out = H; break;
    default: in = I; out = H; break;
  }
}

// projDims in layer `layer`: a MoE layer's gate/up/down are its shared expert's (Qwen2-MoE).
inline void projDimsAt(const ModelConfig& c, int layer, int proj, int& in, int& out) {
  projDims(c, proj, in, out);
  const bool shared = layer >= 0 && layer < int(c.moeLayer.size()) && c.moeLayer[layer] && c.sharedExpertIntermediate > 0;
  if (!shared) return;
  if (proj == kGate || proj == kUp) out = c.sharedExpertIntermediate;
  if (proj == kDown) in = c.sharedExpertIntermediate;
}

struct LoraModuleSpec {
  int layer = 0;  // -1 for the model-level modules (kEmbedTokens, kLmHead)
  int proj = 0;
  int rank = 0;
  float scale = 1.0f;
  TensorRef a;  // [rank, in]
  TensorRef b;  // [out, rank]
};

struct SamplingParams {
  float temperature = 0.0f;
  int topK = 0;
  float topP = 1.0f;
  float typicalP = 1.0f;
  float repetitionPenalty = 1.0f;
  uint64_t seed = 0;
};

struct SeqInput {
  std::vector<int32_t> tokens;
  int position = 0;
  std::vector<int32_t> blockTable;
  int adapterSlot = -1;
  bool promptLogprobs = false;
  int nextToken = -1;
  bool sample = false;
  int topLogprobs = 0;
  SamplingParams sampling;
  std::vector<int32_t> penaltyTokens;
  // Added to the logits before temperature (after the repetition penalty): OpenAI's logit_bias
  // and its frequency/presence penalties, computed by the caller. Distinct tokens.
  std::vector<int32_t> biasTokens;
  std::vector<float> biasValues;
  std::vector<uint32_t> mask;  // empty = unconstrained
};

struct TopLogprobs {
  std::vector<int32_t> ids;
  std::vector<float> logprobs;
};

struct SeqOutput {
  int token = -1;
  float logprob = 0.0f;
  bool hasTop = false;
  TopLogprobs top;
  bool hasPromptLogprobs = false;
  std::vector<float> promptLogprobs;
  std::vector<TopLogprobs> promptTop;
};

struct EngineInfo {
  std::string device;
  std::string deviceName;
  int numBlocks = 0, blockSize = 0, maxAdapters = 0;
  int64_t weightBytes = 0;
  int64_t graphSteps = 0;  // decode steps replayed from CUDA graphs
  double lastStepDeviceMs = 0;  // GPU time of the last step (CUDA engine; 0 on the CPU engine)
};

// Errors the caller caused (bad batch, bad slot): reported as JS errors, never a crash.
struct EngineError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Engine {
 public:
  virtual ~Engine() = default;
  // Reads and converts every weight; slow, runs off the JS thread.
  virtual void load() = 0;
  virtual EngineInfo info() const = 0;
  // Reads the adapter's tensors and then swaps them into `slot`; a running step is not blocked
  // by the read, only by the final swap.
  virtual void loadAdapter(int slot, const std::vector<LoraModuleSpec>& modules) = 0;
  virtual void unloadAdapter(int slot) = 0;
  virtual std::vector<SeqOutput> step(const std::vector<SeqInput>& batch) = 0;
};

std::unique_ptr<Engine> makeCpuEngine(ModelConfig config, std::vector<TensorRef> tensors,
                                      EngineOptions options);

// Why the CUDA engine cannot serve this model ("" when it can): checked when a CUDA engine is made,
// and exported by both addons (cudaUnsupported) so the refusal can be tested without a GPU.
std::string cudaUnsupported(const ModelConfig& config);

// Only in the CUDA addon (switchboard_cuda.node).
std::unique_ptr<Engine> makeCudaEngine(ModelConfig config, std::vector<TensorRef> tensors, EngineOptions options);
int cudaDevices();
// Free and total bytes of the current device (false when CUDA cannot say), for sizing the KV cache.
bool cudaMemory(size_t& freeBytes, size_t& totalBytes);

// Validation shared by every engine: the batch must fit the model, the cache and the slots.
void validateBatch(const std::vector<SeqInput>& batch, const ModelConfig& config,
                   const EngineOptions& options, const std::vector<bool>& slotLoaded);

}  // namespace sb
