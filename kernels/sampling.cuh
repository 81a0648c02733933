// Greedy decoding on the device: per row of fp32 logits, the argmax (lowest id on ties, like
// torch.argmax), log-sum-exp, and the argmax's log-probability. Rows that need sampling, masks,
// penalties or alternatives are finished on the host from the same logits.
#pragma once

#include "common.cuh"

namespace sb::kern {

__global__ void argmaxLogprobKernel(const float* __restrict__ logits, int vocab, int32_t* __restrict__ ids,
                                    float* __restrict__ logprob, float* __restrict__ lse) {
  const int64_t row = blockIdx.x;
  const float* x = logits + row * vocab;
  float best = -INFINITY;
  int bestId = 0x7fffffff;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float v = x[i];
    if (v > best || (v == best && i < bestId)) {
      best = v;
      bestId = i;
    }
  }
  __shared__ float sv[1024];
  __shared__ int si[1024];
  sv[threadIdx.x] = best;
  si[threadIdx.x] = bestId;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      const float ov = sv[threadIdx.x + s];
      const int oi = si[threadIdx.x + s];
      if (ov > sv[threadIdx.x] || (ov == sv[threadIdx.x] && oi < si[threadIdx.x])) {
        sv[threadIdx.x] = ov;
        si[threadIdx.x] = oi;
      }
    }
    __syncthreads();
  }
  const float mx = sv[0];
  const int arg = si[0];
  float sum = 0.0f;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) sum += __expf(x[i] - mx);
  sum = blockSum(sum);
  if (threadIdx.x == 0) {
    const float l = mx + logf(sum);
    ids[row] = arg;
    lse[row] = l;
    logprob[row] = x[arg] - l;
  }
}

}  // namespace sb::kern
