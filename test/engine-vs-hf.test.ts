// The CPU engine against Hugging Face transformers + PEFT (references made by
// scripts/make-fixtures.py): every model x adapter x prompt, prompt logprobs within 1e-3, top-5
// next tokens and 16 greedy tokens identical, run one by one and as ONE mixed batch, which must
// not change a single number. (test/gpu/cuda-engine.test.ts holds the CUDA engine to the same.)
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Engine } from '../native/engine.ts';
import { BLOCK_SIZE, FIXTURES, blocksPerCase, loadAdapters, loadReference, maxAbsDiff, runCases, type Result } from './helpers/hf-reference.ts';

const TOL = 1e-3;

for (const model of ['llama', 'mistral', 'qwen2']) {
  describe(`${model}: CPU engine vs transformers + PEFT`, () => {
    const ref = loadReference(model);
    let engine: Engine;
    let slots: Map<string, number>;
    const oneByOne: Result[] = [];

    it('loads the model and every PEFT adapter', async () => {
      engine = await Engine.open(join(FIXTURES, 'models', model), { device: 'cpu', numBlocks: ref.cases.length * blocksPerCase(ref), blockSize: BLOCK_SIZE, maxAdapters: 16 });
      slots = await loadAdapters(engine, model, ref);
      assert.ok(slots.size >= 4);
    });

    it('matches every case, one at a time', async () => {
      let worst = 0;
      for (const c of ref.cases) {
        const [r] = await runCases(engine, ref, slots, [c]);
        oneByOne.push(r!);
        const where = `adapter ${c.adapter ?? 'none'}, prompt ${c.prompt}`;
        const d = maxAbsDiff(r!.promptLogprobs, c.prompt_logprobs);
        worst = Math.max(worst, d, maxAbsDiff(r!.top5Logprobs, c.top5.logprobs), maxAbsDiff(r!.greedyLogprobs, c.greedy.logprobs));
        assert.ok(d < TOL, `${where}: prompt logprobs differ by ${d}`);
        assert.deepEqual(r!.top5, c.top5.ids, `${where}: top-5 next tokens`);
        assert.deepEqual(r!.greedy, c.greedy.ids, `${where}: greedy tokens`);
      }
      assert.ok(worst < TOL, `worst logprob difference ${worst}`);
      console.log(`  ${model}: ${ref.cases.length} cases, worst |logprob - HF| = ${worst.toExponential(2)}`);
    });

    it('gives bit-identical results when every case shares one mixed-adapter batch', async () => {
      const mixed = await runCases(engine, ref, slots, ref.cases);
      assert.equal(mixed.length, oneByOne.length);
      mixed.forEach((r, i) => assert.deepEqual(r, oneByOne[i], `case ${i} changed in the mixed batch`));
      engine.close();
    });
  });
}
