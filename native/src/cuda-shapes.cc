// What the CUDA engine can serve, decided from the model's config alone: a model it cannot run is
// refused when it loads, naming the shape or feature and pointing to the CPU engine, instead of
// loading and then failing every step ("CUDA error in attention: invalid argument"). Compiled into
// both addons, so the CPU build answers the same question for tests and tools.
#include <string>
#include <vector>

#include "engine.h"

namespace sb {

namespace {
// kernels/attention.cu instantiates the paged attention for these head dims (SB_ATT) and serves up
// to ATT_MAX_GROUP (kernels/attention.cuh) query heads per kv head: keep the three in step.
const int kHeadDims[] = {16, 32, 64, 96, 128, 256};
const int kMaxGroup = 8;
const char* kUseCpu = "; use --device cpu";
}  // namespace

std::string cudaUnsupported(const ModelConfig& c) {
  bool dimOk = false;
  for (int d : kHeadDims) dimOk |= c.headDim == d;
  if (!dimOk) {
    return "the CUDA engine cannot serve head_dim " + std::to_string(c.headDim) +
           " (its attention kernels take head dims 16, 32, 64, 96, 128 and 256)" + kUseCpu;
  }
  if (c.kvHeads <= 0 || c.heads % c.kvHeads != 0) {
    return "num_attention_heads " + std::to_string(c.heads) + " is not a multiple of num_key_value_heads " +
           std::to_string(c.kvHeads);
  }
  if (c.heads / c.kvHeads > kMaxGroup) {
    return "the CUDA engine cannot serve " + std::to_string(c.heads / c.kvHeads) +
           " query heads per key/value head (num_attention_heads " + std::to_string(c.heads) +
           ", num_key_value_heads " + std::to_string(c.kvHeads) + "; at most " + std::to_string(kMaxGroup) + ")" + kUseCpu;
  }
  // Family features only the CPU engine computes so far (each is proven against transformers there,
  // none has been run on a GPU yet).
  std::vector<std::string> missing;
  if (c.qkNorm) missing.push_back("q/k norms");
  if (c.gemmaNorm || c.sandwichNorm) missing.push_back("Gemma norms");
  if (c.embedScale != 1.0f) missing.push_back("scaled embeddings");
  if (c.geluTanh) missing.push_back("gelu-tanh MLP");
  if (c.attnScale > 0) missing.push_back("query_pre_attn_scalar");
  if (c.attnSoftcap > 0 || c.finalSoftcap > 0) missing.push_back("logit soft-capping");
  if (c.ropeLocalTheta > 0) missing.push_back("per-layer RoPE bases");
  if (c.ropeType == RopeType::Yarn) missing.push_back("rope type yarn");
  if (c.ropeType == RopeType::Dynamic) missing.push_back("rope type dynamic");
  if (c.ropeType == RopeType::LongRope) missing.push_back("rope type longrope");
  if (c.arch == "phi3") missing.push_back("fused qkv/gate_up checkpoints");
  if (c.numExperts > 0) missing.push_back("mixture of experts");
  if (!missing.empty()) {
    std::string what;
    for (size_t i = 0; i < missing.size(); i++) what += (i ? ", " : "") + missing[i];
    return "the CUDA engine does not serve " + c.arch + " models yet (" + what + ")" + kUseCpu;
  }
  return "";
}

}  // namespace sb
