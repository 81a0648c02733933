// The CPU engine against Hugging Face transformers + PEFT (references made by
// scripts/make-fixtures.py): every model x adapter x prompt, prompt logprobs within 1e-3, top-5
// next tokens and 16 greedy tokens identical, run one by one and as ONE mixed batch, which must
// not change a single number.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Engine, type SeqInput, type SeqOutput } from '../native/engine.ts';

const FIXTURES = join(import.meta.dirname, 'fixtures');
const TOL = 1e-3;
const GREEDY_STEPS = 16;
const BS = 16;

interface Case {
  adapter: string | null;
  prompt: number;
  prompt_logprobs: number[];
  top5: { ids: number[]; logprobs: number[] };
  greedy: { ids: number[]; logprobs: number[] };
}
interface Reference {
  prompts: { text: string; ids: number[] }[];
  cases: Case[];
}

interface Result {
  promptLogprobs: number[];
  top5: number[];
  top5Logprobs: number[];
  greedy: number[];
  greedyLogprobs: number[];
}

/** Runs every case through prefill + greedy decode, `together` in one batch per step or one at a time. */
async function run(engine: Engine, ref: Reference, slots: Map<string, number>, cases: Case[]): Promise<Result[]> {
  const blocksPer = Math.ceil((Math.max(...ref.prompts.map((p) => p.ids.length)) + GREEDY_STEPS) / BS);
  const state = cases.map((c, i) => ({
    c,
    table: Array.from({ length: blocksPer }, (_, b) => i * blocksPer + b),
    pos: 0,
    pending: ref.prompts[c.prompt]!.ids,
    result: { promptLogprobs: [], top5: [], top5Logprobs: [], greedy: [], greedyLogprobs: [] } as Result,
  }));
  for (let step = 0; step < GREEDY_STEPS; step++) {
    const batch: SeqInput[] = state.map((s) => ({
      tokens: s.pending,
      position: s.pos,
      blockTable: s.table,
      adapterSlot: s.c.adapter === null ? -1 : slots.get(s.c.adapter)!,
      promptLogprobs: step === 0,
      topLogprobs: step === 0 ? 5 : 0,
    }));
    const outs: SeqOutput[] = await engine.step(batch);
    state.forEach((s, i) => {
      const o = outs[i]!;
      if (step === 0) {
        s.result.promptLogprobs = Array.from(o.promptLogprobs!);
        s.result.top5 = Array.from(o.top!.ids);
        s.result.top5Logprobs = Array.from(o.top!.logprobs);
      }
      s.result.greedy.push(o.token);
      s.result.greedyLogprobs.push(o.logprob);
      s.pos += s.pending.length;
      s.pending = [o.token];
    });
  }
  return state.map((s) => s.result);
}

function maxAbsDiff(a: number[], b: number[]): number {
  assert.equal(a.length, b.length);
  return a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]!)), 0);
}

for (const model of ['llama', 'mistral', 'qwen2']) {
  describe(`${model}: CPU engine vs transformers + PEFT`, () => {
    const ref = JSON.parse(readFileSync(join(FIXTURES, 'reference', `${model}.json`), 'utf-8')) as Reference;
    const adapters = [...new Set(ref.cases.map((c) => c.adapter).filter((a): a is string => a !== null))];
    let engine: Engine;
    const slots = new Map<string, number>();
    let oneByOne: Result[] = [];

    it('loads the model and every PEFT adapter', async () => {
      const blocksPer = Math.ceil((Math.max(...ref.prompts.map((p) => p.ids.length)) + GREEDY_STEPS) / BS);
      engine = await Engine.open(join(FIXTURES, 'models', model), { numBlocks: ref.cases.length * blocksPer, blockSize: BS, maxAdapters: adapters.length });
      for (const [i, a] of adapters.entries()) {
        await engine.loadAdapterDir(i, join(FIXTURES, 'adapters', model, a));
        slots.set(a, i);
      }
      assert.ok(adapters.length >= 4);
    });

    it('matches every case, one at a time', async () => {
      let worst = 0;
      for (const c of ref.cases) {
        const [r] = await run(engine, ref, slots, [c]);
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
      const mixed = await run(engine, ref, slots, ref.cases);
      assert.equal(mixed.length, oneByOne.length);
      mixed.forEach((r, i) => assert.deepEqual(r, oneByOne[i], `case ${i} changed in the mixed batch`));
      engine.close();
    });
  });
}
