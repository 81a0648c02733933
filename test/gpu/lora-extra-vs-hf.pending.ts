// The CUDA engine against transformers + PEFT for adapters with LoRA on lm_head and embed_tokens
// (issue 17; references by scripts/make-lora-extra-fixtures.py, run on the GPU machine): llama and gemma2
// (tied head, scaled embeddings, final soft-capping), each case alone, then all cases and the base model
// as ONE mixed batch (decode steps replayed from CUDA graphs). float32 is held to the CPU engine's
// bounds; bfloat16 to cuda-engine.test.ts's. Skipped where no CUDA device works. Opened with
// unverifiedModelLora: once this and gpu/lora-extra.test.ts pass on a GPU, remove that gate
// (peft-adapter.ts modelLoraRefusal) so the server serves these adapters on CUDA too.
// NOT YET RUN: the fixtures do not exist yet (no GPU machine could be started in the session that wrote
// this). To enable, on the GPU machine (python3 with torch, transformers 5.x, peft; addons rebuilt), from the
// repository root: `python3 scripts/make-lora-extra-fixtures.py` (writes test/fixtures/reference/
// {llama,gemma2}-lora-extra.json and test/fixtures/adapters/{llama/lora-qv-head, llama/lora-embed-head-mlp,
// gemma2/lora-embed-head-qv}, ~200 KB), commit those files, then `git mv test/engine-lora-extra-vs-hf.pending.ts
// test/engine-lora-extra-vs-hf.test.ts` and `git mv test/gpu/lora-extra-vs-hf.pending.ts
// test/gpu/lora-extra-vs-hf.test.ts`. Missing fixtures then fail them, naming the script.
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
          device: 'cuda', dtype, unverifiedModelLora: true, numBlocks: ref.cases.length * blocksPerCase(ref), blockSize: BLOCK_SIZE, maxAdapters: 4,
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
