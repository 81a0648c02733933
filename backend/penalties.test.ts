// frequency_penalty, presence_penalty and logit_bias: the bias list against a plain reference of
// OpenAI's formula, and the CPU engine's choices against argmax(raw logprobs + reference bias)
// over a greedy decode, so the engine applies exactly the bias it is given, step after step.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Engine, GREEDY } from '../native/engine.ts';
import { biasFor, penaltiesActive, TokenCounts, type Penalties } from './penalties.ts';

const MODEL = new URL('../test/fixtures/models/llama', import.meta.url).pathname;

/** OpenAI's definition, written plainly: the penalty of token t given the generated tokens. */
function reference(p: Penalties, generated: readonly number[], t: number): number {
  const count = generated.filter((g) => g === t).length;
  return -(p.presence * (count > 0 ? 1 : 0) + p.frequency * count) + (p.logitBias?.get(t) ?? 0);
}

function rng(seed: number) {
  let s = seed >>> 0;
  return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32);
}

describe('penalties', () => {
  it('biasFor equals the reference for every token, zeros left out, one entry per token', () => {
    const r = rng(7);
    for (let trial = 0; trial < 50; trial++) {
      const vocab = 40;
      const generated = Array.from({ length: Math.floor(r() * 30) }, () => Math.floor(r() * vocab));
      const p: Penalties = {
        frequency: Math.round((r() * 4 - 2) * 100) / 100,
        presence: trial % 5 === 0 ? 0 : Math.round((r() * 4 - 2) * 100) / 100,
        logitBias: trial % 3 === 0 ? null : new Map(Array.from({ length: 5 }, () => [Math.floor(r() * vocab), Math.round(r() * 200 - 100)] as [number, number])),
      };
      const counts = new TokenCounts(0).update(generated).counts;
      const { tokens, values } = biasFor(p, counts);
      assert.equal(new Set(tokens).size, tokens.length, 'distinct tokens');
      for (let t = 0; t < vocab; t++) {
        const i = tokens.indexOf(t);
        const want = reference(p, generated, t);
        if (i < 0) assert.equal(want, 0, `token ${t} left out but its bias is ${want}`);
        else assert.ok(Math.abs(values[i]! - want) < 1e-4, `token ${t}: ${values[i]} vs ${want}`);
      }
    }
  });

  it('counts only generated tokens, incrementally', () => {
    const c = new TokenCounts(3);
    const tokens = [5, 5, 6];
    c.update(tokens);
    assert.equal(c.counts.size, 0, 'prompt tokens do not count');
    tokens.push(5, 7, 5);
    c.update(tokens);
    tokens.push(7);
    c.update(tokens).update(tokens);
    assert.deepEqual([...c.counts].sort(), [[5, 2], [7, 2]]);
  });

  it('is inactive with zero penalties and no bias', () => {
    assert.equal(penaltiesActive({ frequency: 0, presence: 0, logitBias: null }), false);
    assert.equal(penaltiesActive({ frequency: 0, presence: 0, logitBias: new Map() }), false);
    assert.equal(penaltiesActive({ frequency: 0.1, presence: 0, logitBias: null }), true);
    assert.equal(penaltiesActive(null), false);
  });
});

describe('penalties in the CPU engine', () => {
  let engine: Engine;
  const BS = 16;
  before(async () => {
    engine = await Engine.open(MODEL, { device: 'cpu', numBlocks: 8, blockSize: BS, maxAdapters: 1, threads: 1 });
  });
  after(() => engine?.close());

  for (const p of [
    { frequency: 1.5, presence: 0, logitBias: null },
    { frequency: 0, presence: 2, logitBias: null },
    { frequency: 0.7, presence: 0.4, logitBias: new Map([[11, 5], [3, -100]]) },
    { frequency: -1, presence: 0, logitBias: null },
  ] satisfies Penalties[]) {
    it(`greedy decode picks argmax(raw logprobs + OpenAI's penalty) each step: ${JSON.stringify({ ...p, logitBias: p.logitBias && [...p.logitBias] })}`, async () => {
      const vocab = engine.model.spec.vocabSize;
      const prompt = [1, 45, 77, 12, 9];
      const table = [0, 1, 2];
      const tokens = [...prompt];
      const counts = new TokenCounts(prompt.length);
      let differs = 0;
      let position = 0;
      let feed = prompt;
      for (let step = 0; step < 40; step++) {
        const bias = biasFor(p, counts.update(tokens).counts);
        const [out] = await engine.step([{ tokens: feed, position, blockTable: table, sampling: GREEDY, topLogprobs: vocab, bias }]);
        const raw = new Float64Array(vocab);
        out!.top!.ids.forEach((id, k) => (raw[id] = out!.top!.logprobs[k]!));
        const generated = tokens.slice(prompt.length);
        let best = -1;
        let bestV = -Infinity;
        for (let t = 0; t < vocab; t++) {
          const v = raw[t]! + reference(p, generated, t);
          if (v > bestV) [best, bestV] = [t, v];
        }
        let plain = 0;
        for (let t = 1; t < vocab; t++) if (raw[t]! > raw[plain]!) plain = t;
        if (plain !== best) differs++;
        assert.equal(out!.token, best, `step ${step}`);
        position += feed.length;
        tokens.push(out!.token);
        feed = [out!.token];
      }
      assert.ok(differs > 0, 'the penalty changed at least one choice (else this test proves nothing)');
    });
  }

  it('refuses a bias naming a token twice or outside the vocabulary', async () => {
    const vocab = engine.model.spec.vocabSize;
    await assert.rejects(engine.step([{ tokens: [1, 2], position: 0, blockTable: [0], bias: { tokens: [3, 3], values: [1, 1] } }]), /bias lists a token twice/);
    await assert.rejects(engine.step([{ tokens: [1, 2], position: 0, blockTable: [0], bias: { tokens: [vocab], values: [1] } }]), /bias token outside the vocabulary/);
    await assert.rejects(engine.step([{ tokens: [1, 2], position: 0, blockTable: [0], bias: { tokens: [4], values: [Number.NaN] } }]), /finite/);
  });
});
