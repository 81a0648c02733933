// A compiled grammar bound to a vocabulary: allowed-token masks per DFA state (computed by one
// pruned walk of the token trie, cached and shared by every sequence using the grammar), and
// per-sequence matchers that advance one int of state per generated token.
//
// Two guarantees on top of the byte automaton:
// - No dead ends with this vocabulary: a token is allowed only if the state it leads to can still
//   be completed with tokens. A state from which the end is reachable through bytes that are each
//   a token by themselves (`dist` finite) is completable; when the vocabulary lacks some bytes as
//   single tokens (byte fallbacks listed as special tokens) and the automaton needs them, other
//   states are proven completable by a bounded search over tokens, or treated as dead.
// - Finishing within the token budget: `dist(s)` (the fewest single-byte tokens to an accepting
//   state) bounds the tokens still needed. A matcher with a budget allows, once the budget gets
//   near, only tokens after which dist <= the tokens left; so a value that fits when generation
//   starts always closes before max_new_tokens.
import { DEAD, INF, LazyDfa, singleByteDistances, type Nfa } from './automaton.ts';
import { SchemaError } from './schema.ts';
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
/** Completability search (states whose completion needs multi-byte tokens): DFA states expanded, trie nodes visited. */
const LIVE_SEARCH_STATES = 1024;
const LIVE_SEARCH_NODES = 4_000_000;
/** Budget-filtered masks kept per grammar. */
const STEER_CACHE = 4096;
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
    /** Check that next states are completable (false: raw successors, for the completability search). */
    private readonly live = true,
    /** Allow only tokens after which dist <= limit (budget steering). */
    private readonly limit = INF,
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
      if (k < e && ((this.live && !g.allLive) || this.limit < INF)) {
        // May determinize rows (reallocating the table).
        const ok = (!this.live || g.isLive(s)) && (this.limit >= INF || g.dist(s) <= this.limit);
        T = dfa.trans;
        if (!ok) k = e;
      }
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

  /** Every state an allowed token leads to. */
  allNext(): number[] {
    return this.touched;
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
  /** Fewest single-byte-token steps from each NFA state to the accepting one (INF: none). */
  private readonly nfaDist: Int32Array;
  /** Fewest bytes from each NFA state to the accepting one, any bytes (the search's guide). */
  private nfaDistAny: Int32Array | null = null;
  /** Every NFA state has a finite dist: every DFA state is completable, no checks needed. */
  readonly allLive: boolean;
  /** DFA state → dist (-1: not computed). */
  private distOf = new Int32Array(64).fill(-1);
  /** DFA state → 0 unknown, 1 completable, 2 not (or not proven). */
  private liveOf = new Uint8Array(64);
  /** Per mask key: the largest dist after an allowed token, minus the dist of the walked state. */
  private nextDistDelta: number[] = [];
  /** Budget-filtered masks by `state:limit`. */
  private steered = new Map<string, Uint32Array>();
  private readonly shareByLabel: boolean;

  constructor(
    readonly nfa: Nfa,
    readonly vocab: Vocab,
    /** Whether masks may be shared between states with equal labels (needs horizon >= vocab.maxTokenBytes). */
    shareByLabel: boolean,
  ) {
    this.dfa = new LazyDfa(nfa);
    const trie = vocab.trie;
    this.nodeClass = new Uint8Array(trie.size);
    for (let i = 1; i < trie.size; i++) this.nodeClass[i] = nfa.classOf[trie.byte[i]!]!;
    // Computed with the NFA (on the compile worker) when the compile was given the vocabulary's single bytes.
    this.nfaDist = nfa.singleDist ?? singleByteDistances(nfa, vocab.singleByte);
    this.allLive = this.nfaDist.every((d) => d < INF);
    // Completability depends on more than the labels promise (what lies past the horizon).
    this.shareByLabel = shareByLabel && this.allLive;
  }

  /** Fewest tokens (each one byte) from DFA state `s` to an accepting state; INF when none. */
  dist(s: number): number {
    if (s >= this.distOf.length) {
      const d = new Int32Array(Math.max(this.distOf.length * 2, s + 1)).fill(-1);
      d.set(this.distOf);
      this.distOf = d;
    }
    let d = this.distOf[s]!;
    if (d >= 0) return d;
    d = INF;
    for (const q of this.dfa.nfaStates(s)) d = Math.min(d, this.nfaDist[q]!);
    this.distOf[s] = d;
    return d;
  }

  /** Whether some token sequence leads from `s` to an accepting state (see the file comment). */
  isLive(s: number): boolean {
    if (this.allLive || this.dist(s) < INF) return true;
    if (s >= this.liveOf.length) {
      const l = new Uint8Array(Math.max(this.liveOf.length * 2, s + 1));
      l.set(this.liveOf);
      this.liveOf = l;
    }
    if (this.liveOf[s] === 0) this.searchLive(s);
    return this.liveOf[s] === 1;
  }

  private setLive(s: number, v: 1 | 2): void {
    if (s >= this.liveOf.length) {
      const l = new Uint8Array(Math.max(this.liveOf.length * 2, s + 1));
      l.set(this.liveOf);
      this.liveOf = l;
    }
    this.liveOf[s] = v;
  }

  /** Fewest bytes (any) from DFA state `s` to acceptance. */
  private distAny(s: number): number {
    const all = (this.nfaDistAny ??= singleByteDistances(this.nfa, new Uint8Array(256).fill(1)));
    let d = INF;
    for (const q of this.dfa.nfaStates(s)) d = Math.min(d, all[q]!);
    return d;
  }

  /**
   * Best-first over token transitions from `s` (nearest to the end in bytes first) until a state
   * with finite dist (or one already proven) turns up: the states on that path are completable.
   * A search that runs out of states proves all it saw dead; one cut short by its bounds marks
   * only `s` dead (unproven, so never entered).
   */
  private searchLive(s: number): void {
    const parent = new Map<number, number>([[s, -1]]);
    const open: [number, number][] = [[this.distAny(s), s]];
    const seen: number[] = [];
    let nodes = 0;
    while (open.length) {
      if (seen.length >= LIVE_SEARCH_STATES || nodes > LIVE_SEARCH_NODES) {
        this.setLive(s, 2);
        return;
      }
      // The open list stays small: a linear scan for the minimum is enough.
      let bi = 0;
      for (let i = 1; i < open.length; i++) if (open[i]![0] < open[bi]![0]) bi = i;
      const [, q] = open[bi]!;
      open[bi] = open[open.length - 1]!;
      open.pop();
      seen.push(q);
      const w = new Walk(this, q, false);
      w.run(Infinity);
      nodes += w.visited;
      for (const t of w.allNext()) {
        if (parent.has(t)) continue;
        parent.set(t, q);
        if (this.dist(t) < INF || (t < this.liveOf.length && this.liveOf[t] === 1)) {
          for (let x = t; x >= 0; x = parent.get(x)!) this.setLive(x, 1);
          return;
        }
        if (t < this.liveOf.length && this.liveOf[t] === 2) continue;
        open.push([this.distAny(t), t]);
      }
    }
    for (const x of seen) this.setLive(x, 2);
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
    let maxNext = 0;
    for (const t of w.allNext()) maxNext = Math.max(maxNext, this.dist(t));
    this.nextOf[s] = w.nextStates();
    this.stats.nodesVisited += w.visited;
    const k = this.maskKey(s);
    this.nextDistDelta[k] = Math.max(this.nextDistDelta[k] ?? 0, maxNext >= INF ? INF : maxNext - this.dist(s));
    const have = this.masks[k];
    if (have) return have;
    if (background) this.stats.precomputed++;
    this.masks[k] = out;
    cachedBytes += out.byteLength;
    live.add(this);
    if (cachedBytes > MASK_BUDGET_BYTES) evictMasks(this);
    return out;
  }

  /**
   * The mask of `s` when at most `left` tokens may follow the next one: unchanged while every
   * allowed token keeps dist within `left`, else only the tokens that do (EOS when accepting).
   * When even the shortest completion no longer fits, unchanged: the text ends by length.
   */
  maskWithin(s: number, left: number): Uint32Array {
    const m = this.mask(s);
    const d = this.dist(s);
    if (d >= INF || d > left + 1) return m;
    const delta = this.nextDistDelta[this.maskKey(s)];
    if (delta !== undefined && delta < INF && d + delta <= left) return m;
    const key = `${s}:${left}`;
    let f = this.steered.get(key);
    if (!f) {
      const w = new Walk(this, s, true, left);
      w.run(Infinity);
      f = w.out;
      if (this.dfa.accepting[s]) for (let i = 0; i < f.length; i++) f[i]! |= this.vocab.eosMask[i]!;
      if (this.steered.size >= STEER_CACHE) this.steered.clear();
      this.steered.set(key, f);
    }
    return f;
  }

  /** Drops every cached mask (memory pressure); they are recomputed on demand. */
  dropMasks(): void {
    for (const m of this.masks) if (m) cachedBytes -= m.byteLength;
    this.masks = [];
    this.steered.clear();
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

  matcher(budget: number | null = null): Matcher {
    return new Matcher(this, budget);
  }
}

/**
 * The grammar of a compiled schema for a vocabulary; refuses (SchemaError) a schema whose every
 * value needs text the vocabulary cannot write — checked before any generation starts.
 */
export function bindGrammar(nfa: Nfa, vocab: Vocab, shareByLabel: boolean): Grammar {
  const g = new Grammar(nfa, vocab, shareByLabel);
  if (!g.isLive(g.start)) {
    const missing = vocab.singleByte.filter((x) => x === 0).length;
    throw new SchemaError([
      `the schema needs text this tokenizer cannot write with regular tokens: ${missing} byte values have no token of their own (byte fallbacks listed as special tokens, which decoding drops), and no vocabulary entry spells what the schema requires (e.g. a non-ASCII "enum"/"const" value or property name)`,
    ]);
  }
  return g;
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

  constructor(
    readonly grammar: Grammar,
    /** max_new_tokens of the sequence (null: no budget steering). */
    readonly budget: number | null = null,
  ) {
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
    if (this.budget !== null) return this.grammar.maskWithin(this.state, this.budget - generated.length - 1);
    return this.grammar.mask(this.state);
  }
}
