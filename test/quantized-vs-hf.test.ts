// Quantized base models on the CPU engine against transformers + PEFT on the same dequantised weights
// (scripts/make-quant-fixtures.py: the llama fixture packed as AWQ, GPTQ 4/8-bit with and without
// act-order, FP8 per-tensor / per-channel / per-block, and quantized at load as bitsandbytes NF4 / FP4 /
// int8 and FP8): prompt logprobs within 1e-3, top-5 and 16 greedy tokens identical, without an adapter and
// with PEFT adapters trained on the 16-bit base.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Engine } from '../native/engine.ts';
import { openModelDir } from '../native/model-dir.ts';
import { BLOCK_SIZE, FIXTURES, blocksPerCase, loadAdapters, loadReference, maxAbsDiff, runCases, type Case, type Reference } from './helpers/hf-reference.ts';

const TOL = 1e-3;
const QUANT = join(FIXTURES, 'models-quant');

interface Variant { dir: string | null; quantize: string | null; cases: Case[] }
const reference = JSON.parse(readFileSync(join(QUANT, 'reference.json'), 'utf-8')) as { prompts: Reference['prompts']; variants: Record<string, Variant> };
const base16 = loadReference('llama');

for (const [name, variant] of Object.entries(reference.variants)) {
  describe(`quantized llama (${name}): CPU engine vs transformers + PEFT on the dequantised weights`, () => {
    const ref: Reference = { prompts: reference.prompts, cases: variant.cases };

    it('matches every case, and differs from the 16-bit model', async () => {
      const model = await openModelDir(variant.dir !== null ? join(QUANT, variant.dir) : join(FIXTURES, 'models', 'llama'), { quantize: variant.quantize ?? undefined });
      assert.ok(model.quantization?.layers === 14, `${name}: 14 quantized projections`);
      const engine = await Engine.open(model, { device: 'cpu', numBlocks: ref.cases.length * blocksPerCase(ref), blockSize: BLOCK_SIZE, maxAdapters: 4 });
      try {
        const slots = await loadAdapters(engine, 'llama', ref);
        const results = await runCases(engine, ref, slots, ref.cases);
        let worst = 0;
        let furthestFrom16 = 0;
        results.forEach((r, i) => {
          const c = ref.cases[i]!;
          const where = `${name}, adapter ${c.adapter ?? 'none'}, prompt ${c.prompt}`;
          const d = Math.max(maxAbsDiff(r.promptLogprobs, c.prompt_logprobs), maxAbsDiff(r.top5Logprobs, c.top5.logprobs), maxAbsDiff(r.greedyLogprobs, c.greedy.logprobs));
          worst = Math.max(worst, d);
          assert.ok(d < TOL, `${where}: logprobs differ by ${d}`);
          assert.deepEqual(r.top5, c.top5.ids, `${where}: top-5 next tokens`);
          assert.deepEqual(r.greedy, c.greedy.ids, `${where}: greedy tokens`);
          const c16 = base16.cases.find((b) => b.adapter === c.adapter && b.prompt === c.prompt)!;
          furthestFrom16 = Math.max(furthestFrom16, maxAbsDiff(r.promptLogprobs, c16.prompt_logprobs));
        });
        // Quantization error must show: a loader that silently served the 16-bit weights would fail here.
        assert.ok(furthestFrom16 > 10 * TOL, `${name}: logprobs within ${furthestFrom16} of the 16-bit model`);
        console.log(`  ${name}: ${results.length} cases, worst |logprob - HF| = ${worst.toExponential(2)}, max |quantized - 16-bit| = ${furthestFrom16.toFixed(3)}`);
      } finally {
        engine.close();
      }
    });
  });
}

describe('adapters on a quantized base', () => {
  it('change the outputs by what they change on the dequantised base in transformers', () => {
    // Each adapter case differs from the no-adapter case of the same prompt in the reference: the test above
    // then proves the engine reproduces the adapter's effect on every quantized base.
    for (const [name, v] of Object.entries(reference.variants)) {
      for (const c of v.cases.filter((x) => x.adapter !== null)) {
        const none = v.cases.find((x) => x.adapter === null && x.prompt === c.prompt)!;
        assert.ok(maxAbsDiff(c.prompt_logprobs, none.prompt_logprobs) > 1e-2, `${name}: adapter ${c.adapter} changes prompt ${c.prompt}`);
      }
    }
  });
});
