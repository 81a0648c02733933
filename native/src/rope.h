// Rotary position embeddings as Hugging Face computes them: inverse frequencies (default, linear,
// llama3, yarn, dynamic NTK, longrope) in fp32, angle = position * inv_freq in fp32, rotate-half
// layout, cos and sin times the rope type's attention factor (yarn, longrope).
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine.h"

namespace sb {

// 1 / base^(2i/dim) in fp32, as torch computes base ** (arange(0, dim, 2).float() / dim).
inline std::vector<float> plainInvFreq(float base, int dim) {
  std::vector<float> inv(dim / 2);
  for (int i = 0; i < dim / 2; i++) inv[i] = 1.0f / std::pow(base, static_cast<float>(2 * i) / static_cast<float>(dim));
  return inv;
}

// The frequencies of a sequence that is `seqLen` tokens long once this step's tokens are in; only
// dynamic NTK and longrope depend on it (transformers picks by max(position_ids) + 1 each forward).
inline std::vector<float> ropeInvFreq(const ModelConfig& c, int64_t seqLen = 0) {
  const int dim = c.headDim, half = dim / 2;
  std::vector<float> inv = plainInvFreq(static_cast<float>(c.ropeTheta), dim);
  if (c.ropeType == RopeType::Linear) {
    for (auto& f : inv) f = f / static_cast<float>(c.ropeFactor);
  } else if (c.ropeType == RopeType::Llama3) {
    // Llama 3.1: long wavelengths are divided by the factor, short ones kept, and the band
    // between the two cut-offs blends the two smoothly.
    const double factor = c.ropeFactor, lowF = c.ropeLowFreqFactor, highF = c.ropeHighFreqFactor;
    const double oldLen = c.ropeOriginalMaxPositions;
    const double lowWavelen = oldLen / lowF, highWavelen = oldLen / highF;
    for (auto& f : inv) {
      const double wavelen = 2.0 * M_PI / f;
      float scaled = wavelen > lowWavelen ? static_cast<float>(f / factor) : f;
      if (!(wavelen < highWavelen) && !(wavelen > lowWavelen)) {
        const double smooth = (oldLen / wavelen - lowF) / (highF - lowF);
        scaled = static_cast<float>((1 - smooth) * scaled / factor + smooth * scaled);
      }
      f = scaled;
    }
  } else if (c.ropeType == RopeType::Yarn) {
    // YaRN: interpolate (divide by the factor) the low frequencies, keep the high ones, with a
    // linear ramp between the dimensions that turn beta_fast and beta_slow times over the
    // original context.
    const double base = c.ropeTheta, orig = c.ropeOriginalMaxPositions;
    auto corrDim = [&](double rotations) { return dim * std::log(orig / (rotations * 2 * M_PI)) / (2 * std::log(base)); };
    double low = corrDim(c.ropeBetaFast), high = corrDim(c.ropeBetaSlow);
    if (c.ropeTruncate) low = std::floor(low), high = std::ceil(high);
    low = std::max(low, 0.0);
    high = std::min(high, static_cast<double>(dim - 1));
    if (low == high) high += 0.001;
    const float factor = static_cast<float>(c.ropeFactor), lo = static_cast<float>(low), span = static_cast<float>(high - low);
    for (int i = 0; i < half; i++) {
      const float posFreq = std::pow(static_cast<float>(base), static_cast<float>(2 * i) / static_cast<float>(dim));
      const float extrapolation = 1.0f / posFreq, interpolation = 1.0f / (factor * posFreq);
      const float ramp = std::min(1.0f, std::max(0.0f, (static_cast<float>(i) - lo) / span));
      const float keep = 1.0f - ramp;
      inv[i] = interpolation * (1.0f - keep) + extrapolation * keep;
    }
  } else if (c.ropeType == RopeType::Dynamic) {
    // NTK-aware: past max_position_embeddings the base grows with the length, in fp32 as torch does it.
    if (seqLen > c.ropeOriginalMaxPositions) {
      const float factor = static_cast<float>(c.ropeFactor);
      float t = factor * static_cast<float>(seqLen);
      t = t / static_cast<float>(c.ropeOriginalMaxPositions);
      t = t - static_cast<float>(c.ropeFactor - 1.0);
      const float grown = static_cast<float>(c.ropeTheta) * std::pow(t, static_cast<float>(static_cast<double>(dim) / (dim - 2)));
      inv = plainInvFreq(grown, dim);
    }
  } else if (c.ropeType == RopeType::LongRope) {
    const auto& ext = seqLen > c.ropeOriginalMaxPositions ? c.ropeLongFactor : c.ropeShortFactor;
    for (int i = 0; i < half; i++) {
      const float p = std::pow(static_cast<float>(c.ropeTheta), static_cast<float>(2 * i) / static_cast<float>(dim));
      inv[i] = 1.0f / (ext[i] * p);
    }
  }
  return inv;
}

// Whether the frequencies depend on the sequence length (then ropeInvFreq needs seqLen).
inline bool ropeDependsOnLength(const ModelConfig& c) {
  return c.ropeType == RopeType::Dynamic || c.ropeType == RopeType::LongRope;
}

// Rotates one head vector x[0..dim) in place for `position`; cos and sin are scaled by `scale`.
inline void applyRope(float* x, int dim, int position, const std::vector<float>& invFreq, float scale = 1.0f) {
  const int half = dim / 2;
  for (int i = 0; i < half; i++) {
    const float angle = static_cast<float>(position) * invFreq[i];
    float c = std::cos(angle), s = std::sin(angle);
    if (scale != 1.0f) c *= scale, s *= scale;
    const float a = x[i], b = x[i + half];
    x[i] = a * c - b * s;
    x[i + half] = b * c + a * s;
  }
}

}  // namespace sb
