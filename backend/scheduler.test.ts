// The scheduler's decisions without an engine: a fake StepRunner records each batch and answers it
// when the test says so, so every step can be inspected between planning and absorbing (chunked
// prefill under the token budget, preemption of the newest sequence, the waiting/served admission
// ratio, batches ordered by adapter, aborts freeing blocks within one step, adapters that load
// late or fail, engine errors), and prefix caching (which blocks are shared, where prefills start).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SeqInput, SeqOutput } from '../native/engine.ts';
import { GREEDY } from '../native/engine.ts';
import { Scheduler, type AdapterSlots, type GenerateParams, type SchedulerOptions, type SeqEvent, type StepRunner } from './scheduler.ts';

/** One batch as the scheduler handed it over (block tables copied: the scheduler keeps growing its own). */
interface Entry {
  tokens: number[];
  position: number;
  blockTable: number[];
  adapterSlot: number;
  sample: boolean;
  promptLogprobs: boolean;
  nextToken: number;
}

class PendingStep {
  constructor(
    readonly batch: Entry[],
    private readonly resolve: (outs: SeqOutput[]) => void,
    readonly reject: (err: Error) => void,
  ) {}

  /** Answers the step: every sampling entry gets `token(entry)` (default 100 + position). */
  reply(token: (e: Entry) => number = (e) => 100 + e.position + e.tokens.length): void {
    this.resolve(
      this.batch.map((e) => ({
        token: e.sample ? token(e) : -1,
        logprob: -0.25,
        top: null,
        promptLogprobs: e.promptLogprobs ? new Float32Array(e.tokens.length - 1 + (e.nextToken >= 0 ? 1 : 0)).fill(-1) : null,
        promptTop: null,
      })),
    );
  }
}

class FakeRunner implements StepRunner {
  private readonly queue: PendingStep[] = [];
  private waiter: ((p: PendingStep) => void) | null = null;
  steps = 0;

  step(batch: readonly SeqInput[]): Promise<SeqOutput[]> {
    this.steps++;
    return new Promise((resolve, reject) => {
      const entries = batch.map((b) => ({
        tokens: [...b.tokens],
        position: b.position,
        blockTable: [...b.blockTable],
        adapterSlot: b.adapterSlot ?? -1,
        sample: b.sample ?? true,
        promptLogprobs: b.promptLogprobs ?? false,
        nextToken: b.nextToken ?? -1,
      }));
      const p = new PendingStep(entries, resolve, reject);
      const w = this.waiter;
      this.waiter = null;
      if (w) w(p);
      else this.queue.push(p);
    });
  }

  /** The next step the scheduler runs; fails the test if none comes. */
  next(): Promise<PendingStep> {
    const p = this.queue.shift();
    if (p) return Promise.resolve(p);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('the scheduler ran no step')), 2000);
      this.waiter = (step) => {
        clearTimeout(t);
        resolve(step);
      };
    });
  }
}

/** Adapter slots as the store would hand them out, with loads finished or failed by the test. */
class FakeSlots implements AdapterSlots {
  readonly slots = new Map<string, number>();
  readonly pins = new Map<string, number>();
  readonly failures = new Map<string, Error>();
  readonly draining = new Set<string>();
  readonly asked: string[] = [];

  slotFor(key: string): number | null {
    this.asked.push(key);
    return this.slots.get(key) ?? null;
  }
  admitting(key: string): boolean {
    return !this.draining.has(key);
  }
  pin(key: string): void {
    this.pins.set(key, (this.pins.get(key) ?? 0) + 1);
  }
  unpin(key: string): void {
    const n = this.pins.get(key) ?? 0;
    assert.ok(n > 0, `unpin of ${key} without a pin`);
    this.pins.set(key, n - 1);
  }
  failure(key: string): Error | null {
    return this.failures.get(key) ?? null;
  }
}

const OPTS: SchedulerOptions = {
  numBlocks: 64,
  blockSize: 4,
  maxBatchPrefillTokens: 64,
  maxBatchSize: 16,
  maxTotalTokens: 128,
  waitingServedRatio: 0,
  maxWaitingTokens: 20,
  prefixCaching: true,
};

function params(promptLen: number, maxNewTokens: number, adapter: string | null = null, extra: Partial<GenerateParams> = {}): GenerateParams {
  return {
    promptIds: Array.from({ length: promptLen }, (_, i) => 1 + (i % 50)),
    adapter,
    sampling: GREEDY,
    maxNewTokens,
    eosTokenIds: [2],
    ignoreEos: false,
    promptLogprobs: false,
    topLogprobs: 0,
    ...extra,
  };
}

/** A submitted sequence's events, and a promise of how it ended. */
function track(sch: Scheduler, p: GenerateParams) {
  const events: SeqEvent[] = [];
  let done!: (e: SeqEvent) => void;
  const ended = new Promise<SeqEvent>((r) => (done = r));
  const handle = sch.submit(p, (e) => {
    events.push(e);
    if (e.type === 'finish' || e.type === 'error') done(e);
  });
  const tokens = () => events.flatMap((e) => (e.type === 'token' ? [e.id] : []));
  return { handle, events, ended, tokens };
}

function setup(opts: Partial<SchedulerOptions> = {}) {
  const runner = new FakeRunner();
  const slots = new FakeSlots();
  const stats = { preempted: 0, steps: [] as { batchSize: number; prefillTokens: number; decodeTokens: number }[], queue: [] as [number, number][], prefix: [] as [number, number][] };
  const sch = new Scheduler(runner, slots, { ...OPTS, ...opts }, {
    onPreempt: () => stats.preempted++,
    onPrefixCache: (queried, hit) => stats.prefix.push([queried, hit]),
    onStep: ({ batchSize, prefillTokens, decodeTokens }) => stats.steps.push({ batchSize, prefillTokens, decodeTokens }),
    onQueue: (w, r) => stats.queue.push([w, r]),
  });
  return { runner, slots, sch, stats };
}

/** Answers every step until `until` settles; returns the batches it answered. */
async function drive(runner: FakeRunner, until: Promise<unknown>, token?: (e: Entry) => number): Promise<Entry[][]> {
  const batches: Entry[][] = [];
  const over = until.then(() => null);
  for (;;) {
    const step = await Promise.race([runner.next(), over]);
    if (!step) return batches;
    batches.push(step.batch);
    step.reply(token);
  }
}

/** Lets the loop reach its idle wait (reap and unpin happen there, not at the last reply). */
const settle = () => new Promise((r) => setTimeout(r, 5));

describe('Scheduler with a fake step runner', () => {
  it('refuses an empty prompt and one that leaves no room for a token', () => {
    const { sch } = setup({ maxTotalTokens: 8 });
    assert.throws(() => sch.submit(params(0, 1), () => {}), /empty prompt/);
    assert.throws(() => sch.submit(params(8, 1), () => {}), /prompt too long/);
    return sch.close();
  });

  it('chunks prefills under the per-step token budget, shared by the batch; decodes do not count', async () => {
    const { runner, sch, stats } = setup({ maxBatchPrefillTokens: 8 });
    const a = track(sch, params(20, 2));
    const b = track(sch, params(6, 2));
    const batches = await drive(runner, Promise.all([a.ended, b.ended]));
    assert.deepEqual(
      batches.map((batch) => batch.map((e) => [e.position, e.tokens.length, e.sample])),
      [
        [[0, 8, false]], // a takes the whole budget; b is admitted but waits for budget
        [[8, 8, false]],
        [[16, 4, true], [0, 4, false]], // a's last 4 tokens, and b gets the 4 left over
        [[20, 1, true], [4, 2, true]], // a's decode is outside the budget
        [[6, 1, true]], // a finished after 2 tokens
      ],
    );
    assert.deepEqual(stats.steps.map((s) => [s.prefillTokens, s.decodeTokens]), [[8, 0], [8, 0], [8, 0], [2, 1], [0, 1]]);
    assert.deepEqual([(await a.ended).type, a.tokens().length, (await b.ended).type, b.tokens().length], ['finish', 2, 'finish', 2]);
    assert.equal(sch.blocks.used, 0);
    await sch.close();
  });

  it('reserves the prompt at admission and grows the block table one block at a time while decoding', async () => {
    const { runner, sch } = setup({ blockSize: 4 });
    const a = track(sch, params(7, 6));
    const batches = await drive(runner, a.ended);
    // 7 prompt tokens + the first sampled one: 2 blocks; position 8 needs a third.
    assert.deepEqual(batches.map((b) => b[0]!.blockTable.length), [2, 2, 3, 3, 3, 3]);
    assert.equal(sch.blocks.used, 0);
    await sch.close();
  });

  it('preempts the newest sequence when blocks run out; it comes back at position 0 with what it generated, no token lost or repeated', async () => {
    // 6 blocks of 2 tokens; three 3-token prompts reserve 2 blocks each and fill the cache.
    const { runner, slots, sch, stats } = setup({ numBlocks: 6, blockSize: 2, maxTotalTokens: 12 });
    slots.slots.set('x', 0);
    const [a, b, c] = [track(sch, params(3, 4)), track(sch, params(3, 4)), track(sch, params(3, 4, 'x'))];
    const s1 = await runner.next();
    assert.deepEqual(s1.batch.map((e) => e.adapterSlot), [-1, -1, 0]);
    assert.equal(sch.blocks.free, 0);
    s1.reply();
    const s2 = await runner.next(); // position 3 still fits the reserved blocks
    assert.equal(s2.batch.length, 3);
    s2.reply();
    const s3 = await runner.next(); // position 4 needs a third block each: c (newest) goes
    assert.equal(stats.preempted, 1);
    assert.deepEqual(s3.batch.map((e) => [e.adapterSlot, e.position]), [[-1, 4], [-1, 4]]);
    assert.equal(slots.pins.get('x'), 0, 'a preempted sequence unpins its adapter');
    assert.equal(sch.queueSize, 1);
    const cBefore = c.tokens();
    assert.equal(cBefore.length, 2);
    s3.reply();
    const rest = await drive(runner, Promise.all([a.ended, b.ended, c.ended]));
    const back = rest.flat().find((e) => e.adapterSlot === 0)!;
    assert.equal(back.position, 0);
    assert.deepEqual(back.tokens.slice(3), cBefore, 'recomputed over prompt + generated tokens');
    for (const t of [a, b, c]) {
      assert.equal((await t.ended).type, 'finish');
      assert.equal(t.tokens().length, 4);
    }
    // Every sequence sees the tokens a preemption-free run would give (the fake answers by position).
    assert.deepEqual(c.tokens(), a.tokens());
    await settle();
    assert.equal(sch.blocks.used, 0);
    assert.equal(slots.pins.get('x'), 0);
    await sch.close();
  });

  it('a preempted sequence goes back to the front of the queue, ahead of requests still waiting for blocks', async () => {
    // 5 blocks of 2 tokens: a and b take 2 each; c and d wait for blocks. When a grows, b (newest
    // running) is preempted, and must not fall behind c and d, which arrived after it.
    // Without prefix caching: b must come back at position 0 (with it, a's cached prompt blocks serve b).
    const { runner, slots, sch, stats } = setup({ numBlocks: 5, blockSize: 2, maxTotalTokens: 10, prefixCaching: false });
    slots.slots.set('c', 0);
    slots.slots.set('d', 5);
    const seqs = [track(sch, params(3, 3)), track(sch, params(3, 3)), track(sch, params(3, 6, 'c')), track(sch, params(2, 2, 'd'))];
    const batches = await drive(runner, Promise.all(seqs.map((s) => s.ended)));
    assert.equal(stats.preempted, 1);
    const bBack = batches.findIndex((b, i) => i > 0 && b.some((e) => e.adapterSlot === -1 && e.position === 0));
    const dStart = batches.findIndex((b) => b.some((e) => e.adapterSlot === 5));
    assert.ok(bBack > 0 && dStart > 0);
    assert.ok(bBack < dStart, `b re-entered at step ${bBack}, d started at step ${dStart}`);
    for (const t of seqs) assert.equal((await t.ended).type, 'finish');
    await sch.close();
  });

  it('admits into a running batch only once waiting/running reaches the ratio', async () => {
    const { runner, sch } = setup({ waitingServedRatio: 1.2, maxWaitingTokens: 1000 });
    const seqs = [track(sch, params(2, 50))];
    let step = await runner.next();
    seqs.push(track(sch, params(2, 50))); // 1 waiting / 1 running < 1.2
    const sizes: number[] = [];
    for (let i = 0; i < 3; i++) {
      step.reply();
      step = await runner.next();
      sizes.push(step.batch.length);
    }
    seqs.push(track(sch, params(2, 50))); // 2 / 1 >= 1.2
    step.reply();
    step = await runner.next();
    sizes.push(step.batch.length);
    assert.deepEqual(sizes, [1, 1, 1, 3]);
    for (const t of seqs) t.handle.cancel();
    step.reply();
    await settle();
    assert.equal(sch.batchSize, 0);
    assert.equal(sch.blocks.used, 0);
    await sch.close();
  });

  it('admits into a running batch after max-waiting-tokens steps even below the ratio', async () => {
    const { runner, sch } = setup({ waitingServedRatio: 100, maxWaitingTokens: 3 });
    const seqs = [track(sch, params(2, 50))];
    let step = await runner.next();
    seqs.push(track(sch, params(2, 50)));
    const sizes: number[] = [];
    for (let i = 0; i < 4; i++) {
      step.reply();
      step = await runner.next();
      sizes.push(step.batch.length);
    }
    assert.deepEqual(sizes, [1, 1, 2, 2], 'admitted once 3 steps ran since the last admission');
    for (const t of seqs) t.handle.cancel();
    step.reply();
    await settle();
    assert.equal(sch.blocks.used, 0);
    await sch.close();
  });

  it('never runs more than max-batch-size sequences', async () => {
    const { runner, sch } = setup({ maxBatchSize: 2 });
    const seqs = [1, 2, 3].map(() => track(sch, params(2, 2)));
    const batches = await drive(runner, Promise.all(seqs.map((s) => s.ended)));
    assert.ok(batches.every((b) => b.length <= 2));
    assert.deepEqual(batches.map((b) => b.length), [2, 2, 1, 1]);
    await sch.close();
  });

  it('orders each batch by adapter, base model first, and pins each adapter once per running sequence', async () => {
    const { runner, slots, sch } = setup();
    slots.slots.set('b', 1);
    slots.slots.set('a', 0);
    const seqs = [track(sch, params(3, 2, 'b')), track(sch, params(4, 2)), track(sch, params(5, 2, 'a')), track(sch, params(6, 2, 'b'))];
    const s1 = await runner.next();
    assert.deepEqual(s1.batch.map((e) => [e.adapterSlot, e.tokens.length]), [[-1, 4], [0, 5], [1, 3], [1, 6]]);
    assert.deepEqual([slots.pins.get('a'), slots.pins.get('b')], [1, 2]);
    s1.reply();
    const s2 = await runner.next();
    assert.deepEqual(s2.batch.map((e) => e.adapterSlot), [-1, 0, 1, 1]);
    s2.reply();
    await Promise.all(seqs.map((s) => s.ended));
    assert.deepEqual([slots.pins.get('a'), slots.pins.get('b')], [0, 0]);
    await sch.close();
  });

  it('a cancelled sequence leaves the batch and frees its blocks before the next step', async () => {
    const { runner, sch } = setup();
    const a = track(sch, params(10, 50));
    const b = track(sch, params(10, 50));
    const s1 = await runner.next();
    assert.equal(s1.batch.length, 2);
    assert.equal(sch.blocks.used, 6);
    a.handle.cancel(); // the client disconnects while the step runs
    s1.reply();
    const s2 = await runner.next();
    assert.equal(s2.batch.length, 1);
    assert.equal(sch.blocks.used, 3, "a's blocks are back in the pool");
    assert.equal(a.tokens().length, 0, 'no token reaches a cancelled sequence');
    assert.equal(b.tokens().length, 1);
    b.handle.cancel();
    s2.reply();
    await settle();
    assert.equal(sch.blocks.used, 0);
    assert.equal(runner.steps, 2);
    await sch.close();
  });

  it('a cancelled waiting request never runs', async () => {
    const { runner, slots, sch } = setup();
    const waiting = track(sch, params(3, 2, 'loading'));
    const base = track(sch, params(3, 2));
    const s1 = await runner.next();
    waiting.handle.cancel();
    slots.slots.set('loading', 1);
    s1.reply();
    const batches = await drive(runner, base.ended);
    assert.ok(batches.flat().every((e) => e.adapterSlot === -1));
    assert.equal(sch.queueSize, 0);
    assert.equal(slots.pins.get('loading'), undefined);
    await sch.close();
  });

  it('a request whose adapter is loading waits without holding others; a failed load fails only its requests', async () => {
    const { runner, slots, sch } = setup();
    const slow = track(sch, params(3, 2, 'slow'));
    const broken = track(sch, params(3, 2, 'broken'));
    const base = track(sch, params(3, 2));
    const s1 = await runner.next();
    assert.deepEqual(s1.batch.map((e) => e.adapterSlot), [-1]);
    slots.failures.set('broken', new Error('adapter "broken": bad config'));
    s1.reply();
    const err = await broken.ended;
    assert.ok(err.type === 'error');
    assert.match(err.error.message, /bad config/);
    const s2 = await runner.next();
    assert.deepEqual(s2.batch.map((e) => e.adapterSlot), [-1]);
    slots.slots.set('slow', 3);
    sch.notify(); // what the store does when a load finishes
    s2.reply();
    await base.ended;
    const s3 = await runner.next();
    assert.deepEqual(s3.batch.map((e) => e.adapterSlot), [3]);
    s3.reply();
    await drive(runner, slow.ended);
    assert.equal((await slow.ended).type, 'finish');
    await sch.close();
  });

  it('holds back new requests for an adapter being rotated out; its running sequences keep going', async () => {
    const { runner, slots, sch } = setup();
    slots.slots.set('a', 0);
    const first = track(sch, params(3, 3, 'a'));
    const s1 = await runner.next();
    slots.draining.add('a');
    const second = track(sch, params(3, 3, 'a'));
    s1.reply();
    const s2 = await runner.next();
    assert.equal(s2.batch.length, 1, 'the new request waits while its adapter drains');
    assert.equal(sch.queueSize, 1);
    slots.draining.delete('a');
    s2.reply();
    const s3 = await runner.next();
    assert.equal(s3.batch.length, 2);
    s3.reply();
    await drive(runner, Promise.all([first.ended, second.ended]));
    await sch.close();
  });

  it('an engine error fails that batch only; the next request is served', async () => {
    const { runner, sch } = setup();
    const a = track(sch, params(3, 2));
    const s1 = await runner.next();
    s1.reject(new Error('device lost'));
    const end = await a.ended;
    assert.ok(end.type === 'error');
    assert.equal(end.error.message, 'device lost');
    assert.equal(sch.blocks.used, 0);
    const b = track(sch, params(3, 2));
    await drive(runner, b.ended);
    assert.equal((await b.ended).type, 'finish');
    await sch.close();
  });

  it('finishes on EOS (unless ignored), at max-total-tokens, and on a stop sequence with no token after it', async () => {
    const { runner, sch } = setup({ maxTotalTokens: 8 });
    const eos = track(sch, params(3, 10));
    (await runner.next()).reply(() => 2);
    assert.deepEqual(await eos.ended, { type: 'finish', reason: 'eos_token' });

    const ignoring = track(sch, params(3, 2, null, { ignoreEos: true }));
    await drive(runner, ignoring.ended, () => 2);
    assert.deepEqual(await ignoring.ended, { type: 'finish', reason: 'length' });
    assert.equal(ignoring.tokens().length, 2);

    const long = track(sch, params(5, 10));
    await drive(runner, long.ended);
    assert.deepEqual(await long.ended, { type: 'finish', reason: 'length' });
    assert.equal(long.tokens().length, 3, 'stops at 8 positions');

    const stopped = track(sch, params(3, 10));
    (await runner.next()).reply();
    const pending = await runner.next(); // its next decode is already planned
    sch.stopSequence(stopped.handle);
    assert.deepEqual(await stopped.ended, { type: 'finish', reason: 'stop_sequence' });
    pending.reply();
    await settle();
    assert.equal(stopped.tokens().length, 1);
    assert.equal(sch.blocks.used, 0);
    await sch.close();
  });

  it('prompt logprobs come once, for the whole prompt, across prefill chunks', async () => {
    const { runner, sch } = setup({ maxBatchPrefillTokens: 4 });
    const a = track(sch, params(10, 1, null, { promptLogprobs: true }));
    const batches = await drive(runner, a.ended);
    // Each chunk also scores the token after it, so no prompt position is skipped at a chunk edge.
    assert.deepEqual(batches.map((b) => [b[0]!.tokens.length, b[0]!.promptLogprobs, b[0]!.nextToken]), [[4, true, 5], [4, true, 9], [2, true, -1]]);
    const prefill = a.events.filter((e) => e.type === 'prefill');
    assert.equal(prefill.length, 1);
    assert.ok(prefill[0]!.type === 'prefill');
    assert.equal(prefill[0]!.logprobs.length, 9, 'one logprob per prompt token after the first');
    await sch.close();
  });
});

/** Prompt `ids` (distinct from params()'s 1, 2, 3, ... prompts). */
const withIds = (ids: number[], maxNewTokens: number, adapter: string | null = null, extra: Partial<GenerateParams> = {}) => ({ ...params(1, maxNewTokens, adapter, extra), promptIds: ids });
const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

describe('Scheduler prefix caching', () => {
  it('a later prompt with a cached prefix holds the same blocks and starts its prefill after them; its tokens do not change', async () => {
    const { runner, sch, stats } = setup({ blockSize: 4 });
    const system = range(10, 10); // 2 full blocks + 2 tokens
    const a = track(sch, withIds([...system, 40, 41], 3));
    const aBatches = await drive(runner, a.ended);
    const aBlocks = aBatches[0]![0]!.blockTable;
    const b = track(sch, withIds([...system, 50, 51, 52], 3));
    const bBatches = await drive(runner, b.ended);
    const first = bBatches[0]![0]!;
    assert.equal(first.position, 8, 'two cached blocks: the prefill starts at 8');
    assert.deepEqual(first.tokens, [18, 19, 50, 51, 52]);
    assert.deepEqual(first.blockTable.slice(0, 2), aBlocks.slice(0, 2));
    assert.notEqual(first.blockTable[2], aBlocks[2], 'the partial third block is never shared');
    assert.deepEqual(stats.prefix, [[12, 0], [13, 8]]);
    // The fake answers by position, so a run without the cache gives the same tokens.
    const plain = setup({ blockSize: 4, prefixCaching: false });
    const c = track(plain.sch, withIds([...system, 50, 51, 52], 3));
    const cBatches = await drive(plain.runner, c.ended);
    assert.equal(cBatches[0]![0]!.position, 0);
    assert.deepEqual(b.tokens(), c.tokens());
    assert.deepEqual(plain.stats.prefix, [], 'no lookups with the cache off');
    assert.equal(sch.blocks.used, 0);
    assert.ok(sch.blocks.cached >= 2);
    await Promise.all([sch.close(), plain.sch.close()]);
  });

  it('a prompt cached to its end still runs its last token (whole last block when it is full) for logits to sample from', async () => {
    const { runner, sch, stats } = setup({ blockSize: 4 });
    for (const len of [9, 8]) {
      const ids = range(60, len);
      await drive(runner, track(sch, withIds(ids, 2)).ended);
      const again = track(sch, withIds(ids, 2));
      const batches = await drive(runner, again.ended);
      const e = batches[0]![0]!;
      // 9 tokens: blocks [0,4) and [4,8) cached, token 8 runs. 8 tokens: block [4,8) holds the last token: it runs.
      assert.deepEqual([e.position, e.tokens.length, e.sample], len === 9 ? [8, 1, true] : [4, 4, true]);
      assert.equal((await again.ended).type, 'finish');
    }
    assert.deepEqual(stats.prefix, [[9, 0], [9, 8], [8, 4], [8, 4]], 'the 8-token prompt hit its first block, cached by the 9-token one');
    await sch.close();
  });

  it('never shares blocks across adapters or cache salts (tenants), only within one pair', async () => {
    const { runner, slots, sch, stats } = setup({ blockSize: 4 });
    slots.slots.set('x', 0);
    slots.slots.set('y', 1);
    const ids = range(70, 12);
    const kinds: [string | null, string | null][] = [[null, null], ['x', null], ['y', null], [null, 't1'], ['x', 't1'], [null, 't2']];
    const tables: number[][] = [];
    for (const [adapter, salt] of kinds) {
      const t = track(sch, withIds(ids, 1, adapter, { cacheSalt: salt }));
      const batches = await drive(runner, t.ended);
      assert.equal(batches[0]![0]!.position, 0, `${adapter}/${salt} starts from scratch`);
      tables.push(batches[0]![0]!.blockTable.slice(0, 2));
    }
    assert.equal(new Set(tables.flat()).size, kinds.length * 2, 'no block in two tables');
    for (const [adapter, salt] of kinds) {
      const t = track(sch, withIds(ids, 1, adapter, { cacheSalt: salt }));
      const batches = await drive(runner, t.ended);
      assert.equal(batches[0]![0]!.position, 8, `${adapter}/${salt} hits its own blocks`);
    }
    assert.deepEqual(stats.prefix.map(([, hit]) => hit), [0, 0, 0, 0, 0, 0, 8, 8, 8, 8, 8, 8]);
    await sch.close();
  });

  it('a request for prompt logprobs computes its whole prompt, and what it computes is cached for others', async () => {
    const { runner, sch, stats } = setup({ blockSize: 4 });
    const ids = range(80, 9);
    await drive(runner, track(sch, withIds(ids, 1)).ended);
    const scoring = track(sch, withIds(ids, 1, null, { promptLogprobs: true }));
    const batches = await drive(runner, scoring.ended);
    assert.deepEqual([batches[0]![0]!.position, batches[0]![0]!.tokens.length], [0, 9]);
    const prefill = scoring.events.find((e) => e.type === 'prefill');
    assert.ok(prefill?.type === 'prefill');
    assert.equal(prefill.logprobs.length, 8);
    assert.deepEqual(stats.prefix, [[9, 0]], 'not looked up');
    const later = track(sch, withIds(range(80, 10), 1));
    assert.equal((await drive(runner, later.ended))[0]![0]!.position, 8);
    await sch.close();
  });

  it('blocks are committed as chunked prefill and decode fill them, so a request arriving mid-prefill already hits', async () => {
    const { runner, sch } = setup({ blockSize: 4, maxBatchPrefillTokens: 8 });
    const ids = range(90, 20);
    const a = track(sch, withIds(ids, 6));
    (await runner.next()).reply(); // a's first chunk: positions [0, 8)
    const b = track(sch, withIds([...ids.slice(0, 8), 1, 2], 1));
    const batches = await drive(runner, Promise.all([a.ended, b.ended]));
    const bFirst = batches.flat().find((e) => e.tokens.includes(1))!;
    assert.deepEqual([bFirst.position, bFirst.tokens], [8, [1, 2]], 'b starts after the 2 blocks of a computed so far');
    // a's 20 prompt + 6 generated tokens: 25 have K/V, so 6 full blocks, generated tokens included.
    const c = track(sch, withIds([...ids, ...a.tokens().slice(0, 5)], 1));
    assert.equal((await drive(runner, c.ended))[0]![0]!.position, 24);
    await sch.close();
  });

  it('a preempted sequence takes its cached blocks back and resumes after them, no token lost or repeated', async () => {
    // 5 blocks of 2: a and b (different prompts) take 2 each. When both need a third, b (newest)
    // is preempted; its blocks stay cached while idle, and it comes back at position 4 once a ends.
    const { runner, sch, stats } = setup({ numBlocks: 5, blockSize: 2, maxTotalTokens: 10 });
    const a = track(sch, withIds([5, 6, 7], 4));
    const b = track(sch, withIds([8, 9, 10], 4));
    const batches = await drive(runner, Promise.all([a.ended, b.ended]));
    assert.equal(stats.preempted, 1);
    const bBlocks = batches[0]![1]!.blockTable;
    const resumed = batches.slice(2).flat().find((e) => e.blockTable[0] === bBlocks[0])!;
    assert.deepEqual([resumed.position, resumed.tokens.length, resumed.blockTable.slice(0, 2)], [4, 1, bBlocks], 'b resumes on its own cached blocks');
    assert.deepEqual(stats.prefix, [[3, 0], [3, 0], [5, 4]]);
    assert.deepEqual(b.tokens(), a.tokens(), 'the fake answers by position: same tokens as without preemption');
    assert.equal(b.tokens().length, 4);
    await settle();
    assert.equal(sch.blocks.used, 0);
    await sch.close();
  });

  it('a cancelled sequence drops its hold on shared blocks; the other holder keeps them', async () => {
    const { runner, sch } = setup({ blockSize: 4 });
    const ids = range(100, 9);
    await drive(runner, track(sch, withIds(ids, 1)).ended);
    const x = track(sch, withIds(ids, 50));
    const y = track(sch, withIds(ids, 50));
    const s1 = await runner.next();
    assert.deepEqual(s1.batch[0]!.blockTable.slice(0, 2), s1.batch[1]!.blockTable.slice(0, 2));
    x.handle.cancel();
    s1.reply();
    const s2 = await runner.next();
    assert.equal(s2.batch.length, 1);
    assert.equal(sch.blocks.used, 3, "y's two shared blocks and its own third");
    y.handle.cancel();
    s2.reply();
    await settle();
    assert.equal(sch.blocks.used, 0);
    assert.ok(sch.blocks.idleCached >= 2);
    await sch.close();
  });

  it('reclaims idle cached blocks when the pool runs short; requests that lost their prefix recompute it', async () => {
    const { runner, sch, stats } = setup({ numBlocks: 4, blockSize: 2, maxTotalTokens: 8 });
    const p = [range(110, 5), range(120, 5), range(130, 5)];
    for (const ids of p) await drive(runner, track(sch, withIds(ids, 1)).ended);
    assert.ok(sch.blocks.evictions > 0, 'three 3-block prompts do not fit 4 blocks');
    const last = track(sch, withIds(p[2]!, 1));
    assert.equal((await drive(runner, last.ended))[0]![0]!.position, 4, 'the most recent prompt is still cached');
    const first = track(sch, withIds(p[0]!, 1));
    assert.equal((await drive(runner, first.ended))[0]![0]!.position, 0, 'the oldest was reclaimed');
    assert.deepEqual(stats.prefix.map(([, hit]) => hit), [0, 0, 0, 4, 0]);
    await sch.close();
  });
});
