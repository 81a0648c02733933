// The CUDA engine on quantized bases (dequantised at load, test/fixtures/models-quant) against transformers
// + PEFT on the same dequantised weights, on the GPU machine (skipped where no CUDA device works). float32
// is held to the CPU engine's bounds; the checkpoint's 16-bit type to the bound cuda-engine.test.ts uses
// for llama, greedy tokens compared wherever the reference's margin is not a near tie.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Engine, cudaUnavailableReason, loadCudaAddon } from '../../native/engine.ts';
import { openModelDir } from '../../native/model-dir.ts';
import { BLOCK_SIZE, FIXTURES, blocksPerCase, loadAdapters, maxAbsDiff, runCases, type Case, type Reference } from '../helpers/hf-reference.ts';

const cuda = loadCudaAddon();
const skip = cuda ? false : `no CUDA engine here: ${cudaUnavailableReason()}`;
const QUANT = join(FIXTURES, 'models-quant');
const reference = JSON.parse(readFileSync(join(QUANT, 'reference.json'), 'utf-8')) as {
  prompts: Reference['prompts'];
  variants: Record<string, { dir: string | null; quantize: string | null; cases: Case[] }>;
};

for (const dtype of ['float32', 'auto'] as const) {
  for (const [name, variant] of Object.entries(reference.variants)) {
    describe(`quantized llama (${name}): CUDA engine (${dtype}) vs transformers + PEFT`, { skip }, () => {
      const ref: Reference = { prompts: reference.prompts, cases: variant.cases };
      const tol = dtype === 'float32' ? 1e-3 : 0.25;
      it('matches every case', async () => {
        const model = await openModelDir(variant.dir !== null ? join(QUANT, variant.dir) : join(FIXTURES, 'models', 'llama'), { quantize: variant.quantize ?? undefined });
        const engine = await Engine.open(model, { device: 'cuda', dtype, numBlocks: ref.cases.length * blocksPerCase(ref), blockSize: BLOCK_SIZE, maxAdapters: 4 });
        try {
          const slots = await loadAdapters(engine, 'llama', ref);
          const results = await runCases(engine, ref, slots, ref.cases);
          let worst = 0;
          results.forEach((r, i) => {
            const c = ref.cases[i]!;
            const where = `${name}, adapter ${c.adapter ?? 'none'}, prompt ${c.prompt}`;
            const d = maxAbsDiff(r.promptLogprobs, c.prompt_logprobs);
            worst = Math.max(worst, d);
            assert.ok(d < tol, `${where}: prompt logprobs differ by ${d}`);
            if (dtype === 'float32' || c.greedy.min_margin > 4 * tol) assert.deepEqual(r.greedy, c.greedy.ids, `${where}: greedy tokens`);
          });
          console.log(`  ${name} ${dtype}: ${results.length} cases, worst |logprob - HF| = ${worst.toExponential(2)}`);
        } finally {
          engine.close();
        }
      });
    });
  }
}
