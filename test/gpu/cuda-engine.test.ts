// The CUDA engine against transformers + PEFT, on the GPU machine (skipped where no CUDA device
// works, e.g. CI: there the kernels are compiled but cannot run). In float32 it is held to the
// CPU engine's bounds; in the checkpoints' 16-bit types the logprob bound reached is printed and
// asserted, and greedy tokens must match wherever the reference's own margin is not a near tie.
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Engine, cudaUnavailableReason, loadCudaAddon } from '../../native/engine.ts';
import { BLOCK_SIZE, FIXTURES, blocksPerCase, loadReference } from '../helpers/hf-reference.ts';
import { checkCudaAgainstReference } from '../helpers/cuda-vs-hf.ts';

const cuda = loadCudaAddon();
const skip = cuda ? false : `no CUDA engine here: ${cudaUnavailableReason()}`;

for (const dtype of ['float32', 'auto'] as const) {
  for (const model of ['llama', 'mistral', 'qwen2']) {
    describe(`${model}: CUDA engine (${dtype}) vs transformers + PEFT`, { skip }, () => {
      const ref = loadReference(model);
      // fp32 must agree like the CPU engine. 16-bit types carry bf16/fp16 rounding through 2 layers;
      // an fp32 checkpoint (qwen2) served in bf16 also has its weights rounded, a different model.
      const tol = dtype === 'float32' ? 1e-3 : model === 'qwen2' ? 0.5 : 0.25;
      it('matches every case, alone and in one mixed batch', async () => {
        const engine = await Engine.open(join(FIXTURES, 'models', model), {
          device: 'cuda',
          dtype,
          numBlocks: ref.cases.length * blocksPerCase(ref),
          blockSize: BLOCK_SIZE,
          maxAdapters: 16,
        });
        try {
          await checkCudaAgainstReference(engine, model, ref, dtype, tol);
        } finally {
          engine.close();
        }
      });
    });
  }
}
