// A compiled grammar bound to a vocabulary: allowed-token masks per DFA state (computed by one
// pruned walk of the token trie, cached and shared by every sequence using the grammar), and
// per-sequence matchers that advance one int of state per generated token.
import { DEAD, LazyDfa, type Nfa } from './automaton.ts';
import type { Vocab } from './vocab.ts';

export interface GrammarStats {
  /** Masks computed by a trie walk on the critical path (cache misses). */
  walks: number;
  /** Masks computed ahead of need, in the background. */
  precomputed: number;
  /** Trie nodes visited by all walks. */
  nodesVisited: number;
  /** Mask requests answered from the cache. */
  hits: number;
  /** Milliseconds spent in critical-path walks. */
  walkMs: number;
}

/** Bytes of cached masks, over all grammars, before the least recently used grammars drop theirs. */
const MASK_BUDGET_BYTES = 256 * 1024 * 1024;
const live = new Set<Grammar>();
let cachedBytes = 0;
let tick = 0;

/** Successor states kept per walked state, most tokens first (what background precompute looks at). */
const NEXT_STATES = 8;
/** Below this many trie nodes a walk costs microseconds: nothing to gain from precomputing. */
const PRECOMPUTE_MIN_TRIE = 20_000;

/**
 * One pass over the token trie from a DFA state: allowed tokens, and how many tokens lead to
 * each next state. Resumable, so the background precompute can run it in small time slices.
 */
class Walk {
  private i = 1;
  readonly out: Uint32Array;
  private readonly st: Int32Array;
  private counts: Int32Array;
  private touched: number[] = [];
  visited = 0;

  constructor(
    private readonly g: Grammar,
    readonly start: number,
  ) {
    this.out = new Uint32Array(g.vocab.words);
    this.st = new Int32Array(g.vocab.trie.maxDepth + 1);
    this.counts = new Int32Array(Math.max(64, g.dfa.size * 2));
  }

  /** Runs until done (true) or past `deadline` (performance.now() ms; checked every few thousand nodes). */
  run(deadline: number): boolean {
    const g = this.g;
    const trie = g.vocab.trie;
    const { depth, next, tokStart, tokIds } = trie;
    const cls = g.nodeClass;
    const dfa = g.dfa;
    const C = dfa.numClasses;
    // st[d]: row offset (state * C) of the DFA state after the first d bytes of the current node.
    const st = this.st;
    const out = this.out;
    dfa.expand(this.start);
    st[0] = this.start * C;
    let T = dfa.trans;
    let counts = this.counts;
    const n = trie.size;
    let i = this.i;
    let visited = 0;
    while (i < n) {
      visited++;
      if ((visited & 8191) === 0 && deadline !== Infinity && performance.now() > deadline) break;
      const d = depth[i]!;
      const s = T[st[d - 1]! + cls[i]!]!;
      if (s < 0) {
        if (s === -2) {
          // Row not computed yet: determinize it, then look again.
          dfa.expand(st[d - 1]! / C);
          T = dfa.trans;
          visited--;
          continue;
        }
        i = next[i]!;
        continue;
      }
      st[d] = s * C;
      let k = tokStart[i]!;
      const e = tokStart[i + 1]!;
      if (k < e) {
        if (s >= counts.length) {
          const c = new Int32Array(Math.max(counts.length * 2, s + 1));
          c.set(counts);
          counts = this.counts = c;
        }
        if (counts[s] === 0) this.touched.push(s);
        counts[s]! += e - k;
        for (; k < e; k++) {
          const t = tokIds[k]!;
          out[t >>> 5]! |= 1 << (t & 31);
        }
      }
      i++;
    }
    this.i = i;
    this.visited += visited;
    return i >= n;
  }

  /** Next states by number of tokens leading there, most first. */
  nextStates(): Int32Array {
    const c = this.counts;
    const top = this.touched.sort((a, b) => c[b]! - c[a]!).slice(0, NEXT_STATES);
    return Int32Array.from(top);
  }
}

/** Masks of likely next states, computed while the engine runs a step (the JS thread is idle then). */
const precompute = {
  enabled: true,
  /** Longest slice of background work before yielding to the event loop. */
  sliceMs: 0.5,
  minTrieNodes: PRECOMPUTE_MIN_TRIE,
  queue: [] as { g: Grammar; s: number }[],
  current: null as { g: Grammar; w: Walk } | null,
  scheduled: false,
};

/**
 * Turns background precompute on or off (benchmarks compare both), and sets the trie size from
 * which it is used; returns the previous on/off setting.
 */
export function setPrecompute(enabled: boolean, minTrieNodes = PRECOMPUTE_MIN_TRIE): boolean {
  const was = precompute.enabled;
  precompute.enabled = enabled;
  precompute.minTrieNodes = minTrieNodes;
  if (!enabled) {
    for (const { g } of precompute.queue) g.queued.clear();
    precompute.queue.length = 0;
    precompute.current = null;
  }
  return was;
}

/** Runs queued background work now, for up to `ms` (tests and benchmarks; the server uses setImmediate). */
export function runPrecompute(ms: number): void {
  const deadline = performance.now() + ms;
  while (performance.now() < deadline && (precompute.current || precompute.queue.length)) {
    if (!precompute.current) {
      const { g, s } = precompute.queue.shift()!;
      if (g.hasMask(s)) {
        g.queued.delete(s);
        continue;
      }
      precompute.current = { g, w: new Walk(g, s) };
    }
    const { g, w } = precompute.current;
    if (w.run(deadline)) {
      precompute.current = null;
      g.queued.delete(w.start);
      g.store(w, true);
    }
  }
}

function schedulePrecompute(): void {
  if (precompute.scheduled || !precompute.enabled) return;
  precompute.scheduled = true;
  setImmediate(() => {
    precompute.scheduled = false;
    runPrecompute(precompute.sliceMs);
    if (precompute.current || precompute.queue.length) schedulePrecompute();
  });
}

export class Grammar {
  readonly dfa: LazyDfa;
  readonly stats: GrammarStats = { walks: 0, precomputed: 0, nodesVisited: 0, hits: 0, walkMs: 0 };
  /** Byte class of each trie node's byte. */
  readonly nodeClass: Uint8Array;
  /** DFA state → mask key (interned label set), -1 until needed. */
  private maskKeyOf = new Int32Array(64).fill(-1);
  private maskKeys = new Map<string, number>();
  private masks: (Uint32Array | undefined)[] = [];
  /** DFA state → its likeliest next states (known for states walked from). */
  private nextOf: (Int32Array | undefined)[] = [];
  /** States waiting in the background queue. */
  readonly queued = new Set<number>();
  lastUsed = 0;

  constructor(
    readonly nfa: Nfa,
    readonly vocab: Vocab,
    /** Whether masks may be shared between states with equal labels (needs horizon >= vocab.maxTokenBytes). */
    private readonly shareByLabel: boolean,
  ) {
    this.dfa = new LazyDfa(nfa);
    const trie = vocab.trie;
    this.nodeClass = new Uint8Array(trie.size);
    for (let i = 1; i < trie.size; i++) this.nodeClass[i] = nfa.classOf[trie.byte[i]!]!;
  }

  get start(): number {
    return this.dfa.start;
  }

  /** Key under which the mask of DFA state `s` is cached. */
  private maskKey(s: number): number {
    if (s >= this.maskKeyOf.length) {
      const m = new Int32Array(Math.max(this.maskKeyOf.length * 2, s + 1)).fill(-1);
      m.set(this.maskKeyOf);
      this.maskKeyOf = m;
    }
    let k = this.maskKeyOf[s]!;
    if (k >= 0) return k;
    let key: string;
    if (this.shareByLabel) {
      const labels = this.nfa.labels;
      const set = new Set<number>();
      for (const q of this.dfa.nfaStates(s)) set.add(labels[q]!);
      key = `${this.dfa.accepting[s]}|${[...set].sort((a, b) => a - b).join(',')}`;
    } else key = String(s);
    k = this.maskKeys.get(key) ?? this.maskKeys.size;
    this.maskKeys.set(key, k);
    this.maskKeyOf[s] = k;
    return k;
  }

  hasMask(s: number): boolean {
    return this.masks[this.maskKey(s)] !== undefined;
  }

  /** Allowed tokens in DFA state `s` (EOS when the value may end here). Never all-zero. */
  mask(s: number): Uint32Array {
    this.lastUsed = ++tick;
    const k = this.maskKey(s);
    let m = this.masks[k];
    if (m) this.stats.hits++;
    else {
      const t0 = performance.now();
      const w = new Walk(this, s);
      w.run(Infinity);
      m = this.store(w, false);
      this.stats.walks++;
      this.stats.walkMs += performance.now() - t0;
    }
    if (precompute.enabled && this.vocab.trie.size >= precompute.minTrieNodes) this.speculate(s);
    return m;
  }

  /** Queues the likely next states of `s` whose masks are not cached yet. */
  private speculate(s: number): void {
    const next = this.nextOf[s];
    if (!next) return;
    let queued = false;
    for (const t of next) {
      if (this.queued.has(t) || this.hasMask(t)) continue;
      this.queued.add(t);
      precompute.queue.push({ g: this, s: t });
      queued = true;
    }
    if (queued) schedulePrecompute();
  }

  /** Finishes a walk into the mask cache. */
  store(w: Walk, background: boolean): Uint32Array {
    const out = w.out;
    const s = w.start;
    if (this.dfa.accepting[s]) {
      const eos = this.vocab.eosMask;
      for (let i = 0; i < out.length; i++) out[i]! |= eos[i]!;
    }
    let any = false;
    for (let i = 0; i < out.length && !any; i++) if (out[i] !== 0) any = true;
    // No token can continue (the vocabulary lacks the bytes the grammar needs): end the text
    // rather than fail the step; the output is then cut short, like a length stop.
    if (!any) out.set(this.vocab.eosMask);
    this.nextOf[s] = w.nextStates();
    this.stats.nodesVisited += w.visited;
    const k = this.maskKey(s);
    const have = this.masks[k];
    if (have) return have;
    if (background) this.stats.precomputed++;
    this.masks[k] = out;
    cachedBytes += out.byteLength;
    live.add(this);
    if (cachedBytes > MASK_BUDGET_BYTES) evictMasks(this);
    return out;
  }

  /** Drops every cached mask (memory pressure); they are recomputed on demand. */
  dropMasks(): void {
    for (const m of this.masks) if (m) cachedBytes -= m.byteLength;
    this.masks = [];
    live.delete(this);
  }

  /** DFA state after token `id` from `s` (DEAD when the token does not fit). */
  advance(s: number, id: number): number {
    const b = id >= 0 && id < this.vocab.modelVocabSize ? this.vocab.bytes[id] : null;
    if (!b) return DEAD;
    return this.dfa.run(s, b);
  }

  /** Whether nothing may follow `s` but the end of the text. */
  isComplete(s: number): boolean {
    return this.dfa.accepting[s] === 1 && !this.dfa.hasNext(s);
  }

  matcher(): Matcher {
    return new Matcher(this);
  }
}

function evictMasks(keep: Grammar): void {
  const order = [...live].filter((g) => g !== keep).sort((a, b) => a.lastUsed - b.lastUsed);
  for (const g of order) {
    g.dropMasks();
    if (cachedBytes <= MASK_BUDGET_BYTES / 2) return;
  }
  keep.dropMasks();
}

/**
 * One sequence's position in the grammar. `mask(generated)` takes the sequence's generated token
 * ids so far (as the scheduler passes them), advances over the ones it has not seen, and returns
 * the allowed-token bitset for the next step. Calls with the same ids (a preempted sequence
 * recomputed) return the same mask; a shorter list restarts from the beginning.
 */
export class Matcher {
  private state: number;
  private consumed = 0;
  /** EOS was generated (only EOS may follow, e.g. with ignore_eos), or a token did not fit. */
  private ended = false;

  constructor(readonly grammar: Grammar) {
    this.state = grammar.start;
  }

  get dfaState(): number {
    return this.state;
  }

  get finished(): boolean {
    return this.ended || this.grammar.isComplete(this.state);
  }

  /** Advances over one token; false if the grammar does not allow it (the matcher then ends). */
  accept(id: number): boolean {
    this.consumed++;
    if (this.ended) return true;
    if (this.grammar.vocab.eosTokenIds.includes(id)) {
      this.ended = true;
      return this.grammar.dfa.accepting[this.state] === 1;
    }
    const s = this.grammar.advance(this.state, id);
    if (s === DEAD) {
      this.ended = true;
      return false;
    }
    this.state = s;
    return true;
  }

  mask(generated: readonly number[]): Uint32Array {
    if (generated.length < this.consumed) {
      this.state = this.grammar.start;
      this.consumed = 0;
      this.ended = false;
    }
    for (let i = this.consumed; i < generated.length; i++) this.accept(generated[i]!);
    if (this.ended) return this.grammar.vocab.eosMask;
    return this.grammar.mask(this.state);
  }
}
