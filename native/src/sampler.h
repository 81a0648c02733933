// Turns one row of logits into a token, with the same semantics as Hugging Face's logits
// processors (repetition penalty, then temperature, top-k, top-p, typical-p), and computes the
// logprobs users see. Draws depend only on (seed, position), so the batch a sequence shares a
// step with never changes its tokens.
#pragma once

#include <cstdint>
#include <vector>

#include "engine.h"

namespace sb {

// Raw log-softmax of a logits row, in double accumulation for a stable normaliser.
void logSoftmax(const float* logits, int vocab, std::vector<float>& out);

// The k best entries of a logprob row, best first, ties broken by the lower id.
TopLogprobs topK(const std::vector<float>& logprobs, int k);

// Picks the next token. `logits` is modified in place (mask, penalty, warpers).
int sampleToken(float* logits, int vocab, const SamplingParams& p, const std::vector<uint32_t>& mask,
                const std::vector<int32_t>& penaltyTokens, uint64_t position,
                const std::vector<int32_t>& biasTokens = {}, const std::vector<float>& biasValues = {});

}  // namespace sb
