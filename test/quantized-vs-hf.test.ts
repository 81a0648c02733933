// Quantized base models on the CPU engine against transformers + PEFT on the same dequantised weights
// (scripts/make-quant-fixtures.py: the llama fixture packed as AWQ, GPTQ 4/8-bit with and without
// act-order, FP8 per-tensor / per-channel / per-block, and quantized at load as bitsandbytes NF4 / FP4 /
// int8 and FP8; the mixtures of experts as published: Mixtral AWQ, Qwen2-MoE GPTQ 4-bit with its shared
// expert, Qwen3-MoE block FP8, routers 16-bit): prompt logprobs within 1e-3, top-5 and 16 greedy tokens
// identical, without an adapter and with PEFT adapters trained on the 16-bit base.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Engine } from '../native/engine.ts';
import { openModelDir } from '../native/model-dir.ts';
import { BLOCK_SIZE, FIXTURES, blocksPerCase, loadAdapters, loadReference, maxAbsDiff, runCases } from './helpers/hf-reference.ts';
import { QUANT, quantVariants } from './helpers/quant-reference.ts';

const TOL = 1e-3;
const variants = quantVariants();
/** Routers stay 16-bit in every published MoE checkpoint: they must not be packed. */
const ROUTER = /\.mlp\.(gate|shared_expert_gate)\.weight$/;

for (const { name, model: base, dir, quantize, ref, layers } of variants) {
  describe(`quantized ${base} (${name}): CPU engine vs transformers + PEFT on the dequantised weights`, () => {
    const base16 = loadReference(base);

    it('matches every case, and differs from the 16-bit model', async () => {
      const model = await openModelDir(dir !== null ? join(QUANT, dir) : join(FIXTURES, 'models', base), { quantize: quantize ?? undefined });
      assert.equal(model.quantization?.layers, layers, `${name}: quantized projections`);
      const routers = model.spec.tensors.filter((t) => ROUTER.test(t.name));
      assert.ok(routers.every((t) => !t.packed), `${name}: routers load 16-bit`);
      const engine = await Engine.open(model, { device: 'cpu', numBlocks: ref.cases.length * blocksPerCase(ref), blockSize: BLOCK_SIZE, maxAdapters: 4 });
      try {
        const slots = await loadAdapters(engine, base, ref);
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
    for (const { name, ref } of variants) {
      for (const c of ref.cases.filter((x) => x.adapter !== null)) {
        const none = ref.cases.find((x) => x.adapter === null && x.prompt === c.prompt)!;
        assert.ok(maxAbsDiff(c.prompt_logprobs, none.prompt_logprobs) > 1e-2, `${name}: adapter ${c.adapter} changes prompt ${c.prompt}`);
      }
    }
  });
});
