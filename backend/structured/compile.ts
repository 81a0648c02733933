// Normalized schema graph (schema.ts) → byte NFA (automaton.ts) of the JSON texts we let the
// model write. The language is always a subset of what validates, chosen so that generation
// ends: whitespace is bounded, numbers have at most 15 integer digits, properties come in the
// schema's order, recursion and free-form nesting are bounded in depth, strings end by maxLength.
//
// What is generated for each node:
// - object with `properties`: those properties in declaration order, required ones always,
//   optional ones may be skipped; no other keys (additionalProperties is allowed, not used).
//   Required names missing from `properties` use the additionalProperties schema.
//   minProperties/maxProperties: satisfied by making the first optional properties required /
//   dropping the last optional ones.
// - object without `properties`: any keys (JSON strings), values per additionalProperties,
//   count within minProperties..maxProperties.
// - array: prefixItems (or array-form items) then items, count within minItems..maxItems.
// - string: any JSON string (all escapes but surrogate \u escapes, valid UTF-8 only), length in
//   code points within minLength..maxLength; formats date, time, date-time, uuid in one fixed
//   shape each (e.g. date-time "2024-01-31T12:00:00Z"; days 01-28 only, always valid).
// - integer: -?(0|[1-9][0-9]{0,14}) within minimum/maximum (exact digit automaton).
// - number: with bounds (integer-valued only): integers in range or I.F with a non-zero last
//   fraction digit inside the range; no exponent. Without bounds: the JSON number grammar with
//   <= 15 integer digits, <= 15 fraction digits, <= 2 exponent digits.
// - enum/const: the compact JSON text of each value that also satisfies the sibling keywords.
// - {} / true: any JSON value, containers nested at most `anyDepth` deep.
// - $ref: followed; a recursive $ref at most `recursionDepth` times along a path (beyond, that
//   branch is impossible: optional properties are dropped, arrays end, anyOf uses other branches).
import { AutomatonLimitError, NfaBuilder, singleByteDistances, type Nfa } from './automaton.ts';
import { ANY_CP, utf8Sequences, type CpNfa, type CpSet } from './regex.ts';
import { accepts, checkOneOf, deref, FORMAT_LENGTH, isFixedFormat, jsonEqual, parseSchema, SchemaError, type ArrC, type FixedFormat, type Node, type NumC, type ObjC, type StringC, type TypedNode } from './schema.ts';

export interface CompileOptions {
  /**
   * Whitespace allowed between JSON tokens (and before the value): none, one space, or a newline
   * followed by at most this many spaces/tabs (pretty-printing indentation). 0: none or one space.
   */
  maxWhitespace: number;
  /** Nesting depth of containers inside unconstrained values ({} / true / json_object). */
  anyDepth: number;
  /** How many times a recursive $ref may be followed along one path. */
  recursionDepth: number;
  /** NFA state budget; bigger schemas are refused. */
  maxStates: number;
  /** Longest token in bytes: masks are shared between states equal up to this many bytes. */
  horizon: number;
  /**
   * The tokenizer applies transformers' clean_up_tokenization_spaces when decoding: never
   * generate the sequences it rewrites (" ," " ." " 's" ...), so the text users get is the text
   * the grammar accepted.
   */
  cleanup?: boolean;
  /** Stop sequences of the request: never generated, so a stop can never cut a value short. */
  stop?: readonly string[];
  /** 1 for each byte the vocabulary has as a token by itself: the completion distances are computed here, off the request loop. */
  singleByte?: readonly number[];
}

/** What transformers' clean_up_tokenization rewrites (" ' " and " n't", " 's", ... all start with " '" or " n'"). */
const CLEANUP_PATTERNS = [' .', ' ?', ' !', ' ,', " '", " n'"];

export const DEFAULT_COMPILE_OPTIONS: CompileOptions = {
  maxWhitespace: 12,
  anyDepth: 4,
  recursionDepth: 4,
  maxStates: 500_000,
  horizon: 64,
};

const MAX_INT = 999_999_999_999_999; // 15 digits: always a safe integer
const FREE_STRING: StringC = { minLength: 0, maxLength: Infinity, format: null, pattern: null };
/** Pattern strings with length bounds are laid out once per count: at most this many copies of the pattern. */
const MAX_PATTERN_STATES = 200_000;

interface Ctx {
  rec: number;
  any: number;
}

/** Compiles a JSON Schema to the NFA of the texts to generate; throws SchemaError. */
export function compileSchema(schema: unknown, options: Partial<CompileOptions> = {}): Nfa {
  const opts = { ...DEFAULT_COMPILE_OPTIONS, ...options };
  const root = parseSchema(schema);
  const oneOf = checkOneOf(root);
  if (oneOf.length) throw new SchemaError(oneOf);
  const em = new Emitter(opts);
  try {
    const start = em.b.newState();
    const v = em.ws(start);
    const end = em.value(root, v, { rec: opts.recursionDepth, any: opts.anyDepth });
    if (end === null || !em.b.connected(start, end)) throw new SchemaError([`the schema cannot be satisfied by any JSON value we generate: ${em.why()}`]);
    const stop = (opts.stop ?? []).filter((x) => x.length > 0);
    if (opts.cleanup || stop.length) {
      const enc = new TextEncoder();
      const c = em.b.avoiding([...(opts.cleanup ? CLEANUP_PATTERNS : []), ...stop].map((x) => enc.encode(x)), start, end);
      if (!c.b.connected(c.start, c.final)) {
        throw new SchemaError([
          stop.length
            ? `every value of the schema contains one of the stop sequences (${stop.map((x) => JSON.stringify(x)).join(', ')})${opts.cleanup ? ' or text the tokenizer\'s clean-up rewrites' : ''}, which would cut it short; change "stop" or the schema`
            : 'every value of the schema contains text this tokenizer\'s clean_up_tokenization_spaces rewrites when decoding (" ," " ." " ?" " !" " \'" " n\'t" inside a string); it could not be returned as written',
        ]);
      }
      return withDistances(c.b.build(c.start, c.final), opts.singleByte);
    }
    return withDistances(em.b.build(start, end), opts.singleByte);
  } catch (err) {
    if (err instanceof AutomatonLimitError) throw new SchemaError([`the schema is too large to compile (${err.message}; lower "maxLength", "maxItems", "minItems" or the pattern's repetition counts)`]);
    throw err;
  }
}

function withDistances(nfa: Nfa, singleByte: readonly number[] | undefined): Nfa {
  if (singleByte) nfa.singleDist = singleByteDistances(nfa, Uint8Array.from(singleByte));
  return nfa;
}

/** Non-negative decimal digits of x: integer part (no leading zeros) and fraction (no trailing zeros). */
export function decimalParts(x: number): { int: string; frac: string } {
  const m = /^(\d+)(?:\.(\d+))?(?:e([+-]\d+))?$/.exec(String(Math.abs(x)))!;
  const digits = m[1]! + (m[2] ?? '');
  const point = m[1]!.length + Number(m[3] ?? 0);
  let int: string;
  let frac: string;
  if (point <= 0) [int, frac] = ['0', '0'.repeat(-point) + digits];
  else if (point >= digits.length) [int, frac] = [digits + '0'.repeat(point - digits.length), ''];
  else [int, frac] = [digits.slice(0, point), digits.slice(point)];
  int = int.replace(/^0+(?=\d)/, '');
  frac = frac.replace(/0+$/, '');
  return { int, frac };
}

const jsonSeqCache = new WeakMap<CpSet, [number, number][][]>();

/** Byte-range sequences writing each code point of `set` inside a JSON string (cached per set). */
function jsonSequences(set: CpSet): [number, number][][] {
  let out = jsonSeqCache.get(set);
  if (out) return out;
  out = [];
  const SHORT: Record<number, string> = { 0x08: 'b', 0x09: 't', 0x0a: 'n', 0x0c: 'f', 0x0d: 'r', 0x22: '"', 0x5c: '\\' };
  const lit = (s: string) => [...Buffer.from(s, 'latin1')].map((x) => [x, x] as [number, number]);
  for (const [lo, hi] of set) {
    for (let cp = lo; cp <= Math.min(hi, 0x1f); cp++) out.push(lit(`\\${SHORT[cp] ?? `u00${cp.toString(16).padStart(2, '0')}`}`));
    for (const q of [0x22, 0x5c]) if (lo <= q && q <= hi) out.push(lit(`\\${SHORT[q]}`));
    // Raw code points: [max(lo, 0x20), hi] without 0x22 and 0x5c.
    let a = Math.max(lo, 0x20);
    for (const q of [0x22, 0x5c]) {
      if (a <= q && q <= hi) {
        if (a < q) utf8Sequences(a, q - 1, out);
        a = q + 1;
      }
    }
    if (a <= hi) utf8Sequences(a, hi, out);
  }
  jsonSeqCache.set(set, out);
  return out;
}

/** A bound on non-negative decimals: integer part, fraction digits, inclusive or not. */
interface DecBound {
  int: number;
  frac: string;
  incl: boolean;
}

type Branch = (from: number) => number | null;

class Emitter {
  readonly b: NfaBuilder;
  /** Why parts of the schema generate nothing (reported when nothing is left at all). */
  private reasons: string[] = [];

  constructor(private readonly o: CompileOptions) {
    this.b = new NfaBuilder(o.maxStates);
  }

  private fail(why: string): null {
    if (!this.reasons.includes(why)) this.reasons.push(why);
    return null;
  }

  why(): string {
    return this.reasons.length ? this.reasons.slice(0, 6).join('; ') : 'no value satisfies every keyword';
  }

  /**
   * Distance to a chain limit as far as masks can tell: a token (at most `horizon` bytes) crosses
   * at most horizon / unit + 1 repetitions of `unit` bytes or more each.
   */
  private clamp(x: number, unit = 1): number {
    return Math.min(Math.max(x, 0), Math.floor(this.o.horizon / Math.max(unit, 1)) + 2);
  }

  /** A lower bound on the bytes of any text generated for `n` (for clamp units). */
  private minBytes(n: Node, depth = 0): number {
    if (depth > 8) return 1;
    switch (n.k) {
      case 'any':
      case 'never':
        return 1;
      case 'ref':
        return n.target ? this.minBytes(n.target, depth + 1) : 1;
      case 'anyOf':
      case 'oneOf':
        return Math.min(...n.options.map((o) => this.minBytes(o, depth + 1)));
      case 'typed': {
        if (n.enum !== null) return Math.max(1, Math.min(...n.enum.map((v) => Buffer.byteLength(JSON.stringify(v) ?? ''))));
        const types = n.types ?? (n.has.size ? n.has : null);
        if (types === null) return 1;
        let m = Infinity;
        for (const t of types) {
          if (t === 'number' || t === 'integer') m = Math.min(m, 1);
          else if (t === 'boolean' || t === 'null') m = Math.min(m, 4);
          else if (t === 'string') m = Math.min(m, 2 + (n.str.format && isFixedFormat(n.str.format) ? FORMAT_LENGTH[n.str.format] : n.str.minLength));
          else if (t === 'array') m = Math.min(m, 2 + 2 * n.arr.minItems);
          else if (t === 'object') {
            // Braces, and each required property's key, colon and value (commas between).
            let o = 2;
            const props = new Map(n.obj.props);
            for (const r of n.obj.required) o += Buffer.byteLength(JSON.stringify(r)) + 1 + this.minBytes(props.get(r) ?? n.obj.additional, depth + 1) + 1;
            m = Math.min(m, Math.max(2, o - 1));
          }
        }
        return m === Infinity ? 1 : m;
      }
    }
  }

  /** Whitespace between tokens: nothing, one space, or a newline and up to maxWhitespace spaces/tabs (indentation). */
  ws(from: number): number {
    const b = this.b;
    const end = b.newState();
    b.eps(from, end);
    b.byte(from, 0x20, end);
    if (this.o.maxWhitespace <= 0) return end;
    let cur = b.newState();
    b.byte(from, 0x0a, cur);
    b.eps(cur, end);
    for (let i = 0; i < this.o.maxWhitespace; i++) {
      const nx = b.newState();
      b.byte(cur, 0x20, nx);
      b.byte(cur, 0x09, nx);
      b.eps(nx, end);
      cur = nx;
    }
    return end;
  }

  private union(branches: Branch[], from: number): number | null {
    const b = this.b;
    const ends: number[] = [];
    for (const br of branches) {
      const s = b.newState();
      const e = br(s);
      if (e === null) continue;
      b.eps(from, s);
      ends.push(e);
    }
    if (ends.length === 0) return null;
    if (ends.length === 1) return ends[0]!;
    const end = b.newState();
    for (const e of ends) b.eps(e, end);
    return end;
  }

  value(n: Node, from: number, ctx: Ctx): number | null {
    switch (n.k) {
      case 'any':
        return this.any(from, ctx);
      case 'never':
        return n.why ? this.fail(n.why) : null;
      case 'ref': {
        if (!n.target) return null;
        if (n.recursive) {
          if (ctx.rec <= 0) return this.fail(`the recursive "$ref" "${n.ref}" cannot end within ${this.o.recursionDepth} levels (at ${n.path})`);
          ctx = { ...ctx, rec: ctx.rec - 1 };
        }
        return this.value(n.target, from, ctx);
      }
      case 'anyOf':
      case 'oneOf':
        return this.union(
          n.options.map((o) => (s: number) => this.value(o, s, ctx)),
          from,
        );
      case 'typed':
        return this.typed(n, from, ctx);
    }
  }

  private typed(n: TypedNode, from: number, ctx: Ctx): number | null {
    if (n.enum !== null) {
      const texts = new Set<string>();
      for (const v of n.enum) if (accepts(n, v, true)) texts.add(JSON.stringify(v));
      if (texts.size === 0) return this.fail(`no "enum"/"const" value satisfies the other keywords (at ${n.path})`);
      return this.union(
        [...texts].map((t) => (s: number) => this.b.literal(s, t)),
        from,
      );
    }
    const types = n.types ?? (n.has.size ? n.has : null);
    const want = (t: 'object' | 'array' | 'string' | 'number' | 'integer' | 'boolean' | 'null') => types === null || types.has(t);
    const branches: Branch[] = [];
    if (want('string')) branches.push((s) => this.string(n.str, s, n.path));
    if (want('number')) branches.push((s) => this.number(n.num, s, n.path));
    else if (want('integer')) branches.push((s) => this.integer(n.num, s, n.path));
    if (want('boolean')) {
      branches.push((s) => this.b.literal(s, 'true'));
      branches.push((s) => this.b.literal(s, 'false'));
    }
    if (want('null')) branches.push((s) => this.b.literal(s, 'null'));
    if (want('object')) branches.push((s) => this.object(n.obj, s, ctx, n.path));
    if (want('array')) branches.push((s) => this.array(n.arr, s, ctx, n.path));
    return this.union(branches, from);
  }

  private any(from: number, ctx: Ctx): number | null {
    const d = ctx.any;
    const inner: Ctx = { ...ctx, any: d - 1 };
    const ANY: Node = { k: 'any', id: -1 };
    const branches: Branch[] = [
      (s) => this.string(FREE_STRING, s, ''),
      (s) => this.number({ min: null, max: null, exclMin: false, exclMax: false }, s, ''),
      (s) => this.b.literal(s, 'true'),
      (s) => this.b.literal(s, 'false'),
      (s) => this.b.literal(s, 'null'),
    ];
    if (d > 0) {
      branches.push((s) => this.object({ props: [], required: [], additional: ANY, minProperties: 0, maxProperties: Infinity }, s, inner, ''));
      branches.push((s) => this.array({ prefix: [], items: ANY, minItems: 0, maxItems: Infinity, unique: false }, s, inner, ''));
    } else {
      branches.push((s) => this.b.literal(this.ws(this.b.literal(s, '{')), '}'));
      branches.push((s) => this.b.literal(this.ws(this.b.literal(s, '[')), ']'));
    }
    return this.union(branches, from);
  }

  // --- strings -------------------------------------------------------------------------------

  /** One JSON string character (code point) from `from` to `to`. */
  private char(from: number, to: number): void {
    const b = this.b;
    b.edge(from, 0x20, 0x21, to);
    b.edge(from, 0x23, 0x5b, to);
    b.edge(from, 0x5d, 0x7f, to);
    // Escapes.
    const e = b.newState();
    b.byte(from, 0x5c, e);
    for (const c of '"\\/bfnrt') b.byte(e, c, to);
    const u1 = b.newState();
    b.byte(e, 'u', u1);
    const u2 = b.newState();
    const u3 = b.newState();
    const u4 = b.newState();
    // \uXXXX without surrogates (D800-DFFF): each escape is then exactly one code point.
    b.edge(u1, 0x30, 0x39, u2);
    b.edge(u1, 0x61, 0x63, u2);
    b.edge(u1, 0x41, 0x43, u2);
    b.edge(u1, 0x65, 0x66, u2);
    b.edge(u1, 0x45, 0x46, u2);
    const ud = b.newState();
    b.byte(u1, 'd', ud);
    b.byte(u1, 'D', ud);
    b.edge(ud, 0x30, 0x37, u3);
    this.hex(u2, u3);
    this.hex(u3, u4);
    this.hex(u4, to);
    // UTF-8 multi-byte sequences (well-formed only: no overlongs, no surrogates, <= U+10FFFF).
    const c1 = b.newState(); // one continuation byte left
    b.edge(c1, 0x80, 0xbf, to);
    const c2 = b.newState(); // two left
    b.edge(c2, 0x80, 0xbf, c1);
    b.edge(from, 0xc2, 0xdf, c1);
    const e0 = b.newState();
    b.byte(from, 0xe0, e0);
    b.edge(e0, 0xa0, 0xbf, c1);
    b.edge(from, 0xe1, 0xec, c2);
    b.edge(from, 0xee, 0xef, c2);
    const ed = b.newState();
    b.byte(from, 0xed, ed);
    b.edge(ed, 0x80, 0x9f, c1);
    const f0 = b.newState();
    b.byte(from, 0xf0, f0);
    b.edge(f0, 0x90, 0xbf, c2);
    const f1 = b.newState();
    b.edge(from, 0xf1, 0xf3, f1);
    b.edge(f1, 0x80, 0xbf, c2);
    const f4 = b.newState();
    b.byte(from, 0xf4, f4);
    b.edge(f4, 0x80, 0x8f, c2);
  }

  private hex(from: number, to: number): void {
    this.b.edge(from, 0x30, 0x39, to);
    this.b.edge(from, 0x41, 0x46, to);
    this.b.edge(from, 0x61, 0x66, to);
  }

  /**
   * Code points of `set` as JSON string content from `from` to `to`: raw UTF-8, except `"`, `\\`
   * and control characters, which take their one canonical escape. Byte sequences sharing a
   * prefix share its states.
   */
  private cpSet(from: number, set: CpSet, to: number): void {
    const b = this.b;
    if (set.length === ANY_CP.length && set.every(([lo, hi], i) => lo === ANY_CP[i]![0] && hi === ANY_CP[i]![1])) {
      this.char(from, to);
      return;
    }
    const children = new Map<string, number>();
    for (const seq of jsonSequences(set)) {
      let cur = from;
      for (let k = 0; k < seq.length; k++) {
        const [lo, hi] = seq[k]!;
        if (k === seq.length - 1) {
          b.edge(cur, lo, hi, to);
          break;
        }
        const key = `${cur}:${lo}:${hi}`;
        let nx = children.get(key);
        if (nx === undefined) {
          nx = b.newState();
          children.set(key, nx);
          b.edge(cur, lo, hi, nx);
        }
        cur = nx;
      }
    }
  }

  /**
   * A string matching a pattern (code-point NFA), of minLength..maxLength code points: the
   * pattern laid out once per count so far (counts saturate at minLength when maxLength is absent).
   */
  private patternString(c: StringC, P: CpNfa, from: number, path: string): number | null {
    const b = this.b;
    const { minLength: min, maxLength: max } = c;
    const levels = max === Infinity ? min + 1 : max + 1;
    if (P.n * levels > MAX_PATTERN_STATES) {
      throw new SchemaError([`"pattern" (or "format") together with "minLength"/"maxLength" ${max === Infinity ? min : max} needs too large an automaton (at ${path})`]);
    }
    const nextLevel = (l: number) => (max === Infinity ? Math.min(l + 1, min) : l + 1 <= max ? l + 1 : -1);
    // Which (state, count) pairs the pattern can reach, and whether a closing one is among them.
    const seen = new Set<number>();
    const key = (p: number, l: number) => l * P.n + p;
    const stack = [key(P.start, 0)];
    seen.add(stack[0]!);
    const epsOf: number[][] = Array.from({ length: P.n }, () => []);
    for (const [x, y] of P.eps) epsOf[x]!.push(y);
    const edgesOf: { set: CpSet; to: number }[][] = Array.from({ length: P.n }, () => []);
    for (const e of P.edges) edgesOf[e.from]!.push(e);
    let closes = false;
    while (stack.length) {
      const k = stack.pop()!;
      const p = k % P.n;
      const l = (k - p) / P.n;
      if (p === P.final && l >= min) closes = true;
      const push = (q: number, m: number) => {
        const kk = key(q, m);
        if (!seen.has(kk)) seen.add(kk), stack.push(kk);
      };
      for (const q of epsOf[p]!) push(q, l);
      const nl = nextLevel(l);
      if (nl >= 0) for (const e of edgesOf[p]!) push(e.to, nl);
    }
    if (!closes) return this.fail(`no string of ${min}..${max === Infinity ? '' : max} characters matches the "pattern"/"format" (at ${path})`);
    const ids = new Map<number, number>();
    const st = (p: number, l: number) => {
      const k = key(p, l);
      let id = ids.get(k);
      if (id === undefined) {
        id = b.newState();
        ids.set(k, id);
      }
      return id;
    };
    b.eps(b.literal(from, '"'), st(P.start, 0));
    const end = b.newState();
    for (const k of seen) {
      const p = k % P.n;
      const l = (k - p) / P.n;
      const s0 = st(p, l);
      for (const q of epsOf[p]!) b.eps(s0, st(q, l));
      const nl = nextLevel(l);
      if (nl >= 0) for (const e of edgesOf[p]!) this.cpSet(s0, e.set, st(e.to, nl));
      if (p === P.final && l >= min) b.byte(s0, '"', end);
    }
    return end;
  }

  /** A free string key of at least `lmin` code points whose length is `r` modulo `mod` (distinct keys by construction). */
  private keyString(from: number, lmin: number, mod: number, r: number): number {
    const b = this.b;
    let cur = b.literal(from, '"');
    for (let i = 0; i < lmin; i++) {
      const nx = b.newState();
      this.char(cur, nx);
      cur = nx;
    }
    const cyc = [cur];
    for (let k = 1; k < mod; k++) cyc.push(b.newState());
    for (let k = 0; k < mod; k++) this.char(cyc[k]!, cyc[(k + 1) % mod]!);
    const end = b.newState();
    for (let k = 0; k < mod; k++) if ((lmin + k) % mod === r) b.byte(cyc[k]!, '"', end);
    return end;
  }

  private string(c: StringC, from: number, path: string): number | null {
    const b = this.b;
    if (c.minLength > c.maxLength) return this.fail(`"minLength" ${c.minLength} > "maxLength" ${c.maxLength} (at ${path})`);
    if (c.format && isFixedFormat(c.format)) {
      const len = FORMAT_LENGTH[c.format];
      if (len < c.minLength || len > c.maxLength) return this.fail(`"format" "${c.format}" is generated with ${len} characters, outside "minLength"/"maxLength" (at ${path})`);
      return b.literal(this.format(c.format, b.literal(from, '"')), '"');
    }
    if (c.pattern) return this.patternString(c, c.pattern, from, path);
    let cur = b.literal(from, '"');
    const chain = b.chain();
    const key = (i: number) => `${this.clamp(c.minLength - i)}:${this.clamp(c.maxLength - i)}`;
    const closers: number[] = [];
    for (let i = 0; i < c.minLength; i++) {
      b.enter(chain, key(i));
      const nx = b.newState();
      this.char(cur, nx);
      b.leave();
      cur = nx;
    }
    if (c.maxLength === Infinity) {
      closers.push(cur);
      b.enter(chain, key(c.minLength));
      this.char(cur, cur);
      b.leave();
    } else {
      for (let i = c.minLength; i < c.maxLength; i++) {
        closers.push(cur);
        b.enter(chain, key(i));
        const nx = b.newState();
        this.char(cur, nx);
        b.leave();
        cur = nx;
      }
      closers.push(cur);
    }
    const end = b.newState();
    for (const s of closers) b.byte(s, '"', end);
    return end;
  }

  /** A run of character classes, e.g. ['09', '09', '-'] (pairs are ranges, single chars literal). */
  private classes(from: number, spec: string[]): number {
    let cur = from;
    for (const cls of spec) {
      const nx = this.b.newState();
      for (let i = 0; i < cls.length; i += 2) {
        const lo = cls.charCodeAt(i);
        const hi = i + 1 < cls.length ? cls.charCodeAt(i + 1) : lo;
        this.b.edge(cur, lo, hi, nx);
      }
      cur = nx;
    }
    return cur;
  }

  private alt(from: number, options: string[][]): number {
    const end = this.b.newState();
    for (const o of options) this.b.eps(this.classes(from, o), end);
    return end;
  }

  private format(f: FixedFormat, from: number): number {
    const date = (s: number) => {
      let x = this.classes(s, ['09', '09', '09', '09', '--']);
      x = this.alt(x, [['00', '19'], ['11', '02']]);
      x = this.classes(x, ['--']);
      return this.alt(x, [['00', '19'], ['11', '09'], ['22', '08']]);
    };
    const time = (s: number) => {
      let x = this.alt(s, [['01', '09'], ['22', '03']]);
      x = this.classes(x, ['::', '05', '09', '::', '05', '09', 'ZZ']);
      return x;
    };
    const hex = '09afAF';
    switch (f) {
      case 'date':
        return date(from);
      case 'time':
        return time(from);
      case 'date-time':
        return time(this.classes(date(from), ['TT']));
      case 'uuid': {
        const group = (n: number) => Array.from({ length: n }, () => hex);
        return this.classes(from, [...group(8), '--', ...group(4), '--', ...group(4), '--', ...group(4), '--', ...group(12)]);
      }
    }
  }

  // --- numbers -------------------------------------------------------------------------------

  /** [1-9][0-9]{0,14} | 0 from `from` into `end`. */
  private digits(from: number, end: number): void {
    const b = this.b;
    b.byte(from, '0', end);
    let cur = b.newState();
    b.edge(from, 0x31, 0x39, cur);
    b.eps(cur, end);
    for (let k = 0; k < 14; k++) {
      const nx = b.newState();
      b.edge(cur, 0x30, 0x39, nx);
      b.eps(nx, end);
      cur = nx;
    }
  }

  /** Non-negative integers in [a, b] written without leading zeros, from `from` into `end`. */
  private nonnegRange(from: number, a: number, bMax: number, end: number): void {
    if (a > bMax) return;
    const la = String(a).length;
    const lb = String(bMax).length;
    for (let L = la; L <= lb; L++) {
      const x = Math.max(a, L === 1 ? 0 : 10 ** (L - 1));
      const y = Math.min(bMax, 10 ** L - 1);
      if (x > y) continue;
      const xs = String(x);
      const ys = String(y);
      // Digit DP over (position, tight to x, tight to y).
      let layer = new Map<string, number>([['1,1', from]]);
      for (let pos = 0; pos < L; pos++) {
        const next = new Map<string, number>();
        const last = pos === L - 1;
        for (const [k, s] of layer) {
          const tl = k[0] === '1';
          const th = k[2] === '1';
          const lo = tl ? xs.charCodeAt(pos) - 48 : 0;
          const hi = th ? ys.charCodeAt(pos) - 48 : 9;
          for (let d = lo; d <= hi; d++) {
            const nk = `${tl && d === lo ? 1 : 0},${th && d === hi ? 1 : 0}`;
            let t: number;
            if (last) t = end;
            else {
              let u = next.get(nk);
              if (u === undefined) {
                u = this.b.newState();
                next.set(nk, u);
              }
              t = u;
            }
            this.b.edge(s, 48 + d, 48 + d, t);
          }
        }
        layer = next;
      }
    }
  }

  /** Integers in [lo, hi] (already clamped to 15 digits). */
  private intRange(from: number, lo: number, hi: number): number | null {
    if (lo > hi) return null;
    const b = this.b;
    const end = b.newState();
    if (hi >= 0) this.nonnegRange(from, Math.max(lo, 0), hi, end);
    if (lo < 0) {
      const neg = b.newState();
      b.byte(from, '-', neg);
      this.nonnegRange(neg, Math.max(hi < 0 ? -hi : 1, 1), -lo, end);
    }
    return end;
  }

  private intBounds(n: NumC): [number, number] {
    let lo = n.min === null ? -MAX_INT : n.exclMin ? Math.floor(n.min) + 1 : Math.ceil(n.min);
    let hi = n.max === null ? MAX_INT : n.exclMax ? Math.ceil(n.max) - 1 : Math.floor(n.max);
    lo = Math.max(lo, -MAX_INT);
    hi = Math.min(hi, MAX_INT);
    return [lo, hi];
  }

  private integer(n: NumC, from: number, path: string): number | null {
    const [lo, hi] = this.intBounds(n);
    if (lo === -MAX_INT && hi === MAX_INT) {
      const b = this.b;
      const p = b.newState();
      b.eps(from, p);
      b.byte(from, '-', p);
      const end = b.newState();
      this.digits(p, end);
      return end;
    }
    return this.intRange(from, lo, hi) ?? this.fail(`no integer (of at most 15 digits) satisfies "minimum"/"maximum" (at ${path})`);
  }

  /**
   * `.F` into `end`: F of 1..maxF digits, last digit not 0, with lo <= 0.F <= hi (each bound's
   * fraction digits compared as decimals; strict when not inclusive; null: no bound).
   */
  private fraction(from: number, end: number, maxF: number, lo: DecBound | null, hi: DecBound | null): void {
    const b = this.b;
    const digit = (f: string, i: number) => (i < f.length ? f.charCodeAt(i) - 48 : 0);
    const restZero = (f: string, i: number) => !/[1-9]/.test(f.slice(i));
    const dot = b.newState();
    b.byte(from, '.', dot);
    // States by (position, still equal to lo's digits, still equal to hi's digits).
    let layer = new Map<string, number>([[`${lo ? 1 : 0}${hi ? 1 : 0}`, dot]]);
    for (let pos = 0; pos < maxF && layer.size; pos++) {
      const next = new Map<string, number>();
      for (const [k, s0] of layer) {
        const tl = k[0] === '1';
        const th = k[1] === '1';
        const dlo = tl ? digit(lo!.frac, pos) : 0;
        const dhi = th ? digit(hi!.frac, pos) : 9;
        for (let d = dlo; d <= dhi; d++) {
          const tl2 = tl && d === dlo;
          const th2 = th && d === dhi;
          const okLo = !tl2 || (restZero(lo!.frac, pos + 1) && lo!.incl);
          const okHi = !th2 || !restZero(hi!.frac, pos + 1) || hi!.incl;
          if (d !== 0 && okLo && okHi) b.byte(s0, 48 + d, end);
          if (pos + 1 < maxF) {
            const nk = `${tl2 ? 1 : 0}${th2 ? 1 : 0}`;
            let t = next.get(nk);
            if (t === undefined) {
              t = b.newState();
              next.set(nk, t);
            }
            b.byte(s0, 48 + d, t);
          }
        }
      }
      layer = next;
    }
  }

  /**
   * Non-integers I.F (F != 0) in [lo, hi] for non-negative bounds (null: 0 below / 15 digits above),
   * with at most 15 significant digits, so that distinct texts are distinct doubles and strict
   * bounds hold after parsing.
   */
  private positiveFractions(from: number, end: number, lo: DecBound | null, hi: DecBound | null): void {
    if (lo && lo.int > MAX_INT) return;
    if (hi && hi.int > MAX_INT) hi = null;
    const ia = lo ? lo.int : 0;
    const ib = hi ? hi.int : MAX_INT;
    if (ia > ib) return;
    const lenOf = (x: number) => String(x).length;
    const single = (i: number, l: DecBound | null, h: DecBound | null) => this.fraction(this.b.literal(from, String(i)), end, 15 - lenOf(i), l, h);
    if (ia === ib) {
      single(ia, lo, hi);
      return;
    }
    single(ia, lo, null);
    if (hi) single(ib, null, hi);
    const x = ia + 1;
    const y = hi ? ib - 1 : ib;
    for (let L = lenOf(x); L <= lenOf(y); L++) {
      const a = Math.max(x, L === 1 ? 0 : 10 ** (L - 1));
      const z = Math.min(y, 10 ** L - 1);
      if (a > z) continue;
      const mid = this.b.newState();
      this.nonnegRange(from, a, z, mid);
      this.fraction(mid, end, 15 - L, null, null);
    }
  }

  private number(n: NumC, from: number, path: string): number | null {
    const b = this.b;
    if (n.min === null && n.max === null) {
      const p = b.newState();
      b.eps(from, p);
      b.byte(from, '-', p);
      const int = b.newState();
      this.digits(p, int);
      const end = b.newState();
      // Optional fraction.
      const afterFrac = b.newState();
      b.eps(int, afterFrac);
      let cur = b.newState();
      b.byte(int, '.', cur);
      for (let k = 0; k < 15; k++) {
        const nx = b.newState();
        b.edge(cur, 0x30, 0x39, nx);
        b.eps(nx, afterFrac);
        cur = nx;
      }
      // Optional exponent.
      b.eps(afterFrac, end);
      const e = b.newState();
      b.edge(afterFrac, 0x45, 0x45, e);
      b.edge(afterFrac, 0x65, 0x65, e);
      const sign = b.newState();
      b.eps(e, sign);
      b.byte(e, '+', sign);
      b.byte(e, '-', sign);
      const d1 = b.newState();
      b.edge(sign, 0x30, 0x39, d1);
      b.eps(d1, end);
      b.edge(d1, 0x30, 0x39, end);
      return end;
    }
    // Bounded: integers in range, or I.F / -I.F (F != 0) inside the bounds.
    const ends: number[] = [];
    const [loI, hiI] = this.intBounds(n);
    const ints = this.intRange(from, loI, hiI);
    if (ints !== null) ends.push(ints);
    const bound = (x: number, incl: boolean): DecBound => {
      const d = decimalParts(x);
      return { int: d.int.length > 16 ? Infinity : Number(d.int), frac: d.frac, incl };
    };
    const fr = b.newState();
    // x > 0: from max(lo, 0) (no bound when lo <= 0) to hi.
    if (n.max === null || n.max > 0) {
      this.positiveFractions(from, fr, n.min !== null && n.min > 0 ? bound(n.min, !n.exclMin) : null, n.max !== null ? bound(n.max, !n.exclMax) : null);
    }
    // x < 0: -y with y from max(-hi, 0) to -lo.
    if (n.min === null || n.min < 0) {
      const neg = b.newState();
      b.byte(from, '-', neg);
      this.positiveFractions(neg, fr, n.max !== null && n.max < 0 ? bound(n.max, !n.exclMax) : null, n.min !== null ? bound(n.min, !n.exclMin) : null);
    }
    ends.push(fr);
    if (ints === null && n.min !== null && n.max !== null && (n.min > n.max || (n.min === n.max && (n.exclMin || n.exclMax)))) {
      return this.fail(`no number satisfies "minimum"/"maximum" (at ${path})`);
    }
    const end = b.newState();
    for (const e of ends) b.eps(e, end);
    return end;
  }

  // --- containers ----------------------------------------------------------------------------

  private object(o: ObjC, from: number, ctx: Ctx, path: string): number | null {
    const b = this.b;
    const members: { name: string; node: Node; required: boolean }[] = o.props.map(([name, node]) => ({ name, node, required: o.required.includes(name) }));
    for (const r of o.required) if (!o.props.some(([name]) => name === r)) members.push({ name: r, node: o.additional, required: true });
    if (members.length === 0) return this.map(o, from, ctx, path);
    if (o.minProperties > o.maxProperties) return this.fail(`"minProperties" ${o.minProperties} > "maxProperties" ${o.maxProperties} (at ${path})`);
    // Drop impossible optional members; an impossible required one makes the object impossible.
    const open = b.literal(from, '{');
    const first = this.ws(open);
    const entries: (number | null)[] = [];
    const exits: (number | null)[] = [];
    for (const m of members) {
      const p = b.newState();
      const k = this.ws(b.literal(p, JSON.stringify(m.name)));
      const v = this.ws(b.literal(k, ':'));
      const e = this.value(m.node, v, ctx);
      if (e === null && m.required) {
        const undeclared = !o.props.some(([name]) => name === m.name);
        return this.fail(`the required property ${JSON.stringify(m.name)} cannot be satisfied${undeclared ? ' (it is not in "properties", and "additionalProperties" does not allow it)' : ''} (at ${path})`);
      }
      entries.push(e === null ? null : p);
      exits.push(e);
    }
    const live = members.map((m, i) => ({ ...m, i })).filter((m) => entries[m.i] !== null);
    // minProperties / maxProperties by choosing which optional members are mandatory / absent;
    // more than the declared properties: undeclared keys (additionalProperties) after them.
    let nReq = live.filter((m) => m.required).length;
    if (o.maxProperties < nReq) return this.fail(`"maxProperties" ${o.maxProperties} < the ${nReq} required properties (at ${path})`);
    const extras = Math.max(0, o.minProperties - live.length);
    if (extras > 0 && deref(o.additional).k === 'never') {
      return this.fail(`"minProperties" ${o.minProperties} needs more properties than the ${live.length} declared ones, and "additionalProperties" allows no others (at ${path})`);
    }
    for (const m of live) {
      if (nReq >= o.minProperties) break;
      if (!m.required) {
        m.required = true;
        nReq++;
      }
    }
    while (live.length > o.maxProperties) {
      const idx = live.map((m) => m.required).lastIndexOf(false);
      live.splice(idx, 1);
    }
    const n = live.length;
    const end = b.newState();
    // need[i]: a member from live[i..] must come next.
    const need: number[] = [];
    for (let i = 0; i <= n; i++) need.push(b.newState());
    for (let i = 0; i < n; i++) {
      b.eps(need[i]!, entries[live[i]!.i]!);
      if (!live[i]!.required) b.eps(need[i]!, need[i + 1]!);
    }
    const restOptional = (i: number) => live.slice(i).every((m) => !m.required);
    b.eps(first, need[0]!);
    if (extras > 0) {
      // Every live member is required here; then `extras` undeclared keys, longer than every
      // declared name (so never one of them) and of lengths distinct modulo `extras` (so never
      // equal to each other): the object really has minProperties keys once parsed.
      const longest = Math.max(...members.map((m) => [...m.name].length));
      for (let i = 0; i + 1 < n; i++) b.eps(this.ws(b.literal(this.ws(exits[live[i]!.i]!), ',')), need[i + 1]!);
      let cur = n === 0 ? first : this.ws(b.literal(this.ws(exits[live[n - 1]!.i]!), ','));
      for (let j = 0; j < extras; j++) {
        const k = this.keyString(cur, longest + 1, extras, j);
        const e = this.value(o.additional, this.ws(b.literal(this.ws(k), ':')), ctx);
        if (e === null) return this.fail(`"minProperties" ${o.minProperties} needs undeclared properties, and their schema ("additionalProperties") cannot be satisfied (at ${path})`);
        const a = this.ws(e);
        if (j + 1 === extras) b.byte(a, '}', end);
        else cur = this.ws(b.literal(a, ','));
      }
      return end;
    }
    if (restOptional(0)) b.byte(first, '}', end);
    for (let i = 0; i < n; i++) {
      const a = this.ws(exits[live[i]!.i]!);
      if (restOptional(i + 1)) b.byte(a, '}', end);
      if (i + 1 < n) b.eps(this.ws(b.literal(a, ',')), need[i + 1]!);
    }
    return end;
  }

  /** An object with free keys: values per `additional`, count in [minProperties, maxProperties]. */
  private map(o: ObjC, from: number, ctx: Ctx, path: string): number | null {
    const b = this.b;
    const min = o.minProperties;
    const max = o.maxProperties;
    if (min > max) return this.fail(`"minProperties" ${min} > "maxProperties" ${max} (at ${path})`);
    const first = this.ws(b.literal(from, '{'));
    const end = b.newState();
    if (min === 0) b.byte(first, '}', end);
    if (max === 0) return min === 0 ? end : null;
    if (deref(o.additional).k === 'never') return min === 0 ? end : this.fail(`"minProperties" ${min} with "additionalProperties": false and no "properties" (at ${path})`);
    const chain = b.chain();
    const unit = 4 + this.minBytes(o.additional); // "":value,
    let entry = first;
    for (let k = 0; ; k++) {
      const looping = max === Infinity && k >= min;
      // The first minProperties keys have lengths distinct modulo minProperties: duplicate keys
      // would collapse into one when parsed and leave too few properties.
      const distinct = min >= 2 && k < min;
      b.enter(chain, looping ? 'loop' : `${this.clamp(min - k, unit)}:${this.clamp(max - k, unit)}${distinct ? `:r${k}` : ''}`);
      // A fresh start state: `entry` may also close the object, which must not follow a comma.
      const start = b.newState();
      b.eps(entry, start);
      const key = distinct ? this.keyString(start, 0, min, k) : this.string(FREE_STRING, start, path)!;
      const v = this.ws(b.literal(this.ws(key), ':'));
      const e = this.value(o.additional, v, ctx);
      if (e === null) {
        b.leave();
        return min === 0 ? end : this.fail(`"minProperties" ${min} needs properties whose schema ("additionalProperties") cannot be satisfied (at ${path})`);
      }
      const a = this.ws(e);
      if (k + 1 >= min) b.byte(a, '}', end);
      let next: number | null = null;
      if (k + 1 < max) next = this.ws(b.literal(a, ','));
      b.leave();
      if (looping) {
        b.eps(next!, start);
        break;
      }
      if (next === null) break;
      entry = next;
    }
    return end;
  }

  /** The values a node can take, when they are few (uniqueItems); null when not finite or too many. */
  private finiteValues(n: Node, limit: number, depth = 0): unknown[] | null {
    if (depth > 8) return null;
    n = deref(n);
    let vals: unknown[] | null;
    switch (n.k) {
      case 'any':
        return null;
      case 'never':
        return [];
      case 'ref':
        return null;
      case 'anyOf':
      case 'oneOf': {
        vals = [];
        for (const o of n.options) {
          const v = this.finiteValues(o, limit, depth + 1);
          if (v === null) return null;
          vals.push(...v);
        }
        break;
      }
      case 'typed': {
        if (n.enum !== null) vals = n.enum;
        else {
          const types = n.types ?? (n.has.size ? n.has : null);
          if (types === null) return null;
          vals = [];
          for (const t of types) {
            if (t === 'boolean') vals.push(true, false);
            else if (t === 'null') vals.push(null);
            else if (t === 'integer' && !types.has('number')) {
              const [lo, hi] = this.intBounds(n.num);
              if (hi - lo + 1 > limit) return null;
              for (let x = lo; x <= hi; x++) vals.push(x);
            } else return null;
          }
        }
      }
    }
    const out: unknown[] = [];
    for (const v of vals) if (accepts(n, v) && !out.some((w) => jsonEqual(v, w))) out.push(v);
    return out.length > limit ? null : out;
  }

  /**
   * uniqueItems over a finite set of values: the items are written in the order of that set
   * (a strictly increasing subsequence), so no value can repeat and the automaton stays small.
   */
  private uniqueArray(a: ArrC, from: number, path: string): number | null {
    const b = this.b;
    const vals = a.prefix.length === 0 ? this.finiteValues(a.items, 64) : null;
    const item = deref(a.items);
    if (vals === null && a.prefix.length === 0 && item.k === 'typed' && item.enum === null && !item.str.format && !item.str.pattern) {
      const types = item.types ?? (item.has.size ? item.has : null);
      if (types !== null && types.size === 1 && types.has('string')) return this.stringSet(a, item.str, from, path);
    }
    if (vals === null) {
      throw new SchemaError([
        `unsupported keyword "uniqueItems" (true is supported when "items" take at most 64 distinct values — enum, const, boolean, null, small integer ranges — or are plain strings, or with "maxItems" <= 1; without "prefixItems") (at ${path})`,
      ]);
    }
    const K = vals.length;
    const { minItems: min, maxItems: max } = a;
    if (min > K) return this.fail(`"minItems" ${min} with "uniqueItems" but only ${K} distinct item values (at ${path})`);
    const texts = vals.map((v) => JSON.stringify(v));
    const first = this.ws(b.literal(from, '['));
    const end = b.newState();
    if (min === 0) b.byte(first, ']', end);
    if (K === 0 || max === 0) return min === 0 ? end : null;
    // Count levels 1..L: exact up to maxItems when it can bind, else saturating at minItems.
    const sat = max >= K;
    const L = sat ? Math.max(min, 1) : max;
    const gates = new Map<number, number>();
    const gate = (c: number, j: number) => {
      const k = c * (K + 1) + j;
      let g = gates.get(k);
      if (g === undefined) {
        g = b.newState();
        gates.set(k, g);
      }
      return g;
    };
    for (let c = 1; c <= L; c++) {
      for (let j = 0; j < K; j++) {
        const g = gate(c, j);
        if (j + 1 < K) b.eps(g, gate(c, j + 1));
        const after = this.ws(b.literal(g, texts[j]!));
        if (c >= min) b.byte(after, ']', end);
        const c2 = sat ? Math.min(c + 1, L) : c + 1;
        if (c2 <= L && (sat || c < max) && j + 1 < K) b.eps(this.ws(b.literal(after, ',')), gate(c2, j + 1));
      }
    }
    b.eps(first, gate(1, 0));
    return end;
  }

  /**
   * uniqueItems over plain strings (pydantic set[str]): at most 8 items, item j of a length
   * that is j modulo the item count, so no two can be equal.
   */
  private stringSet(a: ArrC, c: StringC, from: number, path: string): number | null {
    const b = this.b;
    const N = Math.min(a.maxItems, 8);
    const min = a.minItems;
    if (min > N) return this.fail(`"minItems" ${min} with "uniqueItems" on strings: at most 8 distinct strings are generated (at ${path})`);
    if (c.minLength > c.maxLength) return this.fail(`"minLength" ${c.minLength} > "maxLength" ${c.maxLength} (at ${path})`);
    const first = this.ws(b.literal(from, '['));
    const end = b.newState();
    if (min === 0) b.byte(first, ']', end);
    let entry = first;
    for (let j = 0; j < N; j++) {
      const e = this.residueString(entry, c, N, j);
      if (e === null) {
        if (j < min) return this.fail(`"minItems" ${min} with "uniqueItems": the item lengths allowed ("minLength"/"maxLength") leave too few distinct strings (at ${path})`);
        break;
      }
      const after = this.ws(e);
      if (j + 1 >= min) b.byte(after, ']', end);
      if (j + 1 < N) entry = this.ws(b.literal(after, ','));
    }
    return end;
  }

  /** A free string of minLength..maxLength code points whose length is r modulo mod; null if none. */
  private residueString(from: number, c: StringC, mod: number, r: number): number | null {
    const b = this.b;
    const { minLength: lo, maxLength: hi } = c;
    let some = false;
    for (let L = lo; L <= Math.min(hi, lo + mod - 1); L++) if (L % mod === r) some = true;
    if (!some) return null;
    let cur = b.literal(from, '"');
    for (let i = 0; i < lo; i++) {
      const nx = b.newState();
      this.char(cur, nx);
      cur = nx;
    }
    const end = b.newState();
    if (hi === Infinity) {
      const cyc = [cur];
      for (let k = 1; k < mod; k++) cyc.push(b.newState());
      for (let k = 0; k < mod; k++) this.char(cyc[k]!, cyc[(k + 1) % mod]!);
      for (let k = 0; k < mod; k++) if ((lo + k) % mod === r) b.byte(cyc[k]!, '"', end);
      return end;
    }
    for (let L = lo; ; L++) {
      if (L % mod === r) b.byte(cur, '"', end);
      if (L === hi) break;
      const nx = b.newState();
      this.char(cur, nx);
      cur = nx;
    }
    return end;
  }

  private array(a: ArrC, from: number, ctx: Ctx, path: string): number | null {
    const b = this.b;
    const min = a.minItems;
    const max = a.maxItems;
    if (min > max) return this.fail(`"minItems" ${min} > "maxItems" ${max} (at ${path})`);
    if (a.unique && max > 1) return this.uniqueArray(a, from, path);
    const first = this.ws(b.literal(from, '['));
    const end = b.newState();
    if (min === 0) b.byte(first, ']', end);
    const chain = b.chain();
    let entry = first;
    const restNever = deref(a.items).k === 'never';
    const unit = restNever ? 1 : 1 + this.minBytes(a.items); // item and comma
    for (let i = 0; i < max; i++) {
      const isPrefix = i < a.prefix.length;
      if (!isPrefix && restNever) {
        if (i < min) return this.fail(`"minItems" ${min} but no items after the ${a.prefix.length} of "prefixItems" are allowed (at ${path})`);
        break;
      }
      const looping = !isPrefix && max === Infinity && i >= min;
      b.enter(chain, isPrefix ? `p${i}` : looping ? 'loop' : `r:${this.clamp(min - i, unit)}:${this.clamp(max - i, unit)}`);
      const start = b.newState();
      b.eps(entry, start);
      const e = this.value(isPrefix ? a.prefix[i]! : a.items, start, ctx);
      if (e === null) {
        b.leave();
        if (i < min) return this.fail(`item ${i} is required by "minItems" ${min} but its schema cannot be satisfied (at ${path})`);
        break;
      }
      const after = this.ws(e);
      if (i + 1 >= min) b.byte(after, ']', end);
      let next: number | null = null;
      if (i + 1 < max) next = this.ws(b.literal(after, ','));
      b.leave();
      if (looping) {
        b.eps(next!, start);
        break;
      }
      if (next === null) break;
      entry = next;
    }
    return end;
  }
}
