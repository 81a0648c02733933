// One model's CPU engine suite against its transformers + PEFT reference (hf-reference.ts): load
// the model and every adapter, match every case one at a time (prompt logprobs within 1e-3, top-5
// and greedy tokens identical), then all cases as ONE mixed-adapter batch, which must not change
// a single number. Shared by the suites of the original fixtures and of the issue 18 families.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Engine } from '../../native/engine.ts';
import { BLOCK_SIZE, FIXTURES, blocksPerCase, loadAdapters, loadReference, maxAbsDiff, runCases, type Reference, type Result } from './hf-reference.ts';

const TOL = 1e-3;

export interface SuiteOptions {
  /** Engine adapter slots. */
  maxAdapters: number;
  /** Adapters the fixture must have loaded at least. */
  minAdapters: number;
  /** Adapters of the fixture the engine refuses at load (their cases are left out): name -> expected error. */
  refusedAdapters?: Readonly<Record<string, RegExp>>;
  /** Another reference for this model's fixture (default: reference/<model>.json). */
  reference?: () => Reference;
  /** What the suite's title adds, for a reference other than the default. */
  label?: string;
}

export function engineVsHfSuite(model: string, { maxAdapters, minAdapters, refusedAdapters = {}, reference, label }: SuiteOptions): void {
  describe(`${model}${label ? ` (${label})` : ''}: CPU engine vs transformers + PEFT`, () => {
    const full = reference ? reference() : loadReference(model);
    const ref = { ...full, cases: full.cases.filter((c) => c.adapter === null || !(c.adapter in refusedAdapters)) };
    let engine: Engine;
    let slots: Map<string, number>;
    const oneByOne: Result[] = [];

    it('loads the model and every PEFT adapter', async () => {
      engine = await Engine.open(join(FIXTURES, 'models', model), { device: 'cpu', numBlocks: ref.cases.length * blocksPerCase(ref), blockSize: BLOCK_SIZE, maxAdapters });
      slots = await loadAdapters(engine, model, ref);
      assert.ok(slots.size >= minAdapters);
      for (const a of new Set(full.cases.map((c) => c.adapter))) {
        if (a === null || !(a in refusedAdapters)) continue;
        await assert.rejects(engine.loadAdapterDir(slots.size, join(FIXTURES, 'adapters', model, a)), refusedAdapters[a]!);
      }
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
