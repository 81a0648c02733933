// Sampling, masks, penalties and alternatives on the CUDA engine's device path (kernels/sampling.cuh),
// and its decode CUDA graphs, on the fixture llama in float32. The distribution is checked against
// transformers' own next-token logprobs; skipped where no CUDA engine works (CI).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Engine, type SeqInput, loadCudaAddon, cudaUnavailableReason } from '../../native/engine.ts';
import { BLOCK_SIZE, FIXTURES, loadReference } from '../helpers/hf-reference.ts';

const cuda = loadCudaAddon();
const skip = cuda ? false : `no CUDA engine here: ${cudaUnavailableReason()}`;
const SEQS = 250;

describe('CUDA engine: sampling on the device', { skip }, () => {
  const ref = loadReference('llama');
  const c = ref.cases.find((x) => x.adapter === null)!;
  const prompt = ref.prompts[c.prompt]!.ids;
  const per = Math.ceil((prompt.length + 24) / BLOCK_SIZE);
  const table = (i: number) => Array.from({ length: per }, (_, b) => i * per + b);
  const probs = c.top5.logprobs.map(Math.exp);
  let engine: Engine;
  before(async () => {
    engine = await Engine.open(join(FIXTURES, 'models', 'llama'), { device: 'cuda', dtype: 'float32', numBlocks: SEQS * per, blockSize: BLOCK_SIZE, maxAdapters: 2 });
  });
  after(() => engine?.close());

  const first = (extra: Partial<SeqInput>[], offset = 0) =>
    engine.step(extra.map((e, i) => ({ tokens: prompt, position: 0, blockTable: table(i + offset), ...e })));

  it('draws from softmax over the top-k, as transformers computes it', async () => {
    const counts = new Map<number, number>();
    let n = 0;
    for (let b = 0; b < 8; b++) {
      const outs = await first(Array.from({ length: SEQS }, (_, i) => ({ sampling: { temperature: 1, topK: 5, seed: b * SEQS + i } })));
      for (const o of outs) {
        counts.set(o.token, (counts.get(o.token) ?? 0) + 1);
        n++;
      }
    }
    for (const t of counts.keys()) assert.ok(c.top5.ids.includes(t), `token ${t} is outside the top 5 ${c.top5.ids}`);
    const z = probs.reduce((a, b) => a + b, 0);
    const tv = 0.5 * c.top5.ids.reduce((a, id, k) => a + Math.abs((counts.get(id) ?? 0) / n - probs[k]! / z), 0);
    console.log(`  ${n} draws over the top 5: total variation from HF's renormalised softmax ${tv.toFixed(4)}`);
    assert.ok(tv < 0.05, `total variation ${tv}`);
  });

  it('keeps only the top-p nucleus', async () => {
    let cum = 0;
    let k = 0;
    while (k < 5 && cum < 0.6) cum += probs[k++]!;
    if (cum < 0.6) return; // the nucleus reaches past the reference's top 5: nothing to hold it to
    const outs = await first(Array.from({ length: SEQS }, (_, i) => ({ sampling: { temperature: 1, topP: 0.6, seed: i } })));
    const nucleus = c.top5.ids.slice(0, k);
    for (const o of outs) assert.ok(nucleus.includes(o.token), `token ${o.token} outside the nucleus ${nucleus}`);
  });

  it('is reproducible from (seed, position) whatever the batch', async () => {
    const s = { temperature: 1.5, seed: 1234 };
    const [alone] = await first([{ sampling: s }]);
    const mixed = await first([{ sampling: { temperature: 1.5, seed: 1 } }, { sampling: s }, {}], 3);
    assert.equal(mixed[1]!.token, alone!.token);
    const [k1] = await first([{ sampling: { temperature: 1.5, topK: 1, seed: 9 } }]);
    assert.equal(k1!.token, c.top5.ids[0], 'top_k 1 is greedy');
  });

  it('honours masks and penalties, and returns raw logprobs', async () => {
    const allowed = [c.top5.ids[1]!, c.top5.ids[3]!];
    const mask = new Uint32Array(Math.ceil(engine.model.spec.vocabSize / 32));
    for (const t of allowed) mask[t >> 5]! |= 1 << (t & 31);
    const [g] = await first([{ mask }]);
    assert.equal(g!.token, allowed[0], 'greedy under a mask picks the best allowed token');
    assert.ok(Math.abs(g!.logprob - c.top5.logprobs[1]!) < 1e-3, `raw logprob ${g!.logprob} vs HF ${c.top5.logprobs[1]}`);
    const outs = await first(Array.from({ length: 50 }, (_, i) => ({ mask, sampling: { temperature: 2, seed: i } })));
    for (const o of outs) assert.ok(allowed.includes(o.token), `token ${o.token} is masked out`);
    const [p] = await first([{ sampling: { repetitionPenalty: 1e6 }, penaltyTokens: [c.top5.ids[0]!, c.top5.ids[0]!] }]);
    assert.notEqual(p!.token, c.top5.ids[0]);
    await assert.rejects(first([{ mask: new Uint32Array(mask.length) }]), /mask allows no token/);
    const [again] = await first([{}]);
    assert.equal(again!.token, c.top5.ids[0], 'the engine keeps working after a refused row');
  });

  it('returns alternatives on the device and past its limit on the host', async () => {
    const [o5, o100] = await first([{ topLogprobs: 5 }, { topLogprobs: 100, sampling: { temperature: 0.7, typicalP: 0.9, seed: 3 } }]);
    assert.deepEqual(Array.from(o5!.top!.ids), c.top5.ids);
    assert.equal(o100!.top!.ids.length, 100);
    assert.deepEqual(Array.from(o100!.top!.ids).slice(0, 5), c.top5.ids);
    const lps = Array.from(o100!.top!.logprobs);
    assert.ok(lps.every((v, i) => i === 0 || v <= lps[i - 1]!), 'alternatives are sorted');
  });

  it('decodes identically with and without CUDA graphs', async () => {
    const decode = async (e: Engine) => {
      let pending: number[][] = [prompt, prompt.slice(0, 3)];
      const pos = [0, 0];
      const seen: number[] = [];
      for (let step = 0; step < 12; step++) {
        const outs = await e.step(pending.map((t, i) => ({ tokens: t, position: pos[i]!, blockTable: table(10 + i), sampling: { temperature: 0.9, seed: i } })));
        outs.forEach((o, i) => {
          pos[i]! += pending[i]!.length;
          seen.push(o.token, o.logprob);
        });
        pending = outs.map((o) => [o.token]);
      }
      return seen;
    };
    const replayed = engine.info().graphSteps;
    const withGraphs = await decode(engine);
    assert.ok(engine.info().graphSteps >= replayed + 6, `decode steps replayed from graphs: ${engine.info().graphSteps - replayed}`);
    const eager = await Engine.open(join(FIXTURES, 'models', 'llama'), { device: 'cuda', dtype: 'float32', cudaGraphs: false, numBlocks: SEQS * per, blockSize: BLOCK_SIZE, maxAdapters: 2 });
    try {
      assert.deepEqual(await decode(eager), withGraphs);
      assert.equal(eager.info().graphSteps, 0);
    } finally {
      eager.close();
    }
  });
});
