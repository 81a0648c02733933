// Byte automata for structured output: an NFA built by the schema compiler (compile.ts), trimmed,
// then determinized lazily (subset construction one DFA row at a time, on first use). DFA states
// are small integers, so a matcher's whole state is one int and the per-token mask walk
// (grammar.ts) is a tight loop over typed arrays.
//
// Every NFA state left after trimming can reach the accepting state, hence every non-dead DFA
// state can be completed: a token the mask allows never leads into a dead end.

/** Thrown when a grammar grows past its state budget. */
export class AutomatonLimitError extends Error {}

export const DEAD = -1;
/** An unreachable distance. */
export const INF = 0x3fffffff;
const UNKNOWN = -2;

/**
 * Mutable NFA: states with epsilon edges and byte-range edges. `label` supports mask sharing:
 * two states with the same label behave the same on every byte string up to the horizon the
 * compiler chose (see NfaBuilder.enter); by default each state has its own label.
 */
export class NfaBuilder {
  n = 0;
  /** Byte edges, 4 ints each (from, lo, hi, to), and epsilon edges, 2 ints each (from, to). */
  private ed = new Int32Array(4096);
  private E = 0;
  private xd = new Int32Array(2048);
  private X = 0;
  private labelOf: number[] = [];
  /** Label ids by (context id, index in context). */
  private labelIds = new Map<number, number>();
  private ctxIds = new Map<string, number>();
  private ctx: { key: string; id: number; next: number }[] = [{ key: '', id: 0, next: 0 }];

  constructor(readonly maxStates: number) {}

  newState(): number {
    if (this.n >= this.maxStates) throw new AutomatonLimitError(`the schema needs more than ${this.maxStates} automaton states`);
    const c = this.ctx[this.ctx.length - 1]!;
    const key = c.id * 0x100000000 + c.next++;
    let id = this.labelIds.get(key);
    if (id === undefined) {
      id = this.labelIds.size;
      this.labelIds.set(key, id);
    }
    this.labelOf.push(id);
    return this.n++;
  }

  /**
   * Identity of a counted chain (a string's characters, an array's items) built in the current
   * context: derived from the creation order, so identical copies of a sub-grammar get identical
   * chain identities.
   */
  chain(): string {
    const c = this.ctx[this.ctx.length - 1]!;
    return `${c.key}/c${c.next++}`;
  }

  /**
   * States created until the matching leave() are labelled `chain|key` + their creation index
   * in the context. The caller promises that positions of a chain entered with the same key are
   * built identically and behave identically on every byte string up to the mask horizon; the
   * mask of a DFA state then depends only on the labels of its NFA states.
   */
  enter(chain: string, key: string): void {
    const k = `${chain}|${key}`;
    let id = this.ctxIds.get(k);
    if (id === undefined) {
      id = this.ctxIds.size + 1;
      this.ctxIds.set(k, id);
    }
    this.ctx.push({ key: k, id, next: 0 });
  }

  leave(): void {
    this.ctx.pop();
  }

  eps(a: number, b: number): void {
    if (2 * this.X + 2 > this.xd.length) {
      const t = new Int32Array(this.xd.length * 2);
      t.set(this.xd);
      this.xd = t;
    }
    this.xd[2 * this.X] = a;
    this.xd[2 * this.X + 1] = b;
    this.X++;
  }

  edge(a: number, lo: number, hi: number, b: number): void {
    if (4 * this.E + 4 > this.ed.length) {
      const t = new Int32Array(this.ed.length * 2);
      t.set(this.ed);
      this.ed = t;
    }
    const k = 4 * this.E++;
    this.ed[k] = a;
    this.ed[k + 1] = lo;
    this.ed[k + 2] = hi;
    this.ed[k + 3] = b;
  }

  byte(a: number, c: number | string, b: number): void {
    const v = typeof c === 'string' ? c.charCodeAt(0) : c;
    this.edge(a, v, v, b);
  }

  /** Consumes `bytes` from `from`; returns the state after them. */
  literal(from: number, bytes: Uint8Array | string): number {
    const b = typeof bytes === 'string' ? new TextEncoder().encode(bytes) : bytes;
    let s = from;
    for (const x of b) {
      const t = this.newState();
      this.edge(s, x, x, t);
      s = t;
    }
    return s;
  }

  /**
   * The same automaton without any of `patterns` as a substring anywhere: the product with an
   * Aho-Corasick automaton of the patterns (its states: the patterns' proper prefixes, as far as
   * they have been matched). Used for the sequences a tokenizer's clean-up rewrites and for stop
   * sequences, so that neither can change or cut a value. Returns the new builder, start, final.
   */
  avoiding(patterns: readonly Uint8Array[], start: number, final: number): { b: NfaBuilder; start: number; final: number } {
    // Trie of the patterns; node 0 the root.
    const go: Map<number, number>[] = [new Map()];
    const terminal: boolean[] = [false];
    for (const p of patterns) {
      if (p.length === 0) continue;
      let v = 0;
      for (const c of p) {
        let w = go[v]!.get(c);
        if (w === undefined) {
          w = go.length;
          go.push(new Map());
          terminal.push(false);
          go[v]!.set(c, w);
        }
        v = w;
      }
      terminal[v] = true;
    }
    const alphabet = [...new Set(patterns.flatMap((p) => [...p]))].sort((x, y) => x - y);
    // Failure links, breadth first; a node whose failure chain ends a pattern is terminal too.
    const fail = new Array<number>(go.length).fill(0);
    const order: number[] = [];
    for (const w of go[0]!.values()) order.push(w);
    for (let i = 0; i < order.length; i++) {
      const v = order[i]!;
      for (const [c, w] of go[v]!) {
        let f = fail[v]!;
        while (f !== 0 && !go[f]!.has(c)) f = fail[f]!;
        const g = go[f]!.get(c);
        fail[w] = g !== undefined && g !== w ? g : 0;
        if (terminal[fail[w]!]) terminal[w] = true;
        order.push(w);
      }
    }
    const delta = (v: number, c: number): number => {
      for (;;) {
        const w = go[v]!.get(c);
        if (w !== undefined) return w;
        if (v === 0) return 0;
        v = fail[v]!;
      }
    };
    // Tracker states: the non-terminal nodes, renumbered.
    const idx = new Array<number>(go.length).fill(-1);
    let K = 0;
    for (let v = 0; v < go.length; v++) if (!terminal[v]) idx[v] = K++;
    const nodes = idx.map((k, v) => (k >= 0 ? v : -1)).filter((v) => v >= 0);
    // Long stop sequences multiply the automaton: bounded like any other growth.
    if (K * this.n > Math.max(this.maxStates, 3 * this.n)) {
      throw new AutomatonLimitError(`the stop sequences (${K} prefixes to track) multiply the schema's ${this.n} automaton states past ${Math.max(this.maxStates, 3 * this.n)}; use fewer or shorter stop sequences`);
    }
    const out = new NfaBuilder(this.maxStates * K + 2);
    const n = this.n;
    out.n = K * n;
    out.labelOf = [];
    for (let q = 0; q < n; q++) for (let t = 0; t < K; t++) out.labelOf.push(this.labelOf[q]! * K + t);
    for (let j = 0; j < this.E; j++) {
      const a = this.ed[4 * j]!;
      const lo = this.ed[4 * j + 1]!;
      const hi = this.ed[4 * j + 2]!;
      const b = this.ed[4 * j + 3]!;
      let x = lo;
      const rest = (y: number) => {
        // Bytes in no pattern: every tracker state goes back to the root.
        for (let t = 0; t < K; t++) out.edge(K * a + t, x, y, K * b + idx[0]!);
      };
      for (const c of alphabet) {
        if (c < x || c > hi) continue;
        if (x < c) rest(c - 1);
        for (let t = 0; t < K; t++) {
          const w = delta(nodes[t]!, c);
          if (!terminal[w]) out.edge(K * a + t, c, c, K * b + idx[w]!);
        }
        x = c + 1;
      }
      if (x <= hi) rest(hi);
    }
    for (let j = 0; j < this.X; j++) for (let t = 0; t < K; t++) out.eps(K * this.xd[2 * j]! + t, K * this.xd[2 * j + 1]! + t);
    const fin = out.newState();
    // Its own label (newState's would be numbered apart from the product's labels).
    let top = -1;
    for (let q = 0; q < fin; q++) top = Math.max(top, out.labelOf[q]!);
    out.labelOf[fin] = top + 1;
    for (let t = 0; t < K; t++) out.eps(K * final + t, fin);
    return { b: out, start: K * start + idx[0]!, final: fin };
  }

  /** Whether `final` can be reached from `start` at all (one pass over a CSR copy of the edges). */
  connected(start: number, final: number): boolean {
    const n = this.n;
    const { E, X, ed, xd } = this;
    const off = new Int32Array(n + 1);
    for (let j = 0; j < E; j++) off[ed[4 * j]! + 1]!++;
    for (let j = 0; j < X; j++) off[xd[2 * j]! + 1]!++;
    for (let v = 0; v < n; v++) off[v + 1]! += off[v]!;
    const adj = new Int32Array(E + X);
    const fill = off.slice(0, n);
    for (let j = 0; j < E; j++) adj[fill[ed[4 * j]!]!++] = ed[4 * j + 3]!;
    for (let j = 0; j < X; j++) adj[fill[xd[2 * j]!]!++] = xd[2 * j + 1]!;
    const seen = new Uint8Array(n);
    const stack = new Int32Array(n);
    let sp = 0;
    stack[sp++] = start;
    seen[start] = 1;
    while (sp) {
      const v = stack[--sp]!;
      if (v === final) return true;
      for (let k = off[v]!; k < off[v + 1]!; k++) {
        const t = adj[k]!;
        if (!seen[t]) {
          seen[t] = 1;
          stack[sp++] = t;
        }
      }
    }
    return false;
  }

  /** Removes states that are unreachable from `start` or cannot reach `final`, and freezes. */
  build(start: number, final: number): Nfa {
    const n = this.n;
    const { E, X, ed, xd } = this;
    // All edges (byte and epsilon) as one CSR graph, forwards and backwards.
    const csr = (from: (j: number) => number, to: (j: number) => number, m: number) => {
      const off = new Int32Array(n + 1);
      for (let j = 0; j < m; j++) off[from(j) + 1]!++;
      for (let v = 0; v < n; v++) off[v + 1]! += off[v]!;
      const fill = off.slice(0, n);
      const adj = new Int32Array(m);
      for (let j = 0; j < m; j++) adj[fill[from(j)]!++] = to(j);
      return { off, adj };
    };
    const src = (j: number) => (j < E ? ed[4 * j]! : xd[2 * (j - E)]!);
    const dst = (j: number) => (j < E ? ed[4 * j + 3]! : xd[2 * (j - E) + 1]!);
    const fwd = csr(src, dst, E + X);
    const bwd = csr(dst, src, E + X);
    const mark = (root: number, g: { off: Int32Array; adj: Int32Array }) => {
      const seen = new Uint8Array(n);
      const stack = new Int32Array(n);
      let sp = 0;
      stack[sp++] = root;
      seen[root] = 1;
      while (sp) {
        const v = stack[--sp]!;
        for (let k = g.off[v]!; k < g.off[v + 1]!; k++) {
          const t = g.adj[k]!;
          if (!seen[t]) {
            seen[t] = 1;
            stack[sp++] = t;
          }
        }
      }
      return seen;
    };
    const reach = mark(start, fwd);
    const coreach = mark(final, bwd);
    if (!reach[final]) throw new Error('the grammar accepts nothing');
    const newId = new Int32Array(n).fill(-1);
    let m = 0;
    for (let v = 0; v < n; v++) if (reach[v] && coreach[v]) newId[v] = m++;
    const labels = new Int32Array(m);
    for (let v = 0; v < n; v++) if (newId[v]! >= 0) labels[newId[v]!] = this.labelOf[v]!;
    // Byte classes: bytes no kept edge distinguishes share a class.
    const keptEdge = (j: number) => newId[ed[4 * j]!]! >= 0 && newId[ed[4 * j + 3]!]! >= 0;
    const cut = new Uint8Array(257);
    cut[0] = 1;
    for (let j = 0; j < E; j++) {
      if (!keptEdge(j)) continue;
      cut[ed[4 * j + 1]!] = 1;
      cut[ed[4 * j + 2]! + 1] = 1;
    }
    const classOf = new Uint8Array(256);
    let c = -1;
    for (let b = 0; b < 256; b++) {
      if (cut[b]) c++;
      classOf[b] = c;
    }
    const numClasses = c + 1;
    const edgeOff = new Int32Array(m + 1);
    const epsOff = new Int32Array(m + 1);
    for (let j = 0; j < E; j++) if (keptEdge(j)) edgeOff[newId[ed[4 * j]!]! + 1]!++;
    for (let j = 0; j < X; j++) if (newId[xd[2 * j]!]! >= 0 && newId[xd[2 * j + 1]!]! >= 0) epsOff[newId[xd[2 * j]!]! + 1]!++;
    for (let v = 0; v < m; v++) {
      edgeOff[v + 1]! += edgeOff[v]!;
      epsOff[v + 1]! += epsOff[v]!;
    }
    const edgeLo = new Uint8Array(edgeOff[m]!);
    const edgeHi = new Uint8Array(edgeOff[m]!);
    const edgeTo = new Int32Array(edgeOff[m]!);
    const epsTo = new Int32Array(epsOff[m]!);
    const ef = edgeOff.slice(0, m);
    for (let j = 0; j < E; j++) {
      if (!keptEdge(j)) continue;
      const k = ef[newId[ed[4 * j]!]!]!++;
      edgeLo[k] = classOf[ed[4 * j + 1]!]!;
      edgeHi[k] = classOf[ed[4 * j + 2]!]!;
      edgeTo[k] = newId[ed[4 * j + 3]!]!;
    }
    const xf = epsOff.slice(0, m);
    for (let j = 0; j < X; j++) {
      const a = newId[xd[2 * j]!]!;
      const b = newId[xd[2 * j + 1]!]!;
      if (a < 0 || b < 0) continue;
      epsTo[xf[a]!++] = b;
    }
    return { numStates: m, start: newId[start]!, final: newId[final]!, classOf, numClasses, edgeOff, edgeLo, edgeHi, edgeTo, epsOff, epsTo, labels };
  }
}

/** A trimmed NFA in flat arrays; edges are over byte classes. */
export interface Nfa {
  numStates: number;
  start: number;
  final: number;
  classOf: Uint8Array;
  numClasses: number;
  edgeOff: Int32Array;
  edgeLo: Uint8Array;
  edgeHi: Uint8Array;
  edgeTo: Int32Array;
  epsOff: Int32Array;
  epsTo: Int32Array;
  labels: Int32Array;
  /** singleByteDistances for the vocabulary the compile was given (grammar.ts), when it was. */
  singleDist?: Int32Array;
}

/**
 * The DFA of an NFA, built on demand. `trans[s * numClasses + c]` is the next state, DEAD, or
 * (row not yet computed) UNKNOWN: call expand(s) first — `trans` may be reallocated by it.
 */
export class LazyDfa {
  readonly numClasses: number;
  readonly classOf: Uint8Array;
  trans: Int32Array;
  accepting: Uint8Array;
  /** Whether any byte leads on from the state (filled by expand). */
  private sets: Int32Array[] = [];
  private ids = new Map<string, number>();
  private stamp: Int32Array;
  private stampNow = 0;
  private buckets: number[][];
  readonly start: number;

  constructor(
    readonly nfa: Nfa,
    readonly maxStates = 200_000,
  ) {
    this.numClasses = nfa.numClasses;
    this.classOf = nfa.classOf;
    this.trans = new Int32Array(64 * this.numClasses).fill(UNKNOWN);
    this.accepting = new Uint8Array(64);
    this.stamp = new Int32Array(nfa.numStates);
    this.buckets = Array.from({ length: this.numClasses }, () => []);
    this.start = this.intern(this.closure([nfa.start]));
  }

  get size(): number {
    return this.sets.length;
  }

  /** NFA states of a DFA state (sorted). */
  nfaStates(s: number): Int32Array {
    return this.sets[s]!;
  }

  private closure(seed: number[]): Int32Array {
    const { epsOff, epsTo } = this.nfa;
    const now = ++this.stampNow;
    const out: number[] = [];
    const stack: number[] = [];
    for (const s of seed) {
      if (this.stamp[s] !== now) {
        this.stamp[s] = now;
        stack.push(s);
      }
    }
    while (stack.length) {
      const s = stack.pop()!;
      out.push(s);
      for (let k = epsOff[s]!; k < epsOff[s + 1]!; k++) {
        const t = epsTo[k]!;
        if (this.stamp[t] !== now) {
          this.stamp[t] = now;
          stack.push(t);
        }
      }
    }
    out.sort((a, b) => a - b);
    return Int32Array.from(out);
  }

  private intern(set: Int32Array): number {
    const key = set.join(',');
    let id = this.ids.get(key);
    if (id !== undefined) return id;
    id = this.sets.length;
    if (id >= this.maxStates) throw new AutomatonLimitError(`the grammar's automaton grew past ${this.maxStates} states`);
    this.ids.set(key, id);
    this.sets.push(set);
    const C = this.numClasses;
    if ((id + 1) * C > this.trans.length) {
      const t = new Int32Array(this.trans.length * 2).fill(UNKNOWN);
      t.set(this.trans);
      this.trans = t;
      const a = new Uint8Array(this.accepting.length * 2);
      a.set(this.accepting);
      this.accepting = a;
    }
    const fin = this.nfa.final;
    for (const s of set) if (s === fin) this.accepting[id] = 1;
    return id;
  }

  /** Computes the transition row of `s` (all byte classes at once). */
  expand(s: number): void {
    const C = this.numClasses;
    if (this.trans[s * C] !== UNKNOWN) return;
    const { edgeOff, edgeLo, edgeHi, edgeTo } = this.nfa;
    const buckets = this.buckets;
    for (const b of buckets) b.length = 0;
    for (const q of this.sets[s]!) {
      for (let k = edgeOff[q]!; k < edgeOff[q + 1]!; k++) {
        const t = edgeTo[k]!;
        for (let c = edgeLo[k]!; c <= edgeHi[k]!; c++) buckets[c]!.push(t);
      }
    }
    const row = new Int32Array(C);
    const memo = new Map<string, number>();
    for (let c = 0; c < C; c++) {
      const b = buckets[c]!;
      if (b.length === 0) {
        row[c] = DEAD;
        continue;
      }
      const bk = b.join(',');
      let id = memo.get(bk);
      if (id === undefined) {
        id = this.intern(this.closure(b));
        memo.set(bk, id);
      }
      row[c] = id;
    }
    this.trans.set(row, s * C);
  }

  /** The state after `bytes` from `s`, or DEAD. */
  run(s: number, bytes: Uint8Array): number {
    const C = this.numClasses;
    for (let i = 0; i < bytes.length; i++) {
      if (s < 0) return DEAD;
      let t = this.trans[s * C + this.classOf[bytes[i]!]!]!;
      if (t === UNKNOWN) {
        this.expand(s);
        t = this.trans[s * C + this.classOf[bytes[i]!]!]!;
      }
      s = t;
    }
    return s;
  }

  /** Whether any byte leads on from `s`. */
  hasNext(s: number): boolean {
    this.expand(s);
    const C = this.numClasses;
    for (let c = 0; c < C; c++) if (this.trans[s * C + c]! >= 0) return true;
    return false;
  }

  /** Accepts `bytes` in full from the start (tests). */
  matches(bytes: Uint8Array | string): boolean {
    const b = typeof bytes === 'string' ? new TextEncoder().encode(bytes) : bytes;
    const s = this.run(this.start, b);
    return s >= 0 && this.accepting[s] === 1;
  }

  /** Whether `bytes` is a prefix of some accepted string. */
  viablePrefix(bytes: Uint8Array | string): boolean {
    const b = typeof bytes === 'string' ? new TextEncoder().encode(bytes) : bytes;
    return this.run(this.start, b) >= 0;
  }
}

/**
 * Per NFA state, the fewest byte steps to the accepting state using only edges some single-byte
 * token can take (epsilon edges free): a 0-1 breadth-first search backwards from the end.
 */
export function singleByteDistances(nfa: Nfa, singleByte: Uint8Array): Int32Array {
  const n = nfa.numStates;
  // okUpTo[c]: how many classes below c some single-byte token belongs to (an edge over
  // classes lo..hi is usable when the count grows over it).
  const classOk = new Uint8Array(nfa.numClasses);
  for (let b = 0; b < 256; b++) if (singleByte[b]) classOk[nfa.classOf[b]!] = 1;
  const okUpTo = new Int32Array(nfa.numClasses + 1);
  for (let c = 0; c < nfa.numClasses; c++) okUpTo[c + 1] = okUpTo[c]! + classOk[c]!;
  const { edgeOff, edgeLo, edgeHi, edgeTo, epsOff, epsTo } = nfa;
  // Reverse graph in CSR form: (to → from, weight 0 for epsilon, 1 for a byte).
  const revOff = new Int32Array(n + 1);
  for (let q = 0; q < n; q++) {
    for (let k = edgeOff[q]!; k < edgeOff[q + 1]!; k++) if (okUpTo[edgeHi[k]! + 1]! > okUpTo[edgeLo[k]!]!) revOff[edgeTo[k]! + 1]!++;
    for (let k = epsOff[q]!; k < epsOff[q + 1]!; k++) revOff[epsTo[k]! + 1]!++;
  }
  for (let v = 0; v < n; v++) revOff[v + 1]! += revOff[v]!;
  const m = revOff[n]!;
  const revSrc = new Int32Array(m);
  const revW = new Uint8Array(m);
  const fill = revOff.slice(0, n);
  for (let q = 0; q < n; q++) {
    for (let k = edgeOff[q]!; k < edgeOff[q + 1]!; k++) {
      if (okUpTo[edgeHi[k]! + 1]! > okUpTo[edgeLo[k]!]!) {
        const j = fill[edgeTo[k]!]!++;
        revSrc[j] = q;
        revW[j] = 1;
      }
    }
    for (let k = epsOff[q]!; k < epsOff[q + 1]!; k++) revSrc[fill[epsTo[k]!]!++] = q;
  }
  const dist = new Int32Array(n).fill(INF);
  dist[nfa.final] = 0;
  // 0-1 BFS: zero-weight relaxations on a stack taken first, unit ones on a FIFO queue.
  const zero = new Int32Array(m + 1);
  const one = new Int32Array(m + 1);
  let zs = 0;
  let qh = 0;
  let qt = 0;
  zero[zs++] = nfa.final;
  while (zs > 0 || qh < qt) {
    const v = zs > 0 ? zero[--zs]! : one[qh++]!;
    const dv = dist[v]!;
    for (let j = revOff[v]!; j < revOff[v + 1]!; j++) {
      const u = revSrc[j]!;
      const nd = dv + revW[j]!;
      if (nd < dist[u]!) {
        dist[u] = nd;
        if (revW[j] === 0) zero[zs++] = u;
        else one[qt++] = u;
      }
    }
  }
  return dist;
}
