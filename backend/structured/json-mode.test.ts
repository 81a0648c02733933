// JSON mode at the token level (issue 13), with the fixture tokenizers and one whose byte
// fallbacks <0x00>..<0xFF> are special tokens (decoding drops them, so they never spell JSON):
// - no dead ends: from every state a mask lets the model reach, some token sequence (found by an
//   independent search over the vocabulary's byte strings) reaches an accepting state, or the
//   schema is refused up front;
// - random token walks decoded by the real tokenizer parse and validate (ajv);
// - budget steering: with max_new_tokens at least the shortest completion, every walk that uses
//   its whole budget still ends with a complete value.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { TextTokenizer } from '../text/tokenizer.ts';
import { DEAD } from './automaton.ts';
import { compileSchema } from './compile.ts';
import { bindGrammar, Grammar } from './grammar.ts';
import { SchemaError } from './schema.ts';
import { NON_ASCII_SCHEMAS, TEST_SCHEMAS, USER_SCHEMAS } from './test-schemas.ts';
import { loadTokenBytes, UnsupportedTokenizerError } from './token-bytes.ts';
import { Vocab } from './vocab.ts';
import { mulberry32 } from '../../test/helpers/prng.ts';
import { validationErrors } from '../../test/helpers/json-validator.ts';

const FIXTURES = join(import.meta.dirname, '..', '..', 'test', 'fixtures');

interface Model {
  name: string;
  tok: TextTokenizer;
  vocab: Vocab;
}

async function loadDir(name: string, dir: string, vocabSize?: number): Promise<Model> {
  const cfgFile = join(dir, 'config.json');
  const cfg = existsSync(cfgFile) ? (JSON.parse(readFileSync(cfgFile, 'utf-8')) as { vocab_size: number; eos_token_id: number | number[] }) : null;
  const tok = await TextTokenizer.load(dir, cfg?.eos_token_id ?? null);
  const bytes = loadTokenBytes(dir).bytes;
  return { name, tok, vocab: new Vocab(bytes, vocabSize ?? cfg?.vocab_size ?? bytes.length, tok.eosTokenIds) };
}

/**
 * A SentencePiece tokenizer whose <0xNN> byte fallbacks are special added tokens: helper fixture
 * test/fixtures/tokenizers/byte-fallback-special when present, else built here from the mistral
 * fixture's tokenizer.json (same vocabulary, byte tokens moved to added_tokens as special).
 */
async function byteFallbackSpecial(): Promise<Model[]> {
  const out: Model[] = [];
  const fixture = join(FIXTURES, 'tokenizers', 'byte-fallback-special');
  if (existsSync(join(fixture, 'tokenizer.json'))) out.push(await loadDir('byte-fallback-special (fixture)', fixture));
  const dir = mkdtempSync(join(tmpdir(), 'bf-special-'));
  const tj = JSON.parse(readFileSync(join(FIXTURES, 'models', 'mistral', 'tokenizer.json'), 'utf-8')) as {
    model: { vocab: Record<string, number> };
    added_tokens: Record<string, unknown>[];
  };
  for (const [piece, id] of Object.entries(tj.model.vocab)) {
    if (/^<0x[0-9A-F]{2}>$/.test(piece)) tj.added_tokens.push({ id, content: piece, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  }
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tj));
  writeFileSync(join(dir, 'tokenizer_config.json'), readFileSync(join(FIXTURES, 'models', 'mistral', 'tokenizer_config.json')));
  out.push(await loadDir('byte-fallback-special (built)', dir, Object.keys(tj.model.vocab).length));
  return out;
}

/** The grammar a request gets (masks shared; refused when the vocabulary cannot write it). */
const grammarFor = (vocab: Vocab, schema: unknown, cleanup = false) => bindGrammar(compileSchema(schema, { horizon: vocab.maxTokenBytes, cleanup }), vocab, true);

const bitsOf = (m: Uint32Array) => {
  const out: number[] = [];
  for (let w = 0; w < m.length; w++) for (let b = 0; b < 32; b++) if ((m[w]! >>> b) & 1) out.push(w * 32 + b);
  return out;
};

/**
 * Independent of the grammar's own completability logic: breadth-first through the DFA over the
 * bytes that are tokens by themselves, then (if that finds nothing) over whole tokens.
 */
const finishable = new WeakMap<Grammar, Set<number>>();
function canFinish(g: Grammar, s: number, limit = 3000): boolean {
  let known = finishable.get(g);
  if (!known) finishable.set(g, (known = new Set()));
  const C = g.dfa.numClasses;
  const single = [...g.vocab.singleByte.keys()].filter((b) => g.vocab.singleByte[b]);
  const parent = new Map([[s, -1]]);
  const qb = [s];
  for (let i = 0; i < qb.length; i++) {
    const q = qb[i]!;
    if (g.dfa.accepting[q] || known.has(q)) {
      for (let x = q; x >= 0; x = parent.get(x)!) known.add(x);
      return true;
    }
    g.dfa.expand(q);
    for (const b of single) {
      const t = g.dfa.trans[q * C + g.dfa.classOf[b]!]!;
      if (t >= 0 && !parent.has(t)) parent.set(t, q), qb.push(t);
    }
  }
  const seen = new Set([s]);
  const queue = [s];
  for (let i = 0; i < queue.length && i < limit; i++) {
    const q = queue[i]!;
    if (g.dfa.accepting[q]) return true;
    for (let id = 0; id < g.vocab.modelVocabSize; id++) {
      const b = g.vocab.bytes[id];
      if (!b || g.vocab.eosTokenIds.includes(id)) continue;
      const t = g.dfa.run(q, b);
      if (t !== DEAD && !seen.has(t)) {
        seen.add(t);
        queue.push(t);
      }
    }
  }
  return false;
}

/** Samples under the masks until EOS or the budget; returns the ids (without EOS). */
function walk(g: Grammar, rand: () => number, budget: number | null, maxTokens = 1500) {
  const m = g.matcher(budget);
  const ids: number[] = [];
  const eos = new Set(g.vocab.eosTokenIds);
  const states: number[] = [];
  const limit = budget ?? maxTokens;
  for (let step = 0; step < limit; step++) {
    const allowed = bitsOf(m.mask(ids));
    states.push(m.dfaState);
    assert.ok(allowed.length > 0, 'a mask is never empty');
    const onlyEos = allowed.every((t) => eos.has(t));
    // EOS only where the value is complete: a dead end otherwise.
    if (onlyEos) assert.equal(g.dfa.accepting[m.dfaState], 1, `EOS-only mask in a non-accepting state after ${ids.length} tokens`);
    const eosAllowed = allowed.filter((t) => eos.has(t));
    const pick = eosAllowed.length && (onlyEos || rand() < 0.25) ? eosAllowed[0]! : allowed.filter((t) => !eos.has(t))[Math.floor(rand() * (allowed.length - eosAllowed.length))]!;
    if (eos.has(pick)) return { ids, states, end: 'eos' as const };
    ids.push(pick);
  }
  m.mask(ids);
  return { ids, states, end: 'length' as const, accepting: g.dfa.accepting[m.dfaState] === 1 };
}

function parseAndValidate(schema: unknown, text: string, what: string): void {
  let value: unknown;
  assert.doesNotThrow(() => (value = JSON.parse(text)), `${what}: not JSON: ${JSON.stringify(text)}`);
  assert.equal(validationErrors(schema, value), null, `${what}: ${text}`);
}

const SCHEMAS = { ...USER_SCHEMAS, person: TEST_SCHEMAS.person!, recursiveTree: TEST_SCHEMAS.recursiveTree!, freeString: { type: 'string', maxLength: 12 } };

describe('JSON mode: byte fallbacks listed as special tokens', () => {
  let models: Model[];
  before(async () => {
    models = await byteFallbackSpecial();
  });

  it('the tokenizer really drops those tokens when decoding, so they are never allowed', () => {
    for (const m of models) {
      const ids = m.tok.encode('日', false).filter((id) => m.tok.isSpecial(id));
      assert.ok(ids.length >= 3, `${m.name}: 日 falls back to special byte tokens`);
      assert.equal(m.tok.decode(ids), '');
      for (const id of ids) assert.equal(m.vocab.bytes[id], null);
      assert.equal(m.vocab.singleByte[0xe6], 0);
    }
  });

  it('refuses schemas it cannot complete, names why; never dead-ends on the others; outputs validate', () => {
    for (const m of models) {
      let refusedCount = 0;
      for (const [name, schema] of Object.entries(SCHEMAS)) {
        let g: Grammar;
        try {
          g = grammarFor(m.vocab, schema);
        } catch (err) {
          assert.ok(err instanceof SchemaError, `${name}: ${err}`);
          assert.match(err.message, /cannot write with regular tokens/);
          // Refused only when an independent search finds no way to write a value either.
          const raw = new Grammar(compileSchema(schema, { horizon: m.vocab.maxTokenBytes }), m.vocab, false);
          assert.ok(!canFinish(raw, raw.start), `${m.name}: ${name} refused, but it can be written`);
          if (NON_ASCII_SCHEMAS.includes(name)) refusedCount++;
          continue;
        }
        for (let seed = 0; seed < 6; seed++) {
          const r = walk(g, mulberry32(seed * 13 + name.length), null);
          for (const s of new Set(r.states)) assert.ok(canFinish(g, s), `${m.name}/${name}: state ${s} reached but cannot finish`);
          if (r.end === 'eos') parseAndValidate(schema, m.tok.decode(r.ids), `${m.name}/${name}/${seed}`);
        }
      }
      assert.ok(refusedCount >= 2, `${m.name}: the CJK const and the emoji key cannot be written`);
    }
  });

  it('a free string never takes a path it cannot close', () => {
    for (const m of models) {
      const g = grammarFor(m.vocab, { type: 'array', items: { type: 'string', minLength: 1, maxLength: 4 }, maxItems: 3 });
      for (let seed = 0; seed < 20; seed++) {
        const r = walk(g, mulberry32(seed), null);
        assert.equal(r.end, 'eos');
        parseAndValidate({ type: 'array', items: { type: 'string', minLength: 1, maxLength: 4 }, maxItems: 3 }, m.tok.decode(r.ids), `${m.name}/${seed}`);
      }
    }
  });
});

for (const name of ['llama', 'mistral', 'qwen2']) {
  describe(`JSON mode: ${name} tokenizer`, () => {
    let model: Model;
    before(async () => {
      model = await loadDir(name, join(FIXTURES, 'models', name));
    });

    it('every state the masks reach can still finish; finished walks validate (ajv)', () => {
      for (const [key, schema] of Object.entries(SCHEMAS)) {
        const g = grammarFor(model.vocab, schema);
        assert.ok(g.allLive, `${key}: every byte is a token of its own`);
        for (let seed = 0; seed < 4; seed++) {
          const r = walk(g, mulberry32(seed * 101 + key.length), null);
          for (const s of new Set(r.states)) assert.ok(canFinish(g, s), `${key}: state ${s} cannot finish`);
          if (r.end === 'eos') parseAndValidate(schema, model.tok.decode(r.ids), `${name}/${key}/${seed}`);
        }
      }
    });

    it('budget steering: a value that fits max_new_tokens always closes within it', () => {
      let steered = 0;
      for (const [key, schema] of Object.entries(SCHEMAS)) {
        const g = grammarFor(model.vocab, schema);
        const need = g.dist(g.start);
        for (const budget of [need, need + 3, need * 2 + 5]) {
          for (let seed = 0; seed < 3; seed++) {
            const r = walk(g, mulberry32(seed * 7 + budget), budget);
            const text = model.tok.decode(r.ids);
            if (r.end === 'length') {
              steered++;
              assert.ok(r.accepting, `${name}/${key} budget ${budget} (needs ${need}): ended incomplete: ${JSON.stringify(text)}`);
            }
            parseAndValidate(schema, text, `${name}/${key} budget ${budget}`);
          }
        }
      }
      assert.ok(steered > 20, `${steered} walks used their whole budget`);
    });

    it('budget steering changes nothing while the budget is far away', () => {
      const g = grammarFor(model.vocab, USER_SCHEMAS.pydanticInvoice!);
      const a = g.matcher(10_000);
      const b = g.matcher(null);
      const rand = mulberry32(3);
      const ids: number[] = [];
      for (let i = 0; i < 40; i++) {
        const ma = bitsOf(a.mask(ids));
        assert.deepEqual(ma, bitsOf(b.mask(ids)));
        const pick = ma.filter((t) => !model.vocab.eosTokenIds.includes(t));
        if (!pick.length) break;
        ids.push(pick[Math.floor(rand() * pick.length)]!);
      }
    });
  });
}

describe('JSON mode: the other fixture tokenizers (test/fixtures/tokenizers)', () => {
  it('metaspace and byte-level with clean_up_tokenization_spaces: no dead ends, decoded text is the generated text and validates', async () => {
    for (const fixture of ['metaspace', 'bytelevel-cleanup']) {
      const m = await loadDir(fixture, join(FIXTURES, 'tokenizers', fixture));
      const cleanup = m.tok.decoder.cleanup;
      if (fixture === 'bytelevel-cleanup') assert.ok(cleanup, 'the fixture cleans up');
      let used = 0;
      for (const [key, schema] of Object.entries(SCHEMAS)) {
        let g: Grammar;
        try {
          g = grammarFor(m.vocab, schema, cleanup);
        } catch (err) {
          // Refused only when an independent search finds no way to write a value either.
          assert.ok(err instanceof SchemaError && /cannot write with regular tokens/.test(err.message), `${fixture}/${key}: ${err}`);
          const raw = new Grammar(compileSchema(schema, { horizon: m.vocab.maxTokenBytes, cleanup }), m.vocab, false);
          assert.ok(!canFinish(raw, raw.start), `${fixture}: ${key} refused, but it can be written`);
          continue;
        }
        used++;
        for (let seed = 0; seed < 4; seed++) {
          const r = walk(g, mulberry32(seed * 53 + key.length), null);
          for (const st of new Set(r.states)) assert.ok(canFinish(g, st), `${fixture}/${key}: state ${st} cannot finish`);
          if (r.end !== 'eos') continue;
          const text = m.tok.decode(r.ids);
          // What the grammar accepted, byte for byte: clean-up found nothing to rewrite.
          const bytes = Buffer.concat(r.ids.map((id) => m.vocab.bytes[id]!)).toString('utf-8');
          assert.equal(text.trimStart(), bytes.trimStart(), `${fixture}/${key}/${seed}`);
          parseAndValidate(schema, text, `${fixture}/${key}/${seed}`);
        }
      }
      assert.ok(used >= Object.keys(SCHEMAS).length / 2, `${fixture}: only ${used} schemas writable`);
    }
  });

  it('clean-up: values it would rewrite are never generated; a schema with nothing else is refused', async () => {
    const m = await loadDir('bytelevel-cleanup', join(FIXTURES, 'tokenizers', 'bytelevel-cleanup'));
    const g = grammarFor(m.vocab, { enum: ['x ,y', 'Non ?', 'ok'] }, true);
    assert.equal(g.dfa.matches('"ok"'), true);
    assert.equal(g.dfa.matches('"Non ?"'), false);
    assert.equal(g.dfa.matches('"x ,y"'), false);
    assert.throws(() => grammarFor(m.vocab, { const: "it 's" }, true), /clean_up_tokenization_spaces/);
    // Without clean-up the same values are fine.
    assert.equal(grammarFor(m.vocab, { enum: ['x ,y', 'Non ?'] }, false).dfa.matches('"Non ?"'), true);
  });

  it('WordPiece is refused with a clear error (token text depends on its neighbours)', () => {
    assert.throws(() => loadTokenBytes(join(FIXTURES, 'tokenizers', 'wordpiece')), UnsupportedTokenizerError);
  });
});
