// The packed step format between engine.ts and the addon (see NativeEngine.step in addon.d.ts):
// every SeqInput field lands in its own C++ field, a batch with every option set gives each
// sequence what it gets alone, malformed packed arrays are TypeErrors, never a crash, and the
// layout itself is the addon's (src/addon.cc), checked by engine.ts when the addon loads.
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { writeRandomAdapter, writeRandomModel } from '../test/helpers/random-model.ts';
import type { NativeEngine, NativeStepResult } from './addon.d.ts';
import { Engine, loadAddon, stepLayoutOf, type SeqInput } from './engine.ts';
import { openModelDir } from './model-dir.ts';

const BS = 4;
const VOCAB = 96;
const MAX_SEED = Number.MAX_SAFE_INTEGER; // 2^53 - 1
const blocks = (first: number, n: number) => Array.from({ length: n }, (_, i) => first + i);
const prompt = (len: number, salt: number) => Array.from({ length: len }, (_, i) => (i * 11 + salt * 5 + 1) % VOCAB);
const maskOf = (allowed: number[]) => {
  const m = new Uint32Array(Math.ceil(VOCAB / 32));
  for (const t of allowed) m[t >> 5]! |= 1 << (t & 31);
  return m;
};

// The documented order of a sequence's numbers in `seqs`, written here independently of
// engine.ts so that a drift between the layout's description and either side shows.
const FIELDS = [
  'position', 'adapterSlot', 'promptLogprobs', 'nextToken', 'sample', 'topLogprobs',
  'temperature', 'topK', 'topP', 'typicalP', 'repetitionPenalty', 'seed',
  'tokens', 'blockTable', 'penaltyTokens', 'bias', 'mask',
] as const;
type Row = Record<(typeof FIELDS)[number], number>;
// Tokens [1, 2, 3] over block 0, greedy: ints = [1, 2, 3, 0].
const ROW: Row = {
  position: 0, adapterSlot: -1, promptLogprobs: 0, nextToken: -1, sample: 1, topLogprobs: 0,
  temperature: 0, topK: 0, topP: 1, typicalP: 1, repetitionPenalty: 1, seed: 0,
  tokens: 3, blockTable: 1, penaltyTokens: 0, bias: 0, mask: 0,
};
const seqsOf = (...rows: Partial<Row>[]) => Float64Array.from(rows.flatMap((r) => FIELDS.map((k) => ({ ...ROW, ...r })[k])));
const INTS = [1, 2, 3, 0];

describe('packed steps', () => {
  let dir: string;
  let engine: Engine;
  let native: NativeEngine;
  before(async () => {
    dir = await writeRandomModel({ arch: 'llama', vocab: VOCAB, seed: 21 });
    await writeRandomAdapter(dir, 'a1', { r: 4, alpha: 8, targets: ['q_proj', 'v_proj', 'up_proj'], seed: 22 });
    engine = await Engine.open(dir, { numBlocks: 64, blockSize: BS, maxAdapters: 2, threads: 2 });
    await engine.loadAdapterDir(0, `${dir}/adapters/a1`);
    const { NativeEngine } = loadAddon();
    native = new NativeEngine((await openModelDir(dir)).spec, { numBlocks: 16, blockSize: BS, maxAdapters: 1, threads: 2 });
    await native.load();
  });
  after(async () => {
    engine?.close();
    native?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('gives every sequence of a batch with every option set what it gets alone', async () => {
    const p = prompt(9, 1);
    const cases: SeqInput[] = [
      // A prefill chunk scored with its successor, alternatives at every position, nothing sampled.
      { tokens: p.slice(0, 6), position: 0, blockTable: blocks(0, 3), adapterSlot: 0, promptLogprobs: true, nextToken: p[6]!, sample: false, topLogprobs: 3 },
      // Seeded sampling at the largest safe seed, with every filter and a repetition penalty.
      {
        tokens: Int32Array.from(prompt(5, 2)), position: 0, blockTable: Int32Array.from(blocks(3, 2)), topLogprobs: 2,
        sampling: { temperature: 1.3, topK: 20, topP: 0.9, typicalP: 0.95, repetitionPenalty: 1.3, seed: MAX_SEED },
        penaltyTokens: Int32Array.from(prompt(5, 2)),
      },
      // A constrained draw, scored prompt included.
      { tokens: prompt(7, 3), position: 0, blockTable: blocks(5, 2), adapterSlot: 0, promptLogprobs: true, mask: maskOf([4, 40, 77, 90]), sampling: { temperature: 2, seed: 12345 } },
      // Everything at once.
      {
        tokens: prompt(4, 4), position: 0, blockTable: [7], adapterSlot: 0, promptLogprobs: true, topLogprobs: 4,
        sampling: { temperature: 0.8, topK: 5, repetitionPenalty: 0.7, seed: MAX_SEED - 1 }, penaltyTokens: [3, 9, 3, 50],
        mask: maskOf(blocks(10, 40)),
      },
      // A plain greedy one-token step.
      { tokens: [17], position: 0, blockTable: [8] },
    ];
    const alone = [];
    for (const c of cases) alone.push((await engine.step([c]))[0]!);
    const together = await engine.step(cases);
    assert.deepEqual(together, alone);
    const reversed = await engine.step([...cases].reverse());
    assert.deepEqual(reversed.reverse(), alone);

    const [a, b, c, d] = alone;
    assert.equal(a!.token, -1);
    assert.equal(a!.top, null);
    assert.equal(a!.promptLogprobs!.length, 6); // tokens[1..5] and nextToken
    assert.equal(a!.promptTop!.length, 6);
    for (const t of a!.promptTop!) assert.equal(t.ids.length, 3);
    // nextToken scored at the chunk's end is what a one-shot prefill gives that position.
    const [whole] = await engine.step([{ tokens: p.slice(0, 7), position: 0, blockTable: blocks(9, 2), adapterSlot: 0, promptLogprobs: true }]);
    assert.deepEqual(a!.promptLogprobs, whole!.promptLogprobs);
    assert.equal(b!.top!.ids.length, 2);
    assert.equal(b!.promptLogprobs, null);
    assert.ok([4, 40, 77, 90].includes(c!.token), `token ${c!.token} is masked out`);
    assert.equal(c!.promptTop, null); // scored, but no alternatives asked for
    assert.equal(c!.promptLogprobs!.length, 6);
    assert.ok(d!.token >= 10 && d!.token < 50, `token ${d!.token} is masked out`);
    assert.equal(d!.top!.ids.length, 4);
  });

  it('passes seeds up to 2^53 - 1 whole, and the sampling fields to the sampler', async () => {
    const base: SeqInput = { tokens: prompt(8, 5), position: 0, blockTable: blocks(0, 2) };
    // Seeds that differ only above bit 32: a seed cut to 32 bits (or to a float) would draw one token.
    const draws = new Set<number>();
    for (let k = 0; k < 30; k++) {
      const [o] = await engine.step([{ ...base, sampling: { temperature: 1.5, seed: MAX_SEED - k * 2 ** 32 } }]);
      draws.add(o!.token);
    }
    assert.ok(draws.size > 3, `temperature 1.5 should spread draws over seeds, got ${draws.size} distinct tokens`);
    const [x] = await engine.step([{ ...base, sampling: { temperature: 1.5, seed: MAX_SEED } }]);
    const [, y] = await engine.step([{ ...base, blockTable: blocks(4, 2) }, { ...base, sampling: { temperature: 1.5, seed: MAX_SEED } }]);
    assert.equal(y!.token, x!.token);
    // top-k 1 is greedy whatever the temperature: topK reaches the sampler as topK.
    const [greedy] = await engine.step([base]);
    const [k1] = await engine.step([{ ...base, sampling: { temperature: 5, topK: 1, seed: 3 } }]);
    assert.equal(k1!.token, greedy!.token);
    // So does a huge repetition penalty on the greedy token, through penaltyTokens.
    const [pen] = await engine.step([{ ...base, sampling: { repetitionPenalty: 1e6 }, penaltyTokens: [greedy!.token] }]);
    assert.notEqual(pen!.token, greedy!.token);
  });

  it('lands every field in its own place (each bad value is reported under its own name)', async () => {
    const ok: SeqInput = { tokens: [1, 2, 3], position: 0, blockTable: [0] };
    const rejects: [Partial<SeqInput>, RegExp][] = [
      [{ position: -1 }, /negative position/],
      [{ adapterSlot: 9 }, /adapter slot 9 out of range/],
      [{ nextToken: VOCAB }, /nextToken outside the vocabulary/],
      [{ topLogprobs: VOCAB + 1 }, /bad topLogprobs/],
      [{ sampling: { temperature: -1 } }, /temperature must be >= 0/],
      [{ sampling: { topK: -1 } }, /topK must be >= 0/],
      [{ sampling: { topP: 0 } }, /topP must be in/],
      [{ sampling: { typicalP: 2 } }, /typicalP must be in/],
      [{ sampling: { repetitionPenalty: 0 } }, /repetitionPenalty must be > 0/],
      [{ mask: new Uint32Array(2) }, /mask must have 3 words/],
      [{ blockTable: [64] }, /KV block 64 does not exist/],
      [{ tokens: [] }, /no tokens/],
      [{ tokens: [1, 2, VOCAB] }, /token 96 is outside the vocabulary/],
    ];
    for (const [bad, re] of rejects) await assert.rejects(engine.step([ok, { ...ok, ...bad }]), re);
    const throwsType: [Partial<SeqInput>, RegExp][] = [
      [{ position: 1.5 }, /batch\[1\]\.position must be an integer/],
      [{ adapterSlot: 2 ** 31 }, /batch\[1\]\.adapterSlot must be an integer/],
      [{ nextToken: NaN }, /batch\[1\]\.nextToken must be an integer/],
      [{ topLogprobs: 0.5 }, /batch\[1\]\.topLogprobs must be an integer/],
      [{ sampling: { topK: 2.5 } }, /batch\[1\]\.sampling\.topK must be an integer/],
      [{ sampling: { seed: -1 } }, /batch\[1\]\.sampling\.seed must be a non-negative safe integer/],
      [{ sampling: { seed: 0.5 } }, /sampling\.seed must be a non-negative safe integer/],
      [{ sampling: { seed: 2 ** 53 } }, /sampling\.seed must be a non-negative safe integer/],
    ];
    for (const [bad, re] of throwsType) {
      assert.throws(() => engine.step([ok, { ...ok, ...bad }]), (err: Error) => err instanceof TypeError && re.test(err.message));
    }
    const [o] = await engine.step([ok]);
    assert.ok(o!.token >= 0);
  });

  it('rejects malformed packed arrays with a TypeError, and keeps working', async () => {
    const step = native.step.bind(native) as (...args: unknown[]) => Promise<NativeStepResult>;
    const ints = Int32Array.from(INTS);
    const none = new Uint32Array(0);
    const cases: [unknown[], RegExp][] = [
      [[], /seqs must be a Float64Array/],
      [[[...seqsOf({})], ints, none], /seqs must be a Float64Array/],
      [[new Float32Array(16), ints, none], /seqs must be a Float64Array/],
      [[seqsOf({}), Float64Array.from(INTS), none], /ints must be an Int32Array/],
      [[seqsOf({}), ints], /masks must be a Uint32Array/],
      [[seqsOf({}), ints, new Int32Array(0)], /masks must be a Uint32Array/],
      [[seqsOf({}).subarray(1), ints, none], /seqs must hold 17 numbers per sequence, got 16/],
      [[seqsOf({ position: 1.5 }), ints, none], /batch\[0\]\.position must be an integer/],
      [[seqsOf({ position: NaN }), ints, none], /batch\[0\]\.position must be an integer/],
      [[seqsOf({ position: Infinity }), ints, none], /batch\[0\]\.position must be an integer/],
      [[seqsOf({ adapterSlot: -(2 ** 31) - 1 }), ints, none], /batch\[0\]\.adapterSlot must be an integer/],
      [[seqsOf({ promptLogprobs: 2 }), ints, none], /batch\[0\]\.promptLogprobs must be a boolean/],
      [[seqsOf({ sample: NaN }), ints, none], /batch\[0\]\.sample must be a boolean/],
      [[seqsOf({ topK: 1e300 }), ints, none], /batch\[0\]\.sampling\.topK must be an integer/],
      [[seqsOf({ seed: -1 }), ints, none], /batch\[0\]\.sampling\.seed must be a non-negative safe integer/],
      [[seqsOf({ seed: 1.5 }), ints, none], /sampling\.seed must be a non-negative safe integer/],
      [[seqsOf({ seed: 2 ** 53 }), ints, none], /sampling\.seed must be a non-negative safe integer/],
      [[seqsOf({ seed: NaN }), ints, none], /sampling\.seed must be a non-negative safe integer/],
      [[seqsOf({ tokens: -1 }), ints, none], /batch\[0\]\.tokens length must be a non-negative integer/],
      [[seqsOf({ tokens: 2.5 }), ints, none], /batch\[0\]\.tokens length must be a non-negative integer/],
      [[seqsOf({ tokens: 2 ** 31 - 1 }), ints, none], /batch\[0\]\.tokens needs 2147483647 values from ints\[0\], past its end \(4 values\)/],
      [[seqsOf({ blockTable: 2 }), ints, none], /batch\[0\]\.blockTable needs 2 values from ints\[3\], past its end/],
      [[seqsOf({ penaltyTokens: 1 }), ints, none], /batch\[0\]\.penaltyTokens needs 1 values from ints\[4\]/],
      [[seqsOf({ bias: 1 }), ints, none], /batch\[0\]\.bias needs 1 values from ints\[4\]/],
      [[seqsOf({ bias: 1 }), Int32Array.from([...INTS, 7]), none], /batch\[0\]\.bias values run past the end of ints/],
      [[seqsOf({ mask: 3 }), ints, new Uint32Array(2)], /batch\[0\]\.mask needs 3 values from masks\[0\], past its end \(2 values\)/],
      [[seqsOf({}, {}), ints, none], /batch\[1\]\.tokens needs 3 values from ints\[4\], past its end/],
      [[seqsOf({}), Int32Array.from([...INTS, 7]), none], /ints holds 5 values, the sequences use 4/],
      [[seqsOf({}), ints, new Uint32Array(3)], /masks holds 3 words, the sequences use 0/],
    ];
    for (const [args, re] of cases) {
      assert.throws(() => step(...args), (err: Error) => err instanceof TypeError && re.test(err.message), `${re}`);
    }
    // Still serving: a well-formed call works, and the engine-level checks still answer as rejections.
    const r = await step(seqsOf({}), ints, none);
    assert.equal(r.seqs.length, 4);
    assert.ok(r.seqs[0]! >= 0 && r.seqs[0]! < VOCAB);
    await assert.rejects(step(seqsOf({ blockTable: 1 }), Int32Array.from([1, 2, 3, 99]), none), /KV block 99 does not exist/);
    const [o] = await engine.step([{ tokens: [1, 2, 3], position: 0, blockTable: [0] }]);
    assert.ok(o!.token >= 0);
  });

  it('copies the arrays before returning, so the caller may reuse them at once', async () => {
    const seqs = seqsOf({ promptLogprobs: 1, topLogprobs: 2 }, { tokens: 2, blockTable: 1, position: 0 });
    const ints = Int32Array.from([...INTS, 5, 6, 1]);
    const expected = await native.step(seqs.slice(), ints.slice(), new Uint32Array(0));
    const pending = native.step(seqs, ints, new Uint32Array(0));
    seqs.fill(NaN);
    ints.fill(-7);
    assert.deepEqual(await pending, expected);
  });

  it('returns results in the documented packed layout', async () => {
    const seq: SeqInput = { tokens: [1, 2, 3], position: 0, blockTable: [0], promptLogprobs: true, topLogprobs: 2 };
    const [out] = await engine.step([seq]);
    const r = await native.step(seqsOf({ promptLogprobs: 1, topLogprobs: 2 }), Int32Array.from(INTS), new Uint32Array(0));
    // Header [token, 2 alternatives, 2 prompt logprobs, 2 prompt groups], then the groups' sizes.
    assert.deepEqual(Array.from(r.seqs), [out!.token, 2, 2, 2, 2, 2]);
    assert.deepEqual(Array.from(r.logprobs), [out!.logprob, ...out!.promptLogprobs!]);
    const tops = [out!.top!, ...out!.promptTop!];
    assert.deepEqual(Array.from(r.altIds), tops.flatMap((t) => Array.from(t.ids)));
    assert.deepEqual(Array.from(r.altLogprobs), tops.flatMap((t) => Array.from(t.logprobs)));
    // And an unscored greedy step: no alternatives, nothing after the header.
    const g = await native.step(seqsOf({}), Int32Array.from(INTS), new Uint32Array(0));
    assert.deepEqual([g.seqs.length, g.logprobs.length, g.altIds.length, g.altLogprobs.length], [4, 1, 0, 0]);
    assert.deepEqual(Array.from(g.seqs).slice(1), [-1, -1, 0]);
  });

  it('is defined by the addon, in the documented order, and engine.ts refuses an addon built for another', () => {
    const SAMPLING = ['temperature', 'topK', 'topP', 'typicalP', 'repetitionPenalty', 'seed'];
    const layout = loadAddon().stepLayout;
    assert.deepEqual(layout.seq, FIELDS.map((f) => (SAMPLING.includes(f) ? `sampling.${f}` : f)));
    assert.deepEqual(layout.out, ['token', 'top', 'prompt', 'promptTop']);
    const rebuild = /stale\.node was built for another step layout than native\/engine\.ts packs; rebuild it with `npm run build:native`/;
    const stale = (seq: string[], out = layout.out) => () => stepLayoutOf({ stepLayout: { seq, out } }, 'stale.node');
    assert.throws(stale(layout.seq.filter((f) => f !== 'mask')), (e: Error) => rebuild.test(e.message) && /missing mask/.test(e.message));
    assert.throws(stale([...layout.seq, 'logitBias']), (e: Error) => rebuild.test(e.message) && /unexpected logitBias/.test(e.message));
    assert.throws(stale(layout.seq.map((f) => (f === 'sampling.seed' ? 'seed' : f))), /missing sampling\.seed, unexpected seed/);
    assert.throws(stale(layout.seq, ['token', 'top', 'prompt']), /result fields: missing promptTop/);
    assert.throws(() => stepLayoutOf({}, 'old.node'), /old\.node was built for another step layout .*exports no sequence layout/);
    // Another order of the same names is a layout engine.ts follows, not an error.
    const swapped = [layout.seq[1]!, layout.seq[0]!, ...layout.seq.slice(2)];
    const l = stepLayoutOf({ stepLayout: { seq: swapped, out: layout.out } }, 'swapped.node');
    assert.deepEqual([l.seq.position, l.seq.adapterSlot, l.seqFields], [1, 0, FIELDS.length]);
  });
});
