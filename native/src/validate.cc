// Checks a batch against the model, the KV cache and the adapter slots before any kernel runs,
// so a caller's mistake is an error message and never an out-of-bounds write.
#include <algorithm>
#include <cmath>
#include <vector>
#include <string>

#include "engine.h"

namespace sb {

const char* projName(int p) {
  static const char* names[kNumModules] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                           "gate_proj", "up_proj", "down_proj", "embed_tokens", "lm_head",
                                           "experts.gate_up_proj", "experts.down_proj"};
  return p >= 0 && p < kNumModules ? names[p] : "?";
}

int projFromName(const std::string& name) {
  for (int p = 0; p < kNumModules; p++)
    if (name == projName(p)) return p;
  return -1;
}

void validateBatch(const std::vector<SeqInput>& batch, const ModelConfig& c,
                   const EngineOptions& o, const std::vector<bool>& slotLoaded) {
  for (size_t i = 0; i < batch.size(); i++) {
    const SeqInput& s = batch[i];
    const std::string at = "batch[" + std::to_string(i) + "]: ";
    if (s.tokens.empty()) throw EngineError(at + "no tokens");
    for (int32_t t : s.tokens)
      if (t < 0 || t >= c.vocab)
        throw EngineError(at + "token " + std::to_string(t) + " is outside the vocabulary (0.." +
                          std::to_string(c.vocab - 1) + ")");
    if (s.position < 0) throw EngineError(at + "negative position");
    const int64_t end = static_cast<int64_t>(s.position) + static_cast<int64_t>(s.tokens.size());
    const int64_t blocksNeeded = (end + o.blockSize - 1) / o.blockSize;
    if (static_cast<int64_t>(s.blockTable.size()) < blocksNeeded)
      throw EngineError(at + "block table has " + std::to_string(s.blockTable.size()) +
                        " blocks, positions up to " + std::to_string(end) + " need " +
                        std::to_string(blocksNeeded));
    for (int32_t b : s.blockTable)
      if (b < 0 || b >= o.numBlocks)
        throw EngineError(at + "KV block " + std::to_string(b) + " does not exist (0.." +
                          std::to_string(o.numBlocks - 1) + ")");
    if (s.adapterSlot != -1) {
      if (s.adapterSlot < 0 || s.adapterSlot >= o.maxAdapters)
        throw EngineError(at + "adapter slot " + std::to_string(s.adapterSlot) + " out of range");
      if (!slotLoaded[s.adapterSlot])
        throw EngineError(at + "adapter slot " + std::to_string(s.adapterSlot) + " is empty");
    }
    if (s.nextToken < -1 || s.nextToken >= c.vocab)
      throw EngineError(at + "nextToken outside the vocabulary");
    if (s.topLogprobs < 0 || s.topLogprobs > c.vocab) throw EngineError(at + "bad topLogprobs");
    const SamplingParams& p = s.sampling;
    if (!(p.temperature >= 0) || !std::isfinite(p.temperature))
      throw EngineError(at + "temperature must be >= 0");
    if (p.topK < 0) throw EngineError(at + "topK must be >= 0");
    if (!(p.topP > 0 && p.topP <= 1)) throw EngineError(at + "topP must be in (0, 1]");
    if (!(p.typicalP > 0 && p.typicalP <= 1)) throw EngineError(at + "typicalP must be in (0, 1]");
    if (!(p.repetitionPenalty > 0) || !std::isfinite(p.repetitionPenalty))
      throw EngineError(at + "repetitionPenalty must be > 0");
    if (s.biasTokens.size() != s.biasValues.size()) throw EngineError(at + "bias needs one value per token");
    if (!s.biasTokens.empty()) {
      std::vector<int32_t> ids(s.biasTokens);
      std::sort(ids.begin(), ids.end());
      if (ids.front() < 0 || ids.back() >= c.vocab) throw EngineError(at + "bias token outside the vocabulary");
      if (std::adjacent_find(ids.begin(), ids.end()) != ids.end()) throw EngineError(at + "bias lists a token twice");
      for (float v : s.biasValues)
        if (!std::isfinite(v)) throw EngineError(at + "bias values must be finite");
    }
    if (!s.mask.empty() && s.mask.size() != static_cast<size_t>((c.vocab + 31) / 32))
      throw EngineError(at + "mask must have " + std::to_string((c.vocab + 31) / 32) + " words");
  }
}

}  // namespace sb
