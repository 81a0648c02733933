// Host launchers of the sampling family (logit rows to tokens, logprobs and alternatives), declared
// in launch.h, beside their kernels in sampling.cuh: each picks a grid, dispatches on the element
// type and returns its launch error.
#include "sampling.cuh"

namespace sb::kern {

int finishRows(const float* logits, int rows, int vocab, const RowFinish* params, const uint32_t* masks,
               const int32_t* penaltyTokens, float* work, int32_t* results, int resultStride, Stream s) {
  if (rows == 0) return 0;
  finishRowsKernel<<<rows, FINISH_THREADS, 0, s>>>(logits, vocab, params, masks, penaltyTokens, work, results, resultStride);
  return launched();
}

}  // namespace sb::kern
