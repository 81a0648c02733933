// Continuous batching, LoRAX style. One loop owns the engine: between steps it drops finished
// and cancelled sequences, admits waiting ones whose adapter is resident (a request whose adapter
// is still loading waits; nobody else does), then plans the step (grows KV block tables,
// preempting the newest sequence when the cache is full; chunks prefills under a token budget;
// orders the batch by adapter), runs it over every sequence at once whatever their adapters, and
// absorbs what came back. Every decision is made before the engine runs, so a fake StepRunner
// exercises all of them (scheduler.test.ts).
// Prefix caching: at admission a sequence takes the cached blocks of the longest prefix of its
// tokens that another sequence of the same adapter and tenant computed (block-manager.ts,
// prefix-cache.ts), and its prefill starts after them, as a later prefill chunk would. After each
// step the blocks a sequence completed are committed to the cache.
import type { Sampling, SeqInput, SeqOutput } from '../native/engine.ts';
import type { NativeTopLogprobs } from '../native/addon.d.ts';
import { BlockManager } from './block-manager.ts';
import { BlockHashes, rootHash } from './prefix-cache.ts';
import { biasFor, penaltiesActive, TokenCounts, type Penalties } from './penalties.ts';

/** What the scheduler calls on the engine: one step over a batch (native/engine.ts's Engine is one). */
export interface StepRunner {
  /** One output per input, in order. A rejection fails the sequences of this batch only. */
  step(batch: readonly SeqInput[]): Promise<SeqOutput[]>;
}

export type FinishReason = 'length' | 'eos_token' | 'stop_sequence';

export type SeqEvent =
  | { type: 'scheduled' }
  | { type: 'prefill'; logprobs: Float32Array; top: NativeTopLogprobs[] | null }
  | { type: 'token'; id: number; logprob: number; top: NativeTopLogprobs | null }
  | { type: 'finish'; reason: FinishReason }
  | { type: 'error'; error: Error };

/** What the scheduler needs from the adapter store (adapter-store.ts). */
export interface AdapterSlots {
  /** The engine slot holding `key`, or null while it is not resident (a load is then started). */
  slotFor(key: string): number | null;
  /** False while the adapter is being rotated out for fairness: admit none of its requests. */
  admitting(key: string): boolean;
  /** Running sequences pin their adapter's slot so it is never evicted under them. */
  pin(key: string): void;
  unpin(key: string): void;
  /** Rejects once when the adapter cannot be loaded; waiting requests for it then fail. */
  failure(key: string): Error | null;
}

export interface GenerateParams {
  promptIds: number[];
  /** Adapter key in the store, or null for the base model. */
  adapter: string | null;
  sampling: Sampling;
  maxNewTokens: number;
  /** Token ids that end generation (unless ignoreEos). */
  eosTokenIds: readonly number[];
  ignoreEos: boolean;
  promptLogprobs: boolean;
  topLogprobs: number;
  /** Allowed-token bitset for the next token given those generated so far (structured output). */
  mask?: (generated: readonly number[]) => Uint32Array | undefined;
  /**
   * Keeps cached KV blocks apart beyond the adapter: sequences share prefix blocks only when
   * both their adapter and their salt are equal. The backend passes the caller's tenant, so no
   * tenant can time another's prompts through cache hits, even on the base model.
   */
  cacheSalt?: string | null;
  /** OpenAI's frequency/presence penalties and logit_bias (penalties.ts); absent: none. */
  penalties?: Penalties | null;
}

export interface SchedulerOptions {
  numBlocks: number;
  blockSize: number;
  /** Tokens of prefill per step, summed over the batch. */
  maxBatchPrefillTokens: number;
  /** Sequences per step. */
  maxBatchSize: number;
  /** Positions a sequence may reach (prompt + generated). */
  maxTotalTokens: number;
  /** TGI semantics: with a running batch, admit new requests only when waiting/running >= ratio or ... */
  waitingServedRatio: number;
  /** ... when this many decode steps passed since the last admission. */
  maxWaitingTokens: number;
  /** Share the KV blocks of common prompt prefixes between sequences of one adapter and tenant (default on). */
  prefixCaching?: boolean;
}

export interface SchedulerObserver {
  onStep?(info: { batchSize: number; prefillTokens: number; decodeTokens: number; seconds: number }): void;
  /** An engine step failed (its sequences fail; serving goes on). */
  onStepError?(info: { batchSize: number; prefillTokens: number; error: Error }): void;
  onQueue?(waiting: number, running: number): void;
  onPreempt?(): void;
  /**
   * A sequence was admitted with prefix caching: `queried` tokens were looked up (its prompt,
   * or prompt + generated after a preemption), and the K/V of `hit` of them came from the cache.
   */
  onPrefixCache?(queried: number, hit: number): void;
}

let nextId = 1;

class Sequence {
  readonly id = nextId++;
  readonly tokens: number[];
  readonly promptLen: number;
  /** Tokens whose K/V are in the cache. */
  computed = 0;
  generated = 0;
  blockTable: number[] = [];
  /** Prefix hashes of its full blocks (made on first use). */
  hashes: BlockHashes | null = null;
  /** Leading blocks of blockTable already committed to the prefix cache (or taken from it). */
  committed = 0;
  /** Prompt logprobs are reported once, for the first prefill (not after a preemption). */
  wantPromptLogprobs: boolean;
  promptLp: number[] = [];
  promptTop: NativeTopLogprobs[] = [];
  done = false;
  cancelled = false;
  pinned = false;
  /** Generated-token counts for the frequency/presence penalties (null when none apply). */
  readonly counts: TokenCounts | null;

  constructor(
    readonly params: GenerateParams,
    readonly emit: (e: SeqEvent) => void,
  ) {
    this.tokens = [...params.promptIds];
    this.promptLen = params.promptIds.length;
    this.wantPromptLogprobs = params.promptLogprobs;
    this.counts = penaltiesActive(params.penalties) ? new TokenCounts(this.promptLen) : null;
  }
}

/** A planned step: the batch for the runner and, entry for entry, what each sequence advances by. */
interface StepPlan {
  batch: SeqInput[];
  members: { s: Sequence; chunk: number; sample: boolean }[];
  prefillTokens: number;
  decodeTokens: number;
}

export interface SequenceHandle {
  readonly id: number;
  /** Ends the sequence at the next step boundary, freeing its batch slot and KV blocks. */
  cancel(): void;
}

export class Scheduler {
  readonly blocks: BlockManager;
  readonly prefixCaching: boolean;
  private waiting: Sequence[] = [];
  private running: Sequence[] = [];
  private wake: (() => void) | null = null;
  private stopped = false;
  private stepsSinceAdmit = 0;
  private loop: Promise<void>;

  constructor(
    private readonly runner: StepRunner,
    private readonly adapters: AdapterSlots,
    private readonly opts: SchedulerOptions,
    private readonly observer: SchedulerObserver = {},
  ) {
    this.blocks = new BlockManager(opts.numBlocks, opts.blockSize);
    this.prefixCaching = opts.prefixCaching ?? true;
    this.loop = this.run();
  }

  get queueSize(): number {
    return this.waiting.length;
  }

  get batchSize(): number {
    return this.running.length;
  }

  /** Queues a request; events arrive through `emit` until 'finish' or 'error'. */
  submit(params: GenerateParams, emit: (e: SeqEvent) => void): SequenceHandle {
    if (params.promptIds.length === 0) throw new Error('empty prompt');
    if (params.promptIds.length + 1 > this.opts.maxTotalTokens) throw new Error('prompt too long');
    const seq = new Sequence(params, emit);
    this.waiting.push(seq);
    this.notify();
    return {
      id: seq.id,
      cancel: () => {
        seq.cancelled = true;
        this.notify();
      },
    };
  }

  /** Call when something the loop waits on changed (an adapter finished loading). */
  notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  async close(): Promise<void> {
    this.stopped = true;
    this.notify();
    await this.loop;
    for (const s of [...this.waiting, ...this.running]) this.fail(s, new Error('server shutting down'));
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      const plan = this.schedule();
      if (!plan) {
        await new Promise<void>((r) => (this.wake = r));
        continue;
      }
      if (this.running.length === 0) continue; // preemption emptied the batch: admit again
      const t0 = performance.now();
      let outs: SeqOutput[];
      try {
        outs = await this.runner.step(plan.batch);
      } catch (err) {
        // The engine validated nothing it could not handle would reach it; fail this batch, keep serving.
        this.observer.onStepError?.({ batchSize: plan.batch.length, prefillTokens: plan.prefillTokens, error: err as Error });
        for (const { s } of plan.members) this.fail(s, err as Error);
        continue;
      }
      const { batch, prefillTokens, decodeTokens } = plan;
      this.observer.onStep?.({ batchSize: batch.length, prefillTokens, decodeTokens, seconds: (performance.now() - t0) / 1000 });
      this.absorbStep(plan, outs);
    }
  }

  /**
   * Every decision for the next step, made before the engine runs: drop what ended, admit what
   * may start, make room for each decode token (preempting), and cut prefills to the token
   * budget. Null when nothing is running (the loop then sleeps until notify()).
   */
  private schedule(): StepPlan | null {
    this.reap();
    this.admit();
    this.observer.onQueue?.(this.waiting.length, this.running.length);
    if (this.running.length === 0) return null;
    this.growForDecode();
    return this.batch();
  }

  /** Takes a step's outputs, entry for entry. */
  private absorbStep(plan: StepPlan, outs: readonly SeqOutput[]): void {
    this.stepsSinceAdmit++;
    plan.members.forEach(({ s, chunk, sample }, i) => this.absorb(s, chunk, sample, outs[i]!));
  }

  private finish(s: Sequence): void {
    s.done = true;
    this.blocks.release(s.blockTable);
    if (s.pinned && s.params.adapter) this.adapters.unpin(s.params.adapter);
    s.pinned = false;
  }

  private fail(s: Sequence, error: Error): void {
    if (s.done) return;
    this.finish(s);
    s.emit({ type: 'error', error });
  }

  /** Drops cancelled and finished sequences, and waiting ones whose adapter failed to load. */
  private reap(): void {
    this.running = this.running.filter((s) => {
      if (s.cancelled && !s.done) this.finish(s);
      return !s.done;
    });
    this.waiting = this.waiting.filter((s) => {
      if (s.cancelled) {
        this.finish(s);
        return false;
      }
      const err = s.params.adapter ? this.adapters.failure(s.params.adapter) : null;
      if (err) {
        this.fail(s, err);
        return false;
      }
      return true;
    });
  }

  private admit(): void {
    if (this.waiting.length === 0) return;
    if (this.running.length > 0) {
      // TGI's rule: keep decoding the running batch unless enough requests wait, or they waited long enough.
      const ratioOk = this.waiting.length >= this.opts.waitingServedRatio * this.running.length;
      if (!ratioOk && this.stepsSinceAdmit < this.opts.maxWaitingTokens) return;
    }
    let admitted = false;
    const still: Sequence[] = [];
    for (const s of this.waiting) {
      if (this.running.length >= this.opts.maxBatchSize) {
        still.push(s);
        continue;
      }
      const key = s.params.adapter;
      if (key !== null && (!this.adapters.admitting(key) || this.adapters.slotFor(key) === null)) {
        still.push(s); // its adapter is loading (or rotating out): it waits, the rest go on
        continue;
      }
      if (!this.reserve(s)) {
        still.push(s);
        continue;
      }
      if (key !== null) {
        this.adapters.pin(key);
        s.pinned = true;
      }
      this.running.push(s);
      admitted = true;
      s.emit({ type: 'scheduled' });
    }
    this.waiting = still;
    if (admitted) this.stepsSinceAdmit = 0;
  }

  /**
   * Reserves the whole prompt (plus the first generated token) at admission; decode grows the
   * table later. With prefix caching the table starts with the cached blocks of the longest
   * cached prefix, and the prefill starts after them. A request for prompt logprobs computes
   * its whole prompt: a cached block's logprobs were never kept.
   */
  private reserve(s: Sequence): boolean {
    const want = s.tokens.length + 1;
    if (!this.prefixCaching || s.wantPromptLogprobs) return this.blocks.ensure(s.blockTable, want);
    // The last token always runs again, even when every block is cached: its logits give the next token.
    const shareable = Math.floor((s.tokens.length - 1) / this.opts.blockSize);
    const prefix = this.blocks.match(this.hashesOf(s).upTo(s.tokens, shareable), shareable);
    if (!this.blocks.ensureWithPrefix(s.blockTable, prefix, want)) return false;
    s.computed = prefix.length * this.opts.blockSize;
    s.committed = prefix.length;
    this.observer.onPrefixCache?.(s.tokens.length, s.computed);
    return true;
  }

  private hashesOf(s: Sequence): BlockHashes {
    s.hashes ??= new BlockHashes(rootHash(s.params.adapter, s.params.cacheSalt ?? null), this.opts.blockSize);
    return s.hashes;
  }

  /** Commits the blocks a sequence has filled and computed since the last step. */
  private commitBlocks(s: Sequence): void {
    if (!this.prefixCaching) return;
    const full = Math.floor(s.computed / this.opts.blockSize);
    if (full <= s.committed) return;
    const hashes = this.hashesOf(s).upTo(s.tokens, full);
    for (let i = s.committed; i < full; i++) this.blocks.commit(s.blockTable[i]!, hashes[i]!);
    s.committed = full;
  }

  /** Makes room for every decode token, preempting the newest sequences when blocks run out. */
  private growForDecode(): void {
    for (let i = 0; i < this.running.length; i++) {
      const s = this.running[i]!;
      if (s.computed < s.tokens.length - 1) continue; // still in prefill: prompt blocks are reserved
      while (!this.blocks.ensure(s.blockTable, s.tokens.length)) {
        const victim = this.running[this.running.length - 1]!;
        this.preempt(victim);
        this.running.pop();
        if (victim === s) return;
      }
    }
  }

  /**
   * Recompute-style preemption: the sequence loses its KV and goes back to the front of the
   * queue. Its committed blocks stay cached while idle, so unless they are reclaimed meanwhile
   * it takes them back when it is admitted again.
   */
  private preempt(s: Sequence): void {
    this.blocks.release(s.blockTable);
    if (s.generated === 0) {
      s.promptLp = [];
      s.promptTop = [];
    }
    if (s.pinned && s.params.adapter) this.adapters.unpin(s.params.adapter);
    s.pinned = false;
    s.computed = 0;
    s.committed = 0;
    this.waiting.unshift(s);
    this.observer.onPreempt?.();
  }

  /** Which running sequences take part, and how much of each prefill fits the step's token budget. */
  private batch(): StepPlan {
    let prefillBudget = this.opts.maxBatchPrefillTokens;
    const batch: SeqInput[] = [];
    const members: StepPlan['members'] = [];
    let prefillTokens = 0;
    let decodeTokens = 0;
    // Sequences of one adapter side by side: the engine then reads that adapter once for all of them.
    const ordered = [...this.running].sort((a, b) => (a.params.adapter ?? '').localeCompare(b.params.adapter ?? ''));
    for (const s of ordered) {
      const remaining = s.tokens.length - s.computed;
      const isDecode = remaining === 1 && s.generated > 0;
      let chunk = remaining;
      if (!isDecode) {
        if (prefillBudget <= 0) continue; // waits for the next step's budget
        chunk = Math.min(remaining, prefillBudget);
        prefillBudget -= chunk;
        prefillTokens += chunk;
      } else {
        decodeTokens++;
      }
      const end = s.computed + chunk;
      const sample = end === s.tokens.length;
      const p = s.params;
      const scoring = s.wantPromptLogprobs && !isDecode;
      batch.push({
        tokens: s.tokens.slice(s.computed, end),
        position: s.computed,
        blockTable: s.blockTable,
        adapterSlot: p.adapter === null ? -1 : this.adapters.slotFor(p.adapter) ?? -1,
        promptLogprobs: scoring,
        nextToken: scoring && !sample ? s.tokens[end]! : -1,
        sample,
        topLogprobs: p.topLogprobs,
        sampling: p.sampling,
        penaltyTokens: p.sampling.repetitionPenalty !== 1 ? s.tokens : undefined,
        bias: sample && s.counts ? biasFor(p.penalties!, s.counts.update(s.tokens).counts) : undefined,
        mask: sample && p.mask ? p.mask(s.tokens.slice(s.promptLen)) : undefined,
      });
      members.push({ s, chunk, sample });
    }
    return { batch, members, prefillTokens, decodeTokens };
  }

  /** Takes one sequence's output of a step: its prompt logprobs, its new token, whether it is done. */
  private absorb(s: Sequence, chunk: number, sample: boolean, out: SeqOutput): void {
    if (s.done || s.cancelled) return;
    const prefilling = s.wantPromptLogprobs && s.generated === 0;
    s.computed += chunk;
    this.commitBlocks(s);
    if (prefilling && out.promptLogprobs) {
      s.promptLp.push(...out.promptLogprobs);
      if (out.promptTop) s.promptTop.push(...out.promptTop);
    }
    if (!sample) return;
    if (prefilling) {
      s.wantPromptLogprobs = false;
      s.emit({ type: 'prefill', logprobs: Float32Array.from(s.promptLp), top: s.promptTop.length ? s.promptTop : null });
    }
    const p = s.params;
    s.tokens.push(out.token);
    s.generated++;
    s.emit({ type: 'token', id: out.token, logprob: out.logprob, top: out.top });
    if (s.cancelled) return; // the listener stopped it (stop sequence) while handling the token
    let reason: FinishReason | null = null;
    if (!p.ignoreEos && p.eosTokenIds.includes(out.token)) reason = 'eos_token';
    else if (s.generated >= p.maxNewTokens || s.tokens.length >= this.opts.maxTotalTokens) reason = 'length';
    if (reason) {
      this.finish(s);
      s.emit({ type: 'finish', reason });
    }
  }

  /** Ends a sequence from outside (a stop sequence matched in its text): no token after this one. */
  stopSequence(handle: SequenceHandle): void {
    const s = [...this.running, ...this.waiting].find((x) => x.id === handle.id);
    if (!s || s.done || s.cancelled) return;
    s.cancelled = true; // freed at the next step boundary, like a disconnect
    s.emit({ type: 'finish', reason: 'stop_sequence' });
    this.notify();
  }
}
