// LoRA on lm_head and on embed_tokens (issue 17), as PEFT saves them, in the CPU engine: an adapter
// served unmerged must give what the same adapter merged into the base weights gives (W + s B A for
// the projections and the head, E[t] + s B A[:, t] for the embeddings), computed here from the
// fixture's safetensors (helpers/lora-extra.ts). On llama (separate head) and gemma2 (tied head,
// embeddings scaled by sqrt(hidden), final soft-capping): the head LoRA must apply to the head only, the
// embedding LoRA to the embeddings only, and the embedding scale to the LoRA delta too. Then every
// adapter (and the base model) in ONE mixed batch must not change a number. transformers + PEFT itself
// is the judge in engine-lora-extra-vs-hf (fixtures made on the GPU machine by
// scripts/make-lora-extra-fixtures.py).
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { adapterBytes } from '../backend/adapters/adapter-store.ts';
import { Engine } from '../native/engine.ts';
import { openModelDir, type ModelDir } from '../native/model-dir.ts';
import { openPeftAdapter } from '../native/peft-adapter.ts';
import { BLOCK_SIZE, FIXTURES, loadReference, maxAbsDiff, runCases, type Reference, type Result } from './helpers/hf-reference.ts';
import { casesOf, mergedModel, writeAdapters, type AdapterDef, type Factors } from './helpers/lora-extra.ts';

/** Merged and unmerged differ only by fp32 rounding of the weights. */
const TOL = 2e-4;

let tmp: string;
before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'sb-lora-extra-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

for (const modelName of ['llama', 'gemma2']) {
  describe(`${modelName}: LoRA on lm_head and embed_tokens, served vs merged into the weights (CPU engine)`, () => {
    const hf = loadReference(modelName);
    const ref: Reference = { prompts: hf.prompts, cases: [] };
    const numBlocks = 4 * hf.prompts.length * Math.ceil((Math.max(...hf.prompts.map((p) => p.ids.length)) + 16) / BLOCK_SIZE);
    let model: ModelDir;
    let engine: Engine;
    let adapters: AdapterDef[];
    let factors: Map<string, Map<string, Factors>>;
    const slots = new Map<string, number>();
    const served = new Map<string, Result[]>();
    let base: Result[];

    it('loads PEFT adapters on lm_head and embed_tokens, counting their bytes', async () => {
      model = await openModelDir(path.join(FIXTURES, 'models', modelName));
      const written = await writeAdapters(model, path.join(tmp, modelName));
      adapters = written.defs;
      factors = written.factors;
      engine = await Engine.open(model, { device: 'cpu', numBlocks, blockSize: BLOCK_SIZE, maxAdapters: 4 });
      for (const [i, def] of adapters.entries()) {
        const dir = written.dirs.get(def.name)!;
        const opened = await openPeftAdapter(dir, model);
        assert.deepEqual(opened.spec.modules.map((m) => `${m.module}@${m.layer}:${m.rank}`), def.modules.map((m) => `${m.module}@${m.layer}:${m.rank}`));
        for (const m of opened.spec.modules) {
          const want = def.modules.find((d) => d.module === m.module && d.layer === m.layer)!;
          assert.ok(Math.abs(m.scale - def.scale(want)) < 1e-12, `${m.module}: scale ${m.scale}`);
        }
        // The slot's byte budget counts the head's and the embeddings' factors like any other module's.
        const f = factors.get(def.name)!;
        const elements = def.modules.reduce((n, m) => n + m.rank * (f.get(m.key)!.inF + f.get(m.key)!.outF), 0);
        assert.equal(adapterBytes(opened.spec, 2), elements * 2);
        await engine.loadAdapterDir(i, dir);
        slots.set(def.name, i);
      }
      base = await runCases(engine, ref, slots, casesOf(ref, null));
    });

    it('matches the merged weights, adapter by adapter, and differs from the base model', async () => {
      for (const def of adapters) {
        const mine = await runCases(engine, ref, slots, casesOf(ref, def.name));
        served.set(def.name, mine);
        const mergedEngine = await Engine.open(await mergedModel(model, def, factors.get(def.name)!), { device: 'cpu', numBlocks, blockSize: BLOCK_SIZE, maxAdapters: 1 });
        try {
          const merged = await runCases(mergedEngine, ref, new Map(), casesOf(ref, null));
          let worst = 0;
          let moved = 0;
          mine.forEach((r, p) => {
            const where = `${def.name}, prompt ${p}`;
            const d = maxAbsDiff(r.promptLogprobs, merged[p]!.promptLogprobs);
            worst = Math.max(worst, d, maxAbsDiff(r.greedyLogprobs, merged[p]!.greedyLogprobs));
            moved = Math.max(moved, maxAbsDiff(r.promptLogprobs, base[p]!.promptLogprobs));
            assert.ok(d < TOL, `${where}: prompt logprobs differ from the merged model's by ${d}`);
            assert.deepEqual(r.top5, merged[p]!.top5, `${where}: top-5`);
            assert.deepEqual(r.greedy, merged[p]!.greedy, `${where}: greedy tokens`);
          });
          // The adapter must matter: a LoRA that was silently skipped would match the base model.
          assert.ok(moved > 0.05, `${def.name}: logprobs moved only ${moved} from the base model's`);
          console.log(`  ${modelName} ${def.name}: worst |served - merged| = ${worst.toExponential(2)}, moved from base by up to ${moved.toFixed(3)}`);
        } finally {
          mergedEngine.close();
        }
      }
    });

    it('gives the same numbers when every adapter and the base model share one mixed batch', async () => {
      const cases = [...adapters.flatMap((d) => casesOf(ref, d.name)), ...casesOf(ref, null)];
      // Interleaved, so neighbouring rows use different adapters.
      const order = cases.map((_, i) => i).sort((x, y) => (x % 4) - (y % 4) || x - y);
      const mixed = await runCases(engine, ref, slots, order.map((i) => cases[i]!));
      const alone = [...adapters.flatMap((d) => served.get(d.name)!), ...base];
      order.forEach((ci, j) => assert.deepEqual(mixed[j], alone[ci], `case ${ci} (${cases[ci]!.adapter ?? 'base'}, prompt ${cases[ci]!.prompt}) changed in the mixed batch`));
      engine.close();
    });
  });
}
