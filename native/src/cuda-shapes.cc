// What the CUDA engine can serve, decided from the model's config alone: a model it cannot run is
// refused when it loads, naming the shape or feature and pointing to the CPU engine, instead of
// loading and then failing every step ("CUDA error in attention: invalid argument"). Compiled into
// both addons, so the CPU build answers the same question for tests and tools.
#include <string>

#include "engine.h"

namespace sb {

namespace {
// kernels/attention.cu instantiates the paged attention for these head dims (SB_ATT) and serves up
// to ATT_MAX_GROUP (kernels/attention.cuh) query heads per kv head: keep the three in step.
const int kHeadDims[] = {16, 32, 64, 80, 96, 128, 256};
const int kMaxGroup = 8;
const char* kUseCpu = "; use --device cpu";
}  // namespace

std::string cudaUnsupported(const ModelConfig& c) {
  bool dimOk = false;
  for (int d : kHeadDims) dimOk |= c.headDim == d;
  if (!dimOk) {
    return "the CUDA engine cannot serve head_dim " + std::to_string(c.headDim) +
           " (its attention kernels take head dims 16, 32, 64, 80, 96, 128 and 256)" + kUseCpu;
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
  // Issue 18's families all run on the CUDA engine; what its kernels bound is the routing of a
  // mixture of experts (kernels/moe.cuh: at most 32 experts per token, 3072 experts).
  if (c.numExperts > 0 && (c.expertsPerToken > 32 || c.numExperts > 3072)) {
    return "the CUDA engine cannot serve " + std::to_string(c.expertsPerToken) + " of " + std::to_string(c.numExperts) +
           " experts per token (at most 32 of 3072)" + kUseCpu;
  }
  return "";
}

}  // namespace sb
