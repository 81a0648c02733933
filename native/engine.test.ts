// The engine's own invariants on small random models: paging, chunking and batching never
// change a number, seeded sampling is reproducible, and bad input is an error, not a crash.
// Agreement with Hugging Face transformers + PEFT is tested in test/engine-vs-hf.test.ts.
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { writeRandomAdapter, writeRandomModel } from '../test/helpers/random-model.ts';
import { Engine, type SeqInput } from './engine.ts';

const BS = 4;
const blocks = (first: number, n: number) => Array.from({ length: n }, (_, i) => first + i);
const prompt = (len: number, salt: number) => Array.from({ length: len }, (_, i) => (i * 7 + salt * 13 + 3) % 96);

describe('cpu engine invariants', () => {
  let dir: string;
  let engine: Engine;
  before(async () => {
    dir = await writeRandomModel({ arch: 'llama', seed: 7 });
    await writeRandomAdapter(dir, 'a1', { r: 4, alpha: 8, targets: ['q_proj', 'v_proj', 'down_proj'], seed: 11 });
    await writeRandomAdapter(dir, 'a2', { r: 8, alpha: 8, targets: ['k_proj', 'o_proj', 'gate_proj', 'up_proj'], seed: 12 });
    engine = await Engine.open(dir, { numBlocks: 64, blockSize: BS, maxAdapters: 4, threads: 2 });
    await engine.loadAdapterDir(0, `${dir}/adapters/a1`);
    await engine.loadAdapterDir(1, `${dir}/adapters/a2`);
  });
  after(async () => {
    engine?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('reports its device and sizes', () => {
    const info = engine.info();
    assert.equal(info.device, 'cpu');
    assert.equal(info.blockSize, BS);
    assert.ok(info.weightBytes > 0);
  });

  it('gives identical prompt logprobs for one-shot and chunked prefill over scattered blocks', async () => {
    const p = prompt(19, 1);
    const [whole] = await engine.step([{ tokens: p, position: 0, blockTable: blocks(0, 5), promptLogprobs: true, adapterSlot: 0 }]);
    // Same prompt in three chunks, its KV in non-contiguous blocks.
    const table = [40, 9, 33, 12, 20];
    const chunks: number[] = [];
    let pos = 0;
    for (const len of [7, 5, 7]) {
      const tokens = p.slice(pos, pos + len);
      const next = pos + len < p.length ? p[pos + len] : -1;
      const [out] = await engine.step([{ tokens, position: pos, blockTable: table, promptLogprobs: true, nextToken: next, sample: next < 0, adapterSlot: 0 }]);
      chunks.push(...out!.promptLogprobs!);
      if (next < 0) assert.equal(out!.token, whole!.token);
      pos += len;
    }
    assert.deepEqual(chunks, Array.from(whole!.promptLogprobs!));
  });

  it('gives each sequence the same numbers alone and in a mixed-adapter batch', async () => {
    const cases: SeqInput[] = [
      { tokens: prompt(9, 2), position: 0, blockTable: blocks(0, 3), adapterSlot: -1, promptLogprobs: true, topLogprobs: 3 },
      { tokens: prompt(13, 3), position: 0, blockTable: blocks(3, 4), adapterSlot: 0, promptLogprobs: true, topLogprobs: 3 },
      { tokens: prompt(6, 4), position: 0, blockTable: blocks(7, 2), adapterSlot: 1, promptLogprobs: true, topLogprobs: 3 },
      { tokens: prompt(11, 5), position: 0, blockTable: blocks(9, 3), adapterSlot: 0, promptLogprobs: true, topLogprobs: 3 },
    ];
    const alone = [];
    for (const c of cases) alone.push((await engine.step([c]))[0]);
    const mixed = await engine.step(cases);
    assert.deepEqual(mixed, alone);
    // The adapters do change the numbers (otherwise this test proves nothing).
    const base = await engine.step([{ ...cases[1]!, adapterSlot: -1 }]);
    assert.notDeepEqual(base[0]!.promptLogprobs, alone[1]!.promptLogprobs);
  });

  it('decodes greedily the same in a batch as alone, prefill and decode mixed in one step', async () => {
    async function decode(seqs: { p: number[]; slot: number; first: number }[], steps: number) {
      const state = seqs.map((s) => ({ ...s, pos: 0, pending: s.p, out: [] as number[] }));
      for (let i = 0; i < steps; i++) {
        const outs = await engine.step(state.map((s) => ({ tokens: s.pending, position: s.pos, blockTable: blocks(s.first, 8), adapterSlot: s.slot })));
        state.forEach((s, j) => {
          s.pos += s.pending.length;
          s.pending = [outs[j]!.token];
          s.out.push(outs[j]!.token);
        });
      }
      return state.map((s) => s.out);
    }
    const seqs = [
      { p: prompt(5, 6), slot: -1, first: 0 },
      { p: prompt(12, 7), slot: 0, first: 8 },
      { p: prompt(3, 8), slot: 1, first: 16 },
    ];
    const together = await decode(seqs, 10);
    for (let i = 0; i < seqs.length; i++) assert.deepEqual((await decode([seqs[i]!], 10))[0], together[i]);
    // Staggered: sequence 1 is still in prefill while sequence 0 decodes.
    const [first] = await engine.step([{ tokens: seqs[0]!.p, position: 0, blockTable: blocks(0, 8) }]);
    const [d, pf] = await engine.step([
      { tokens: [first!.token], position: seqs[0]!.p.length, blockTable: blocks(0, 8) },
      { tokens: seqs[1]!.p, position: 0, blockTable: blocks(8, 8), adapterSlot: 0 },
    ]);
    assert.equal(d!.token, together[0]![1]);
    assert.equal(pf!.token, together[1]![0]);
  });

  it('samples reproducibly from (seed, position), whatever the batch', async () => {
    const s = { temperature: 1.5, topK: 0, topP: 1, typicalP: 1, repetitionPenalty: 1, seed: 42 };
    const one = await engine.step([{ tokens: prompt(8, 9), position: 0, blockTable: blocks(0, 2), sampling: s }]);
    const again = await engine.step([
      { tokens: prompt(4, 1), position: 0, blockTable: blocks(20, 2), sampling: { ...s, seed: 7 } },
      { tokens: prompt(8, 9), position: 0, blockTable: blocks(0, 2), sampling: s },
    ]);
    assert.equal(again[1]!.token, one[0]!.token);
    const draws = new Set<number>();
    for (let seed = 0; seed < 40; seed++) {
      const [o] = await engine.step([{ tokens: prompt(8, 9), position: 0, blockTable: blocks(0, 2), sampling: { ...s, seed } }]);
      draws.add(o!.token);
    }
    assert.ok(draws.size > 3, `temperature 1.5 should spread draws, got ${draws.size} distinct tokens`);
    // top_k = 1 is greedy whatever the temperature.
    const [greedy] = await engine.step([{ tokens: prompt(8, 9), position: 0, blockTable: blocks(0, 2) }]);
    const [k1] = await engine.step([{ tokens: prompt(8, 9), position: 0, blockTable: blocks(0, 2), sampling: { ...s, topK: 1 } }]);
    assert.equal(k1!.token, greedy!.token);
  });

  it('samples only allowed tokens under a mask and returns raw logprobs', async () => {
    const mask = new Uint32Array(3);
    for (const t of [5, 17, 70]) mask[t >> 5]! |= 1 << (t & 31);
    for (let seed = 0; seed < 20; seed++) {
      const [o] = await engine.step([{ tokens: prompt(6, 2), position: 0, blockTable: blocks(0, 2), mask, sampling: { temperature: 2, seed }, topLogprobs: 2 }]);
      assert.ok([5, 17, 70].includes(o!.token), `token ${o!.token} is masked out`);
      assert.ok(o!.logprob <= 0);
      assert.equal(o!.top!.ids.length, 2);
    }
  });

  it('applies the repetition penalty to seen tokens', async () => {
    const [g] = await engine.step([{ tokens: prompt(6, 3), position: 0, blockTable: blocks(0, 2) }]);
    const [p] = await engine.step([{ tokens: prompt(6, 3), position: 0, blockTable: blocks(0, 2), sampling: { repetitionPenalty: 1e6 }, penaltyTokens: [g!.token] }]);
    assert.notEqual(p!.token, g!.token);
  });

  it('rejects bad batches with clear errors and keeps working', async () => {
    const ok = { tokens: [1, 2, 3], position: 0, blockTable: [0] };
    await assert.rejects(engine.step([{ ...ok, tokens: [1, 500] }]), /outside the vocabulary/);
    await assert.rejects(engine.step([{ ...ok, tokens: [1, 2, 3, 4, 5] }]), /block table has 1 blocks/);
    await assert.rejects(engine.step([{ ...ok, blockTable: [64] }]), /KV block 64 does not exist/);
    await assert.rejects(engine.step([{ ...ok, adapterSlot: 3 }]), /adapter slot 3 is empty/);
    await assert.rejects(engine.step([{ ...ok, adapterSlot: 9 }]), /out of range/);
    await assert.rejects(engine.step([{ ...ok, tokens: [] }]), /no tokens/);
    await assert.rejects(engine.step([{ ...ok, sampling: { topP: 0 } }]), /topP/);
    await assert.rejects(engine.step([{ ...ok, mask: new Uint32Array(3) }]), /allows no token/);
    assert.throws(() => engine.step([{ ...ok, position: 1.5 }]), /position must be an integer/);
    const [o] = await engine.step([ok]);
    assert.ok(o!.token >= 0);
  });

  it('unloads adapters and refuses adapters for another model', async () => {
    const other = await writeRandomModel({ hidden: 48, heads: 4, seed: 3 });
    try {
      await writeRandomAdapter(other, 'wide', { r: 4, alpha: 4, targets: ['q_proj'], seed: 1, hidden: 48 });
      await assert.rejects(engine.loadAdapterDir(2, `${other}/adapters/wide`), /another model|inputs|shape/);
      await engine.loadAdapterDir(2, `${dir}/adapters/a1`);
      engine.unloadAdapter(2);
      await assert.rejects(engine.step([{ tokens: [1], position: 0, blockTable: [0], adapterSlot: 2 }]), /empty/);
    } finally {
      await rm(other, { recursive: true, force: true });
    }
  });
});

describe('sliding window', () => {
  it('makes tokens beyond the receptive field irrelevant (window 4, 2 layers)', async () => {
    const dir = await writeRandomModel({ arch: 'mistral', slidingWindow: 4, seed: 5 });
    const engine = await Engine.open(dir, { numBlocks: 16, blockSize: BS, threads: 1 });
    try {
      const p = prompt(16, 4);
      const q = [...p];
      q[0] = (q[0]! + 1) % 96;
      const [a] = await engine.step([{ tokens: p, position: 0, blockTable: blocks(0, 4), promptLogprobs: true }]);
      const [b] = await engine.step([{ tokens: q, position: 0, blockTable: blocks(4, 4), promptLogprobs: true }]);
      // Position i sees tokens >= i - 2 * (4 - 1); logprob[j] is computed at position j.
      for (let j = 7; j < 15; j++) assert.equal(a!.promptLogprobs![j], b!.promptLogprobs![j], `position ${j}`);
      assert.notEqual(a!.promptLogprobs![1], b!.promptLogprobs![1]);
    } finally {
      engine.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
