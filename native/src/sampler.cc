#include "sampler.h"

#include "../../kernels/rng.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace sb {

void logSoftmax(const float* logits, int vocab, std::vector<float>& out) {
  out.resize(vocab);
  float mx = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < vocab; i++) mx = std::max(mx, logits[i]);
  double sum = 0.0;
  for (int i = 0; i < vocab; i++) sum += std::exp(static_cast<double>(logits[i]) - mx);
  const double lse = mx + std::log(sum);
  for (int i = 0; i < vocab; i++) out[i] = static_cast<float>(logits[i] - lse);
}

TopLogprobs topK(const std::vector<float>& logprobs, int k) {
  TopLogprobs r;
  const int vocab = static_cast<int>(logprobs.size());
  k = std::min(k, vocab);
  if (k <= 0) return r;
  std::vector<int32_t> idx(vocab);
  std::iota(idx.begin(), idx.end(), 0);
  auto better = [&](int32_t a, int32_t b) {
    return logprobs[a] > logprobs[b] || (logprobs[a] == logprobs[b] && a < b);
  };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), better);
  r.ids.assign(idx.begin(), idx.begin() + k);
  for (int i = 0; i < k; i++) r.logprobs.push_back(logprobs[r.ids[i]]);
  return r;
}

static bool allowed(const std::vector<uint32_t>& mask, int t) {
  return mask.empty() || ((mask[t >> 5] >> (t & 31)) & 1u);
}

int sampleToken(float* logits, int vocab, const SamplingParams& p, const std::vector<uint32_t>& mask,
                const std::vector<int32_t>& penaltyTokens, uint64_t position,
                const std::vector<int32_t>& biasTokens, const std::vector<float>& biasValues) {
  const float ninf = -std::numeric_limits<float>::infinity();
  if (!mask.empty()) {
    for (int t = 0; t < vocab; t++)
      if (!allowed(mask, t)) logits[t] = ninf;
  }
  if (p.repetitionPenalty != 1.0f && !penaltyTokens.empty()) {
    // Each distinct token is penalised once, as in Hugging Face's RepetitionPenaltyLogitsProcessor.
    std::vector<int32_t> seen(penaltyTokens);
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    for (int32_t t : seen) {
      if (t < 0 || t >= vocab) continue;
      float& l = logits[t];
      l = l > 0 ? l / p.repetitionPenalty : l * p.repetitionPenalty;
    }
  }
  // Additive biases (logit_bias, frequency/presence penalties), before temperature as OpenAI's.
  for (size_t j = 0; j < biasTokens.size(); j++) {
    const int32_t t = biasTokens[j];
    if (t >= 0 && t < vocab) logits[t] += biasValues[j];
  }
  if (p.temperature <= 0.0f) {
    int best = -1;
    for (int t = 0; t < vocab; t++)
      if (logits[t] != ninf && (best < 0 || logits[t] > logits[best])) best = t;
    if (best < 0) throw EngineError("the token mask allows no token");
    return best;
  }
  for (int t = 0; t < vocab; t++) logits[t] /= p.temperature;

  // Candidates sorted by logit, best first; warpers shrink the candidate count.
  std::vector<int32_t> order;
  order.reserve(vocab);
  for (int t = 0; t < vocab; t++)
    if (logits[t] != ninf) order.push_back(t);
  if (order.empty()) throw EngineError("the token mask allows no token");
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  size_t keep = order.size();
  if (p.topK > 0 && static_cast<size_t>(p.topK) < keep) {
    // Hugging Face keeps every token whose logit ties the k-th.
    const float kth = logits[order[p.topK - 1]];
    keep = p.topK;
    while (keep < order.size() && logits[order[keep]] >= kth) keep++;
  }
  auto probsOf = [&](size_t n) {
    std::vector<double> pr(n);
    const double mx = logits[order[0]];
    double s = 0;
    for (size_t i = 0; i < n; i++) s += pr[i] = std::exp(logits[order[i]] - mx);
    for (auto& v : pr) v /= s;
    return pr;
  };
  if (p.topP < 1.0f) {
    // Keep the smallest prefix whose mass reaches top_p (at least one token).
    auto pr = probsOf(keep);
    double cum = 0;
    size_t n = 0;
    while (n < keep) {
      cum += pr[n++];
      if (cum >= p.topP) break;
    }
    keep = std::max<size_t>(n, 1);
  }
  if (p.typicalP < 1.0f) {
    // Typical sampling (Meister et al.), as Hugging Face's TypicalLogitsWarper: rank by
    // |surprisal - entropy| and keep the smallest set reaching typical_p.
    auto pr = probsOf(keep);
    double ent = 0;
    for (double v : pr)
      if (v > 0) ent -= v * std::log(v);
    std::vector<size_t> rank(keep);
    std::iota(rank.begin(), rank.end(), 0);
    std::stable_sort(rank.begin(), rank.end(), [&](size_t a, size_t b) {
      double da = std::fabs(-std::log(pr[a]) - ent), db = std::fabs(-std::log(pr[b]) - ent);
      return da < db;
    });
    double cum = 0;
    size_t n = 0;
    while (n < keep) {
      cum += pr[rank[n++]];
      if (cum >= p.typicalP) break;
    }
    std::vector<int32_t> picked;
    for (size_t i = 0; i < std::max<size_t>(n, 1); i++) picked.push_back(order[rank[i]]);
    std::stable_sort(picked.begin(), picked.end(),
                     [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
    std::copy(picked.begin(), picked.end(), order.begin());
    keep = picked.size();
  }
  auto pr = probsOf(keep);
  const double u = uniformFromSeed(p.seed, position);
  double cum = 0;
  for (size_t i = 0; i < keep; i++) {
    cum += pr[i];
    if (u < cum) return order[i];
  }
  return order[keep - 1];
}

}  // namespace sb
