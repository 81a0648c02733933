// Rotary embeddings in the rotate-half layout (transformers' apply_rotary_pos_emb): cos/sin in
// fp32 (times the rope type's attention factor: yarn, longrope) cast to T, then q*cos +
// rotate_half(q)*sin with T rounding at each op. Frequencies may differ per row (dynamic NTK and
// longrope follow each sequence's length): row r then uses invFreq row freqRow[r].
#pragma once

#include "common.cuh"

namespace sb::kern {

template <typename T>
__global__ void ropeKernel(T* __restrict__ q, int ldq, T* __restrict__ k, int ldk, const int32_t* __restrict__ positions,
                           const float* __restrict__ invFreq, const int32_t* __restrict__ freqRow, float attnFactor, int heads,
                           int kvHeads, int dim) {
  const int64_t row = blockIdx.x;
  const int half = dim / 2;
  if (freqRow) invFreq += static_cast<int64_t>(freqRow[row]) * half;
  const float pos = static_cast<float>(positions[row]);
  const int total = (heads + kvHeads) * half;
  for (int idx = threadIdx.x; idx < total; idx += blockDim.x) {
    const int h = idx / half, i = idx % half;
    T* v = h < heads ? q + row * ldq + h * dim : k + row * ldk + (h - heads) * dim;
    float sn, cs;
    sincosf(pos * invFreq[i], &sn, &cs);
    const float c = roundT<T>(cs * attnFactor), s = roundT<T>(sn * attnFactor);
    const float a = toF(v[i]), b = toF(v[i + half]);
    v[i] = fromF<T>(roundT<T>(a * c) + roundT<T>(-b * s));
    v[i + half] = fromF<T>(roundT<T>(b * c) + roundT<T>(a * s));
  }
}

}  // namespace sb::kern
