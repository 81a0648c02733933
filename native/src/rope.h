// Rotary position embeddings as Hugging Face computes them: inverse frequencies (with linear or
// llama3 scaling) in fp32, angle = position * inv_freq in fp32, rotate-half layout.
#pragma once

#include <cmath>
#include <vector>

#include "engine.h"

namespace sb {

inline std::vector<float> ropeInvFreq(const ModelConfig& c) {
  const int half = c.headDim / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; i++) {
    const float expo = static_cast<float>(2 * i) / static_cast<float>(c.headDim);
    inv[i] = 1.0f / std::pow(static_cast<float>(c.ropeTheta), expo);
  }
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
  }
  return inv;
}

// Rotates one head vector x[0..dim) in place for `position`.
inline void applyRope(float* x, int dim, int position, const std::vector<float>& invFreq) {
  const int half = dim / 2;
  for (int i = 0; i < half; i++) {
    const float angle = static_cast<float>(position) * invFreq[i];
    const float c = std::cos(angle), s = std::sin(angle);
    const float a = x[i], b = x[i + half];
    x[i] = a * c - b * s;
    x[i + half] = b * c + a * s;
  }
}

}  // namespace sb
