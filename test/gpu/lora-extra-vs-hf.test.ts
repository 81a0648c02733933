// The CUDA engine against transformers + PEFT for adapters with LoRA on lm_head and embed_tokens
// (issue 17; references by scripts/make-lora-extra-fixtures.py): llama and gemma2
// (tied head, scaled embeddings, final soft-capping), each case alone, then all cases and the base model
// as ONE mixed batch (decode steps replayed from CUDA graphs). float32 is held to the CPU engine's
// bounds; bfloat16 to cuda-engine.test.ts's. Skipped where no CUDA device works.
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Engine, cudaUnavailableReason, loadCudaAddon } from '../../native/engine.ts';
import { BLOCK_SIZE, FIXTURES, blocksPerCase } from '../helpers/hf-reference.ts';
import { checkCudaAgainstReference } from '../helpers/cuda-vs-hf.ts';
import { LORA_EXTRA_MODELS, loadLoraExtraReference } from '../helpers/lora-extra-reference.ts';

const cuda = loadCudaAddon();
const skip = cuda ? false : `no CUDA engine here: ${cudaUnavailableReason()}`;

for (const dtype of ['float32', 'auto'] as const) {
  for (const model of LORA_EXTRA_MODELS) {
    describe(`${model} (LoRA on lm_head / embed_tokens): CUDA engine (${dtype}) vs transformers + PEFT`, { skip }, () => {
      const tol = dtype === 'float32' ? 1e-3 : 0.25;
      it('matches every case, alone and in one mixed batch', async () => {
        const ref = loadLoraExtraReference(model);
        const engine = await Engine.open(join(FIXTURES, 'models', model), {
          device: 'cuda', dtype, numBlocks: ref.cases.length * blocksPerCase(ref), blockSize: BLOCK_SIZE, maxAdapters: 4,
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
