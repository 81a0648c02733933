// Structured-output benchmark (not a test): schema compile time and per-token mask time with
// synthetic byte-level-BPE-like vocabularies of 32k and 150k tokens, compared with XGrammar's
// and llguidance's published figures. Prints a table and writes bench/structured/results.md.
//
//   node --import tsx bench/structured/bench.ts [--quick] [--out results-file.md]
//
// Per-token time is what the scheduler pays between engine steps for one sequence: the call of
// the mask function (advance over the new token, then the cached mask or a trie walk). Each
// generation samples uniformly among allowed tokens (a model that never "wants" JSON), so
// strings run to their limits and every part of the grammar is exercised.
import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { compileSchema } from '../../backend/structured/compile.ts';
import { Grammar, runPrecompute, setPrecompute } from '../../backend/structured/grammar.ts';
import { constraintOf } from '../../backend/structured/index.ts';
import { OPEN_SCHEMAS, TEST_SCHEMAS, USER_SCHEMAS } from '../../backend/structured/test-schemas.ts';
import { Vocab } from '../../backend/structured/vocab.ts';
import { mulberry32 } from '../../test/helpers/prng.ts';
import { quantile } from '../../test/helpers/quantile.ts';

const QUICK = process.argv.includes('--quick');

const rng = mulberry32;

// --- synthetic vocabularies ------------------------------------------------------------------

/**
 * A byte-level BPE-like vocabulary: the 256 bytes, then words (half with a leading space),
 * numbers, JSON punctuation runs (`":`, `"},{"`, ...), indentation, code, non-Latin text,
 * partial UTF-8 sequences and a few very long tokens, in proportions close to Llama 3 / Qwen2.
 */
function syntheticVocab(n: number, seed: number): Uint8Array[] {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)]!;
  const enc = new TextEncoder();
  const seen = new Set<string>();
  const out: Uint8Array[] = [];
  const add = (b: Uint8Array) => {
    const k = Buffer.from(b).toString('latin1');
    if (b.length === 0 || seen.has(k)) return;
    seen.add(k);
    out.push(b);
  };
  for (let b = 0; b < 256; b++) add(Uint8Array.of(b));
  const C = 'bcdfghjklmnprstvwxyz';
  const V = 'aeiouy';
  const syll = () => pick([...C]) + pick([...V]) + (r() < 0.4 ? pick([...C]) : '');
  const word = () => {
    let w = '';
    const k = 1 + Math.floor(r() * r() * 4);
    for (let i = 0; i < k; i++) w += syll();
    if (r() < 0.12) w = w[0]!.toUpperCase() + w.slice(1);
    return w;
  };
  const punct = ['"', ':', ',', '{', '}', '[', ']', ' ', '.', '(', ')', ';', '\n', "'", '-', '_', '/', '\\', '=', '<', '>', '*', '#', '!', '?'];
  const cjk = () => String.fromCodePoint(0x4e00 + Math.floor(r() * 0x5000));
  const accented = 'àáâäæãåāçèéêëēėęîïíīįìłñńôöòóœøōõßśšûüùúūÿžźż';
  while (out.length < n) {
    const x = r();
    let s: string | Uint8Array;
    if (x < 0.55) s = (r() < 0.55 ? ' ' : '') + word();
    else if (x < 0.6) s = (r() < 0.3 ? ' ' : '') + String(Math.floor(r() * 1000)).slice(0, 1 + Math.floor(r() * 3));
    else if (x < 0.66) {
      let p = '';
      const k = 1 + Math.floor(r() * 4);
      for (let i = 0; i < k; i++) p += pick(punct);
      s = p;
    } else if (x < 0.69) s = (r() < 0.5 ? '\n' : '') + ' '.repeat(1 + Math.floor(r() * 32));
    else if (x < 0.76) s = (r() < 0.5 ? ' ' : '') + word() + pick(['_', '::', '->', '()', '.', '=', '==', '("', '":', '",', '"']) + (r() < 0.5 ? word() : '');
    else if (x < 0.86) {
      let t = r() < 0.3 ? ' ' : '';
      const k = 1 + Math.floor(r() * 3);
      for (let i = 0; i < k; i++) t += cjk();
      s = t;
    } else if (x < 0.93) s = (r() < 0.5 ? ' ' : '') + word().replace(/[aeiou]/g, (c) => (r() < 0.4 ? pick([...accented]) : c));
    else if (x < 0.97) {
      // Partial UTF-8: the first bytes of a multi-byte character.
      const full = enc.encode(r() < 0.5 ? cjk() : String.fromCodePoint(0x1f300 + Math.floor(r() * 0x300)));
      s = full.subarray(0, 1 + Math.floor(r() * (full.length - 1)));
    } else if (x < 0.995) s = (r() < 0.5 ? ' ' : '') + word() + word();
    else s = pick(['-', '=', '_', '*', ' ', '#', '~']).repeat(8 + Math.floor(r() * 120));
    add(typeof s === 'string' ? enc.encode(s) : s);
  }
  return out.slice(0, n);
}

// --- measurement -----------------------------------------------------------------------------

function pickAllowed(mask: Uint32Array, vocabSize: number, r: () => number, eos: number): number {
  const eosAllowed = (mask[eos >>> 5]! >>> (eos & 31)) & 1;
  if (eosAllowed && r() < 0.5) return eos;
  let i = Math.floor(r() * vocabSize);
  for (let tries = 0; tries < vocabSize; tries++, i = (i + 1) % vocabSize) {
    if ((mask[i >>> 5]! >>> (i & 31)) & 1) return i;
  }
  throw new Error('empty mask');
}

interface Gen {
  perToken: number[]; // µs
  tokens: number;
}

/**
 * One generation under the grammar; per-token mask-function time in µs. `budget`: the mask is
 * made with that max_new_tokens (budget steering near its end), and generation stops there.
 */
function generate(g: Grammar, seed: number, maxTokens: number, idleMs: number, budget?: number): Gen {
  const r = rng(seed);
  const eos = g.vocab.eosTokenIds[0]!;
  const fn = constraintOf(g).newMask(budget);
  if (budget !== undefined) maxTokens = Math.min(maxTokens, budget);
  const ids: number[] = [];
  const perToken: number[] = [];
  for (let step = 0; step < maxTokens; step++) {
    const t0 = process.hrtime.bigint();
    const mask = fn(ids)!;
    perToken.push(Number(process.hrtime.bigint() - t0) / 1000);
    if (idleMs > 0) runPrecompute(idleMs); // the engine step: the JS thread is free meanwhile
    const t = pickAllowed(mask, g.vocab.modelVocabSize, r, eos);
    if (t === eos) break;
    ids.push(t);
  }
  return { perToken, tokens: ids.length };
}

const pct = (xs: number[], p: number) => quantile(xs, p / 100);
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const f1 = (x: number) => (Number.isFinite(x) ? (x >= 100 ? x.toFixed(0) : x.toFixed(1)) : '-');

const BENCH_SCHEMAS: Record<string, Record<string, unknown>> = {
  ...TEST_SCHEMAS,
  ...OPEN_SCHEMAS,
  ...USER_SCHEMAS,
  invoice: {
    type: 'object',
    properties: {
      id: { type: 'string', format: 'uuid' },
      date: { type: 'string', format: 'date' },
      customer: { type: 'object', properties: { name: { type: 'string', maxLength: 60 }, email: { type: 'string', maxLength: 80 }, vip: { type: 'boolean' } }, required: ['name'] },
      items: {
        type: 'array',
        maxItems: 20,
        items: {
          type: 'object',
          properties: { sku: { type: 'string', maxLength: 16 }, qty: { type: 'integer', minimum: 1, maximum: 999 }, price: { type: 'number', minimum: 0 }, note: { type: ['string', 'null'], maxLength: 100 } },
          required: ['sku', 'qty', 'price'],
          additionalProperties: false,
        },
      },
      status: { enum: ['draft', 'sent', 'paid', 'void'] },
    },
    required: ['id', 'date', 'customer', 'items', 'status'],
    additionalProperties: false,
  },
  wideObject: {
    type: 'object',
    properties: Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`field_${i}`, [{ type: 'integer' }, { type: 'string', maxLength: 20 }, { type: 'boolean' }, { enum: ['x', 'y', 'z'] }][i % 4]!])),
    required: Array.from({ length: 40 }, (_, i) => `field_${i}`).filter((_, i) => i % 3 === 0),
  },
  longText: { type: 'object', properties: { summary: { type: 'string', maxLength: 2000 } }, required: ['summary'] },
};

interface Row {
  vocab: string;
  mode: string;
  tokens: number;
  p50: number;
  p90: number;
  p99: number;
  mean: number;
  max: number;
}

async function main() {
  const sizes = QUICK ? [32_000] : [32_000, 150_000];
  const gensPerSchema = QUICK ? 2 : 4;
  const maxTokens = QUICK ? 200 : 400;
  const IDLE_MS = 5;
  const rows: Row[] = [];
  const compileRows: { schema: string; nfa: number; ms: number[]; firstMask: number[] }[] = [];
  const vocabRows: string[] = [];
  const walkRows: string[] = [];
  const eagerRows: string[] = [];
  for (const size of sizes) {
    const label = `${size / 1000}k`;
    const t0 = performance.now();
    const toks = syntheticVocab(size - 2, 42 + size);
    const bytes: (Uint8Array | null)[] = [...toks, null, null]; // two special tokens at the end (EOS + one more)
    const modelVocab = size + 64; // embedding rows beyond the tokenizer, as real models pad
    const vocab = new Vocab(bytes, modelVocab, [size - 2]);
    const prepMs = performance.now() - t0;
    const avg = toks.reduce((a, t) => a + t.length, 0) / toks.length;
    const quotes = toks.filter((t) => t.includes(0x22)).length;
    vocabRows.push(
      `| ${label} | ${size} | ${vocab.trie.size} | ${avg.toFixed(1)} | ${vocab.maxTokenBytes} | ${((100 * quotes) / toks.length).toFixed(1)}% | ${prepMs.toFixed(0)} |`,
    );
    console.log(`vocab ${label}: trie ${vocab.trie.size} nodes, avg ${avg.toFixed(1)} B, max ${vocab.maxTokenBytes} B, prepared in ${prepMs.toFixed(0)} ms`);

    // Compile time (schema -> NFA; the DFA is lazy) and the first mask (start state).
    const compiled = new Map<string, () => Grammar>();
    for (const [name, schema] of Object.entries(BENCH_SCHEMAS)) {
      let row = compileRows.find((r) => r.schema === name);
      if (!row) compileRows.push((row = { schema: name, nfa: 0, ms: [], firstMask: [] }));
      const reps = 5;
      let best = Infinity;
      let nfaStates = 0;
      for (let i = 0; i < reps; i++) {
        const c0 = performance.now();
        const nfa = compileSchema(schema, { horizon: vocab.maxTokenBytes });
        best = Math.min(best, performance.now() - c0);
        nfaStates = nfa.numStates;
      }
      row.nfa = nfaStates;
      row.ms.push(best);
      const g = new Grammar(compileSchema(schema, { horizon: vocab.maxTokenBytes }), vocab, true);
      const m0 = performance.now();
      g.mask(g.start);
      row.firstMask.push(performance.now() - m0);
      compiled.set(name, () => new Grammar(compileSchema(schema, { horizon: vocab.maxTokenBytes }), vocab, true));
    }

    // Worst single walk: inside a free string almost every token is allowed.
    {
      const g = new Grammar(compileSchema({ type: 'string' }, { horizon: vocab.maxTokenBytes }), vocab, true);
      const inside = g.advance(g.start, toks.findIndex((t) => t.length === 1 && t[0] === 0x22));
      const w0 = performance.now();
      const m = g.mask(inside);
      const first = performance.now() - w0;
      const visited = g.stats.nodesVisited;
      const times: number[] = [];
      for (let i = 0; i < 10; i++) {
        g.dropMasks();
        const t1 = performance.now();
        g.mask(inside);
        times.push(performance.now() - t1);
      }
      const ms = pct(times, 50);
      let allowed = 0;
      for (const w of m) allowed += w.toString(2).replaceAll('0', '').length;
      walkRows.push(`| ${label} | ${ms.toFixed(2)} | ${first.toFixed(2)} | ${allowed} | ${visited} | ${((ms * 1e6) / visited).toFixed(1)} |`);
      console.log(`  uncached mask inside a string: ${ms.toFixed(2)} ms median, ${first.toFixed(2)} ms first (${allowed} tokens allowed, ${visited} trie nodes visited)`);
    }

    // Every mask of a grammar up front (what an ahead-of-time compiler would pay): all DFA
    // states reachable from the start, one walk per distinct mask key.
    for (const name of ['person', 'pydanticStyle', 'recursiveTree', 'invoice']) {
      const g = compiled.get(name)!();
      const e0 = performance.now();
      const seen = new Set<number>([g.start]);
      const queue = [g.start];
      while (queue.length) {
        const s = queue.pop()!;
        g.mask(s);
        g.dfa.expand(s);
        const C = g.dfa.numClasses;
        for (let c = 0; c < C; c++) {
          const t = g.dfa.trans[s * C + c]!;
          if (t >= 0 && !seen.has(t)) {
            seen.add(t);
            queue.push(t);
          }
        }
      }
      const ms = performance.now() - e0;
      eagerRows.push(`| ${label} | ${name} | ${seen.size} | ${g.stats.walks} | ${ms.toFixed(0)} |`);
      console.log(`  all masks of ${name}: ${seen.size} DFA states, ${g.stats.walks} distinct masks, ${ms.toFixed(0)} ms`);
    }

    // Per-token time over generations.
    const modes: { mode: string; precompute: boolean; idle: number; warm: 'none' | 'other' | 'same'; budget?: boolean }[] = [
      { mode: 'cold: new grammar, masks computed on demand', precompute: false, idle: 0, warm: 'none' },
      { mode: 'cold, max_new_tokens = shortest completion + 16 (budget steering at the end)', precompute: false, idle: 0, warm: 'none', budget: true },
      { mode: `cold + background precompute (${IDLE_MS} ms idle per step)`, precompute: true, idle: IDLE_MS, warm: 'none' },
      { mode: `warm: grammar reused after ${gensPerSchema} other generations`, precompute: false, idle: 0, warm: 'other' },
      { mode: 'replay: same generations again (all masks cached)', precompute: false, idle: 0, warm: 'same' },
    ];
    for (const m of modes) {
      setPrecompute(m.precompute, 0);
      const all: number[] = [];
      let tokens = 0;
      for (const [name, make] of compiled) {
        const g = make();
        for (let s = 0; s < gensPerSchema; s++) {
          if (m.warm === 'other') generate(g, 1000 + s + name.length * 100, maxTokens, 0);
          if (m.warm === 'same') generate(g, s + name.length * 100, maxTokens, 0);
        }
        const budget = m.budget ? g.dist(g.start) + 16 : undefined;
        for (let s = 0; s < gensPerSchema; s++) {
          const r = generate(g, s + name.length * 100, maxTokens, m.idle, budget);
          all.push(...r.perToken);
          tokens += r.perToken.length;
        }
      }
      const row = { vocab: label, mode: m.mode, tokens, p50: pct(all, 50), p90: pct(all, 90), p99: pct(all, 99), mean: mean(all), max: Math.max(...all) };
      rows.push(row);
      console.log(`  ${m.mode}: ${tokens} tokens, p50 ${f1(row.p50)} µs, p90 ${f1(row.p90)} µs, p99 ${f1(row.p99)} µs, mean ${f1(row.mean)} µs, max ${f1(row.max)} µs`);
    }
    setPrecompute(true);
  }

  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const md = `# Structured output benchmark

Generated by \`node --import tsx bench/structured/bench.ts\` on ${new Date().toISOString().slice(0, 10)}:
${cpu} (${cpus().length} cores, shared machine: timings are noisy), Node ${process.version}, one thread.

Vocabularies are synthetic byte-level-BPE-like (no downloads possible): the 256 bytes, words
with and without a leading space, numbers, JSON punctuation runs, indentation, code fragments,
CJK and accented text, partial UTF-8 sequences and a few very long tokens.

| vocab | tokens | trie nodes | avg bytes | max bytes | contain \`"\` | trie build ms |
|---|---|---|---|---|---|---|
${vocabRows.join('\n')}

## Schema compile time

JSON Schema → normalized schema → byte NFA (the DFA is built lazily, a row at a time, during
mask walks). "First mask" is the start state's mask: the one walk a new request pays before its
first token if nothing is cached. Best of 5, ms.

| schema | NFA states | compile ${sizes.map((s) => `${s / 1000}k`).join(' / ')} | first mask ${sizes.map((s) => `${s / 1000}k`).join(' / ')} |
|---|---|---|---|
${compileRows.map((r) => `| ${r.schema} | ${r.nfa} | ${r.ms.map((x) => x.toFixed(2)).join(' / ')} | ${r.firstMask.map((x) => x.toFixed(2)).join(' / ')} |`).join('\n')}

Median compile: ${sizes.map((_, i) => `${pct(compileRows.map((r) => r.ms[i]!), 50).toFixed(2)} ms (${sizes[i]! / 1000}k)`).join(', ')}; slowest: ${sizes.map((_, i) => `${Math.max(...compileRows.map((r) => r.ms[i]!)).toFixed(1)} ms`).join(', ')}.

## Uncached mask, worst case

Inside a JSON string nearly every token is allowed, so the trie walk visits nearly every node.

| vocab | ms (median of 10) | ms (first: new DFA rows, cold JIT) | tokens allowed | trie nodes visited | ns per node |
|---|---|---|---|---|---|
${walkRows.join('\n')}

## All masks up front

For comparison with compilers that precompute per grammar position (XGrammar's adaptive token
mask cache): every DFA state reachable from the start, one trie walk per distinct mask (states
that share a mask are walked once). Switchboard does this lazily instead, per visited state.

| vocab | schema | DFA states | distinct masks | ms |
|---|---|---|---|---|
${eagerRows.join('\n')}

## Per-token mask time

Time of the mask function the scheduler calls once per step and sequence: advance the matcher by
the new token, then return the cached mask of the new state or walk the trie. ${gensPerSchema} generations per
schema over all ${Object.keys(BENCH_SCHEMAS).length} schemas, tokens picked uniformly among the allowed ones, at most ${maxTokens} tokens each.

| vocab | mode | tokens | p50 µs | p90 µs | p99 µs | mean µs | max µs |
|---|---|---|---|---|---|---|---|
${rows.map((r) => `| ${r.vocab} | ${r.mode} | ${r.tokens} | ${f1(r.p50)} | ${f1(r.p90)} | ${f1(r.p99)} | ${f1(r.mean)} | ${f1(r.max)} |`).join('\n')}

## Against published figures

- XGrammar (Dong et al., 2024): under ~40 µs per token for JSON schema masks with Llama 3's 128k vocabulary.
- llguidance: 46 µs p50 per token on JSONSchemaBench.

Here the steady state (grammar and masks cached: the usual case for a service where the same
schemas recur) costs ${rows
    .filter((r) => r.mode.startsWith('replay'))
    .map((r) => `${f1(r.p50)} µs p50 / ${f1(r.mean)} µs mean (${r.vocab})`)
    .join(', ')} per token: the DFA state is one int and the mask of each state is
computed once per grammar. A first-seen state costs one trie walk (up to a few ms with 150k
tokens inside a string, far less in structural states; cached afterwards), which is what the
p99 and mean of the cold and warm rows are made of; background precompute of the likely next
states during the engine step takes most of those off the critical path (cold + precompute row).
Unlike XGrammar and llguidance, the cost of a first-seen state is not bounded by design: mask
sharing between equivalent states (string positions far from maxLength, array items far from
maxItems), caching across requests and background precompute are what keep it low. The
p50 is far below both published figures in every mode; the mean is comparable cold and below
once the grammar has been seen.
`;
  const out = process.argv.indexOf('--out');
  const file = out > 0 ? process.argv[out + 1]! : join(import.meta.dirname, 'results.md');
  writeFileSync(file, md);
  console.log(`\nwrote ${file}`);
}

await main();
