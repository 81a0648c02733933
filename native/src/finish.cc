// See finish.h.
#include "finish.h"

#include "sampler.h"

namespace sb {

ScoredRows scoredRows(const SeqInput& in) {
  const int n = static_cast<int>(in.tokens.size());
  ScoredRows r;
  r.first = in.promptLogprobs ? 0 : n - 1;
  r.end = in.promptLogprobs || in.nextToken >= 0 ? (in.nextToken >= 0 ? n : n - 1) : r.first;
  return r;
}

std::vector<int> logitRowsOf(const std::vector<SeqInput>& batch, const std::vector<int>& rowStart) {
  std::vector<int> rows;
  for (size_t s = 0; s < batch.size(); s++) {
    const SeqInput& in = batch[s];
    if (in.promptLogprobs)
      for (int r = rowStart[s]; r < rowStart[s + 1] - 1; r++) rows.push_back(r);
    if (in.sample || in.nextToken >= 0) rows.push_back(rowStart[s + 1] - 1);
  }
  return rows;
}

void finishOnHost(const SeqInput& in, int vocab, const std::function<const float*(int)>& rowLogits, SeqOutput& out) {
  const int n = static_cast<int>(in.tokens.size());
  std::vector<float> lp;
  const ScoredRows sr = scoredRows(in);
  out.hasPromptLogprobs = in.promptLogprobs || in.nextToken >= 0;
  for (int j = sr.first; j < sr.end; j++) {
    logSoftmax(rowLogits(j), vocab, lp);
    out.promptLogprobs.push_back(lp[scoredTarget(in, j)]);
    if (in.topLogprobs > 0) out.promptTop.push_back(topK(lp, in.topLogprobs));
  }
  if (!in.sample) return;
  const float* row = rowLogits(n - 1);
  logSoftmax(row, vocab, lp);
  // The sampler edits its row (mask, penalty, warpers): a copy, so the caller's logits stay.
  std::vector<float> work(row, row + vocab);
  out.token = sampleToken(work.data(), vocab, in.sampling, in.mask, in.penaltyTokens, uint64_t(in.position) + uint64_t(n), in.biasTokens, in.biasValues);
  out.logprob = lp[out.token];
  if (in.topLogprobs > 0) {
    out.hasTop = true;
    out.top = topK(lp, in.topLogprobs);
  }
}

}  // namespace sb
