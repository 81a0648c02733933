// The host-side end of a step, shared by both engines: which rows of a batch need logits, and how
// a sequence's logit rows become its SeqOutput (prompt logprobs and their alternatives, the sampled
// token, its logprob and alternatives). The CPU engine finishes every sequence here; the CUDA
// engine finishes on the device (sampling.cuh) and comes here only for what its kernel leaves to
// the host, so the two engines cannot disagree on what a step returns.
#pragma once

#include <functional>
#include <vector>

#include "engine.h"

namespace sb {

// A sequence's rows scored against a target: its token positions [first, end), position j's
// target being token j + 1, or nextToken for the last.
struct ScoredRows {
  int first = 0, end = 0;
};
ScoredRows scoredRows(const SeqInput& in);
inline int scoredTarget(const SeqInput& in, int j) {
  return j + 1 < static_cast<int>(in.tokens.size()) ? in.tokens[j + 1] : in.nextToken;
}

// Batch rows whose logits a step needs, ascending: every scored prompt row, and each sequence's
// last row when it samples or scores nextToken. rowStart[s] is sequence s's first row.
std::vector<int> logitRowsOf(const std::vector<SeqInput>& batch, const std::vector<int>& rowStart);

// Fills `out` for `in` from its logit rows on the host. rowLogits(j) returns the fp32 logits of
// the sequence's j-th token (vocab values), valid until the next call.
void finishOnHost(const SeqInput& in, int vocab, const std::function<const float*(int)>& rowLogits, SeqOutput& out);

}  // namespace sb
