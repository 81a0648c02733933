// `pattern` (and the variable-shape `format`s, written as patterns) for structured output: an
// ECMA-262 regular-expression subset parsed into an NFA over code points, which compile.ts lays
// into the byte automaton inside a JSON string (each code point as UTF-8, or as its one canonical
// JSON escape), intersected with minLength/maxLength.
//
// The subset is what a finite automaton can decide exactly: literals, `.`, classes (ranges,
// negation, \d \w \s and their negations), groups ((...), (?:...), (?<name>...)), alternation,
// quantifiers (* + ? {n} {n,} {n,m}, greedy or lazy: same language), and ^ / $ at the ends of a
// top-level alternative. Everything else is refused by name (backreferences, lookaround, word
// boundaries, Unicode property escapes, anchors inside groups). Semantics follow the `u` flag,
// which validators (ajv) use: `.` and classes match code points.
//
// Matching an enum value against a pattern (schema.ts) runs this NFA too, in time linear in the
// value: a pattern from a request never reaches a backtracking engine.

export class PatternError extends Error {}

/** Sorted, disjoint code-point ranges [lo, hi] (inclusive), surrogates excluded. */
export type CpSet = [number, number][];

const MAX_CP = 0x10ffff;
/** Quantifier repetitions expand copies; beyond this the pattern is refused. */
const MAX_REPEAT = 1000;

function normalize(set: CpSet): CpSet {
  const s = set
    .filter(([a, b]) => a <= b)
    .map(([a, b]) => [a, b] as [number, number])
    .sort((x, y) => x[0] - y[0]);
  const out: CpSet = [];
  for (const [a, b] of s) {
    const last = out[out.length - 1];
    if (last && a <= last[1] + 1) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  // Lone surrogates are not characters of a JSON string we write.
  const res: CpSet = [];
  for (const [a, b] of out) {
    if (b < 0xd800 || a > 0xdfff) res.push([a, b]);
    else {
      if (a < 0xd800) res.push([a, 0xd7ff]);
      if (b > 0xdfff) res.push([0xe000, b]);
    }
  }
  return res;
}

function complement(set: CpSet): CpSet {
  const s = normalize(set);
  const out: CpSet = [];
  let next = 0;
  for (const [a, b] of s) {
    if (a > next) out.push([next, a - 1]);
    next = b + 1;
  }
  if (next <= MAX_CP) out.push([next, MAX_CP]);
  return normalize(out);
}

const DIGIT: CpSet = [[0x30, 0x39]];
const WORD: CpSet = normalize([[0x30, 0x39], [0x41, 0x5a], [0x5f, 0x5f], [0x61, 0x7a]]);
const SPACE: CpSet = normalize([
  [0x09, 0x0d], [0x20, 0x20], [0xa0, 0xa0], [0x1680, 0x1680], [0x2000, 0x200a], [0x2028, 0x2029], [0x202f, 0x202f], [0x205f, 0x205f], [0x3000, 0x3000], [0xfeff, 0xfeff],
]);
/** `.` with the u flag and without s: any code point but line terminators. */
const DOT: CpSet = complement([[0x0a, 0x0a], [0x0d, 0x0d], [0x2028, 0x2029]]);
export const ANY_CP: CpSet = complement([]);

type Ast =
  | { t: 'set'; set: CpSet }
  | { t: 'seq'; items: Ast[] }
  | { t: 'alt'; options: Ast[] }
  | { t: 'rep'; node: Ast; min: number; max: number };

const SYNTAX = '^$\\.*+?()[]{}|/-';

class Parser {
  i = 0;
  constructor(readonly src: string) {}

  private get ch(): string {
    return this.i < this.src.length ? String.fromCodePoint(this.src.codePointAt(this.i)!) : '';
  }
  private eat(): string {
    const c = this.ch;
    this.i += c.length;
    return c;
  }
  private fail(what: string): never {
    throw new PatternError(`${what} (at offset ${this.i} of the pattern)`);
  }

  /** Top level: alternatives, each optionally anchored at its start (^) and end ($). */
  top(): { node: Ast; start: boolean; end: boolean }[] {
    const out: { node: Ast; start: boolean; end: boolean }[] = [];
    for (;;) {
      let start = false;
      if (this.ch === '^') {
        this.eat();
        start = true;
      }
      const items = this.seq(true);
      let end = false;
      if (this.ch === '$') {
        this.eat();
        end = true;
      }
      out.push({ node: { t: 'seq', items }, start, end });
      if (this.ch === '|') {
        this.eat();
        continue;
      }
      if (this.i < this.src.length) this.fail(this.ch === ')' ? 'unbalanced ")"' : `"${this.ch}" is not supported here`);
      return out;
    }
  }

  private alt(): Ast {
    const options: Ast[] = [{ t: 'seq', items: this.seq(false) }];
    while (this.ch === '|') {
      this.eat();
      options.push({ t: 'seq', items: this.seq(false) });
    }
    return options.length === 1 ? options[0]! : { t: 'alt', options };
  }

  private seq(top: boolean): Ast[] {
    const items: Ast[] = [];
    for (;;) {
      const c = this.ch;
      if (c === '' || c === '|' || c === ')') return items;
      if (c === '$') {
        if (top && (this.i + 1 === this.src.length || this.src[this.i + 1] === '|')) return items;
        this.fail('anchor "$" inside the pattern (only at the end of a top-level alternative) is not supported');
      }
      if (c === '^') this.fail('anchor "^" inside the pattern (only at the start of a top-level alternative) is not supported');
      const atom = this.atom();
      items.push(this.quantified(atom));
    }
  }

  private quantified(atom: Ast): Ast {
    const c = this.ch;
    let min: number;
    let max: number;
    if (c === '*') [min, max] = [0, Infinity];
    else if (c === '+') [min, max] = [1, Infinity];
    else if (c === '?') [min, max] = [0, 1];
    else if (c === '{') {
      const m = /^\{(\d+)(,(\d*))?\}/.exec(this.src.slice(this.i));
      if (!m) this.fail('"{" that does not start a quantifier must be escaped');
      min = Number(m[1]);
      max = m[2] === undefined ? min : m[3] === '' ? Infinity : Number(m[3]);
      if (max < min) this.fail('quantifier {n,m} with m < n');
      if (min > MAX_REPEAT || (max !== Infinity && max > MAX_REPEAT)) this.fail(`quantifier bound over ${MAX_REPEAT}`);
      this.i += m[0].length - 1;
    } else return atom;
    this.eat();
    if (this.ch === '?') this.eat(); // lazy: same language
    if (this.ch === '*' || this.ch === '+' || this.ch === '?' || this.ch === '{') this.fail('a quantifier directly after another quantifier');
    return { t: 'rep', node: atom, min, max };
  }

  private atom(): Ast {
    const c = this.eat();
    switch (c) {
      case '(': {
        if (this.src.startsWith('?:', this.i)) this.i += 2;
        else if (this.src.startsWith('?=', this.i) || this.src.startsWith('?!', this.i)) this.fail('lookahead "(?=" / "(?!" is not supported');
        else if (this.src.startsWith('?<=', this.i) || this.src.startsWith('?<!', this.i)) this.fail('lookbehind "(?<=" / "(?<!" is not supported');
        else if (this.src.startsWith('?<', this.i)) {
          const m = /^\?<([A-Za-z_$][\w$]*)>/.exec(this.src.slice(this.i));
          if (!m) this.fail('malformed named group');
          this.i += m[0].length;
        } else if (this.ch === '?') this.fail('group modifiers "(?..." other than (?: and (?<name> are not supported');
        const inner = this.alt();
        if (this.eat() !== ')') this.fail('unterminated group');
        return inner;
      }
      case '[':
        return { t: 'set', set: this.cls() };
      case '.':
        return { t: 'set', set: DOT };
      case '\\':
        return { t: 'set', set: this.escape(false) };
      case '*':
      case '+':
      case '?':
      case '{':
        return this.fail(`nothing to repeat before "${c}"`);
      case '}':
      case ']':
        return this.fail(`lone "${c}" must be escaped (u flag)`);
      default: {
        const cp = c.codePointAt(0)!;
        return { t: 'set', set: normalize([[cp, cp]]) };
      }
    }
  }

  /** After a backslash; `inClass`: inside [...] (\b is backspace there). */
  private escape(inClass: boolean): CpSet {
    const c = this.eat();
    if (c === '') this.fail('pattern ends with "\\"');
    switch (c) {
      case 'd':
        return DIGIT;
      case 'D':
        return complement(DIGIT);
      case 'w':
        return WORD;
      case 'W':
        return complement(WORD);
      case 's':
        return SPACE;
      case 'S':
        return complement(SPACE);
      case 't':
        return [[9, 9]];
      case 'n':
        return [[10, 10]];
      case 'v':
        return [[11, 11]];
      case 'f':
        return [[12, 12]];
      case 'r':
        return [[13, 13]];
      case '0':
        if (/\d/.test(this.ch)) this.fail('octal escapes are not supported');
        return [[0, 0]];
      case 'b':
        if (inClass) return [[8, 8]];
        return this.fail('word boundary "\\b" is not supported');
      case 'B':
        return this.fail('word boundary "\\B" is not supported');
      case 'x': {
        const m = /^[0-9A-Fa-f]{2}/.exec(this.src.slice(this.i));
        if (!m) this.fail('malformed "\\x" escape');
        this.i += 2;
        const v = parseInt(m[0], 16);
        return [[v, v]];
      }
      case 'u': {
        let m = /^\{([0-9A-Fa-f]{1,6})\}/.exec(this.src.slice(this.i));
        if (m) {
          const v = parseInt(m[1]!, 16);
          if (v > MAX_CP) this.fail('code point escape over U+10FFFF');
          this.i += m[0].length;
          return normalize([[v, v]]);
        }
        m = /^[0-9A-Fa-f]{4}/.exec(this.src.slice(this.i));
        if (!m) this.fail('malformed "\\u" escape');
        this.i += 4;
        let v = parseInt(m[0], 16);
        // A surrogate pair written as two escapes is one code point.
        const lo = /^\\u([dD][c-fC-F][0-9A-Fa-f]{2})/.exec(this.src.slice(this.i));
        if (v >= 0xd800 && v <= 0xdbff && lo) {
          v = 0x10000 + ((v - 0xd800) << 10) + (parseInt(lo[1]!, 16) - 0xdc00);
          this.i += 6;
        }
        return normalize([[v, v]]);
      }
      case 'c':
        return this.fail('control escapes "\\c" are not supported');
      case 'p':
      case 'P':
        return this.fail(`Unicode property escapes "\\${c}{...}" are not supported`);
      case 'k':
        return this.fail('named backreferences "\\k<...>" are not supported');
      default:
        if (/[1-9]/.test(c)) return this.fail(`backreferences "\\${c}" are not supported`);
        if (SYNTAX.includes(c)) {
          const v = c.codePointAt(0)!;
          return [[v, v]];
        }
        return this.fail(`unknown escape "\\${c}" (invalid with the u flag)`);
    }
  }

  private cls(): CpSet {
    let negate = false;
    if (this.ch === '^') {
      this.eat();
      negate = true;
    }
    const parts: CpSet = [];
    const single = (): CpSet | number => {
      const c = this.eat();
      if (c === '') this.fail('unterminated character class');
      if (c === '\\') {
        const s = this.escape(true);
        return s.length === 1 && s[0]![0] === s[0]![1] ? s[0]![0] : s;
      }
      if (c === '[') this.fail('nested classes / set operations (v flag) are not supported');
      return c.codePointAt(0)!;
    };
    while (this.ch !== ']') {
      if (this.ch === '') this.fail('unterminated character class');
      const a = single();
      if (this.ch === '-' && this.src[this.i + 1] !== ']' && this.i + 1 < this.src.length) {
        this.eat();
        const b = single();
        if (typeof a !== 'number' || typeof b !== 'number') this.fail('a class escape (\\d, \\w, ...) cannot bound a range');
        if (b < a) this.fail('range out of order in character class');
        parts.push([a, b]);
      } else if (typeof a === 'number') parts.push([a, a]);
      else parts.push(...a);
    }
    this.eat();
    return negate ? complement(parts) : normalize(parts);
  }
}

/**
 * A code-point NFA: states 0..n-1, start 0, epsilon edges and range edges. Kept small and plain:
 * it is laid into the byte NFA once per string position count (compile.ts).
 */
export interface CpNfa {
  n: number;
  start: number;
  final: number;
  eps: [number, number][];
  edges: { from: number; set: CpSet; to: number }[];
}

class CpBuilder {
  n = 0;
  eps: [number, number][] = [];
  edges: { from: number; set: CpSet; to: number }[] = [];
  constructor(private readonly maxStates: number) {}
  state(): number {
    if (this.n >= this.maxStates) throw new PatternError(`the pattern needs more than ${this.maxStates} states`);
    return this.n++;
  }
  emit(a: Ast, from: number): number {
    switch (a.t) {
      case 'set': {
        const to = this.state();
        if (a.set.length) this.edges.push({ from, set: a.set, to });
        return to;
      }
      case 'seq': {
        let cur = from;
        for (const x of a.items) cur = this.emit(x, cur);
        return cur;
      }
      case 'alt': {
        const end = this.state();
        for (const o of a.options) {
          const s = this.state();
          this.eps.push([from, s]);
          this.eps.push([this.emit(o, s), end]);
        }
        return end;
      }
      case 'rep': {
        let cur = from;
        for (let k = 0; k < a.min; k++) cur = this.emit(a.node, cur);
        if (a.max === Infinity) {
          const loop = this.state();
          this.eps.push([cur, loop]);
          this.eps.push([this.emit(a.node, loop), loop]);
          return loop;
        }
        const end = this.state();
        this.eps.push([cur, end]);
        for (let k = a.min; k < a.max; k++) {
          cur = this.emit(a.node, cur);
          this.eps.push([cur, end]);
        }
        return end;
      }
    }
  }
}

const patternCache = new Map<string, CpNfa>();

/** Compiles a pattern (JSON Schema semantics: unanchored unless ^ / $) to a code-point NFA; the last 64 are cached. */
export function compilePattern(src: string): CpNfa {
  let nfa = patternCache.get(src);
  if (nfa) {
    patternCache.delete(src);
  } else {
    nfa = buildPattern(src, 20_000);
    if (patternCache.size >= 64) patternCache.delete(patternCache.keys().next().value!);
  }
  patternCache.set(src, nfa);
  return nfa;
}

function buildPattern(src: string, maxStates: number): CpNfa {
  const alts = new Parser(src).top();
  const b = new CpBuilder(maxStates);
  const start = b.state();
  const final = b.state();
  for (const { node, start: anchoredStart, end: anchoredEnd } of alts) {
    let cur = b.state();
    b.eps.push([start, cur]);
    if (!anchoredStart) cur = b.emit({ t: 'rep', node: { t: 'set', set: ANY_CP }, min: 0, max: Infinity }, cur);
    cur = b.emit(node, cur);
    if (!anchoredEnd) cur = b.emit({ t: 'rep', node: { t: 'set', set: ANY_CP }, min: 0, max: Infinity }, cur);
    b.eps.push([cur, final]);
  }
  return { n: b.n, start, final, eps: b.eps, edges: b.edges };
}

/** Whether the NFA accepts the whole of `s` (simulation: linear in the length of `s`). */
export function cpMatches(nfa: CpNfa, s: string): boolean {
  const epsOf: number[][] = Array.from({ length: nfa.n }, () => []);
  for (const [a, b] of nfa.eps) epsOf[a]!.push(b);
  const close = (set: Set<number>) => {
    const st = [...set];
    while (st.length) {
      const x = st.pop()!;
      for (const y of epsOf[x]!) if (!set.has(y)) set.add(y), st.push(y);
    }
    return set;
  };
  let cur = close(new Set([nfa.start]));
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    const next = new Set<number>();
    for (const e of nfa.edges) if (cur.has(e.from) && e.set.some(([a, b]) => cp >= a && cp <= b)) next.add(e.to);
    cur = close(next);
    if (cur.size === 0) return false;
  }
  return cur.has(nfa.final);
}

/**
 * UTF-8 byte-range sequences covering code points [lo, hi] (no surrogates): each sequence is a
 * list of [loByte, hiByte] per byte position, and every code point is in exactly one sequence.
 */
export function utf8Sequences(lo: number, hi: number, out: [number, number][][] = []): [number, number][][] {
  if (lo > hi) return out;
  for (const b of [0x7f, 0x7ff, 0xffff]) {
    if (lo <= b && hi > b) {
      utf8Sequences(lo, b, out);
      utf8Sequences(b + 1, hi, out);
      return out;
    }
  }
  if (hi < 0x80) {
    out.push([[lo, hi]]);
    return out;
  }
  const n = hi < 0x800 ? 2 : hi < 0x10000 ? 3 : 4;
  for (let i = 1; i < n; i++) {
    const m = (1 << (6 * i)) - 1;
    if ((lo & ~m) !== (hi & ~m)) {
      if ((lo & m) !== 0) {
        utf8Sequences(lo, lo | m, out);
        utf8Sequences((lo | m) + 1, hi, out);
        return out;
      }
      if ((hi & m) !== m) {
        utf8Sequences(lo, (hi & ~m) - 1, out);
        utf8Sequences(hi & ~m, hi, out);
        return out;
      }
    }
  }
  const a = Buffer.from(String.fromCodePoint(lo), 'utf-8');
  const z = Buffer.from(String.fromCodePoint(hi), 'utf-8');
  out.push(Array.from(a, (x, k) => [x, z[k]!] as [number, number]));
  return out;
}

/**
 * Patterns of the variable-shape formats we generate (a subset of what each format allows:
 * DNS labels of at most 24 characters, where 63 would be valid, keep the automata small).
 */
const LABEL = '[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,22}[a-zA-Z0-9])?';
const OCTET = '(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
export const FORMAT_PATTERNS = {
  email: `^[a-zA-Z0-9_+-]+(?:\\.[a-zA-Z0-9_+-]+)*@${LABEL}(?:\\.${LABEL}){1,3}$`,
  hostname: `^${LABEL}(?:\\.${LABEL}){0,2}$`,
  ipv4: `^${OCTET}(?:\\.${OCTET}){3}$`,
  ipv6: '^[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){7}$',
  uri: `^https?://${LABEL}(?:\\.${LABEL}){0,2}(?:/[a-zA-Z0-9._~-]*){0,8}(?:\\?[a-zA-Z0-9._~=&-]*)?$`,
} as const;
