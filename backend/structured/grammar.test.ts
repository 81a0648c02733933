// Token masks with the fixture tokenizers: each mask equals a brute-force check of every token
// against the automaton, and random token walks under the masks — decoded by the real tokenizer
// — always parse and validate. No model involved (see structured-e2e.test.ts for that).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { Validator } from '@cfworker/json-schema';
import { TextTokenizer } from '../text/tokenizer.ts';
import { DEAD } from './automaton.ts';
import { compileSchema } from './compile.ts';
import { Grammar, runPrecompute, setPrecompute } from './grammar.ts';
import { constraintOf } from './index.ts';
import { OPEN_SCHEMAS, TEST_SCHEMAS } from './test-schemas.ts';
import { loadTokenBytes } from './token-bytes.ts';
import { Vocab } from './vocab.ts';
import { mulberry32 } from '../../test/helpers/prng.ts';

const MODELS = join(import.meta.dirname, '..', '..', 'test', 'fixtures', 'models');

/** The grammar a request gets for `schema` (masks shared), compiled inline. */
function grammarOf(vocab: Vocab, schema: unknown): Grammar {
  return new Grammar(compileSchema(schema, { horizon: vocab.maxTokenBytes }), vocab, true);
}

const rng = mulberry32;

const bitsOf = (m: Uint32Array) => {
  const out: number[] = [];
  for (let w = 0; w < m.length; w++) for (let b = 0; b < 32; b++) if ((m[w]! >>> b) & 1) out.push(w * 32 + b);
  return out;
};

/** What the mask must be, token by token. */
function bruteForce(g: Grammar, s: number): number[] {
  const v = g.vocab;
  const out: number[] = [];
  for (let id = 0; id < v.modelVocabSize; id++) {
    if (v.eosTokenIds.includes(id)) {
      if (g.dfa.accepting[s]) out.push(id);
      continue;
    }
    const b = v.bytes[id];
    if (!b) continue;
    if (g.dfa.run(s, b) !== DEAD) out.push(id);
  }
  return out;
}

interface Model {
  name: string;
  tok: TextTokenizer;
  vocab: Vocab;
  vocabSize: number;
}

async function loadModel(name: string): Promise<Model> {
  const dir = join(MODELS, name);
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf-8')) as { vocab_size: number; eos_token_id: number | number[] };
  const tok = await TextTokenizer.load(dir, cfg.eos_token_id);
  const vocab = new Vocab(loadTokenBytes(dir).bytes, cfg.vocab_size, tok.eosTokenIds);
  return { name, tok, vocab, vocabSize: cfg.vocab_size };
}

/** Samples tokens under the masks until EOS; returns the ids (without EOS) or null if too long. */
function walk(g: Grammar, rand: () => number, maxTokens: number, check?: (state: number, mask: Uint32Array, ids: number[]) => void): { ids: number[]; finished: boolean } {
  const m = g.matcher();
  const ids: number[] = [];
  const eos = new Set(g.vocab.eosTokenIds);
  for (let step = 0; step < maxTokens; step++) {
    const mask = m.mask(ids);
    check?.(m.dfaState, mask, ids);
    const allowed = bitsOf(mask);
    assert.ok(allowed.length > 0, 'a mask is never empty');
    const eosAllowed = allowed.filter((t) => eos.has(t));
    const pick = eosAllowed.length && (eosAllowed.length === allowed.length || rand() < 0.3) ? eosAllowed[0]! : allowed[Math.floor(rand() * allowed.length)]!;
    if (eos.has(pick)) return { ids, finished: true };
    ids.push(pick);
  }
  return { ids, finished: false };
}

for (const name of ['llama', 'mistral', 'qwen2']) {
  describe(`token masks: ${name}`, () => {
    let model: Model;
    before(async () => {
      model = await loadModel(name);
    });

    it('mask words cover the model vocabulary; special, added and out-of-tokenizer ids are never allowed', () => {
      const g = grammarOf(model.vocab, { type: 'string' });
      const mask = g.mask(g.start);
      assert.equal(mask.length, Math.ceil(model.vocabSize / 32));
      const allowed = new Set(bitsOf(mask));
      for (const id of allowed) assert.ok(id < model.vocab.bytes.length && model.vocab.bytes[id], `id ${id}`);
      // Inside a string almost every token fits.
      const inside = g.mask(g.advance(g.start, model.tok.encode('"', false).at(-1)!));
      assert.ok(bitsOf(inside).length > model.vocab.bytes.filter(Boolean).length * 0.8);
    });

    it('equals a brute-force check of every token, with and without mask sharing', () => {
      for (const schema of [TEST_SCHEMAS.person, TEST_SCHEMAS.boundedNumbers, TEST_SCHEMAS.unicodeLengths, { type: 'array', items: { type: 'string', maxLength: 40 }, maxItems: 30 }, { type: 'array', items: { type: 'object', properties: { k: { type: 'integer', minimum: 0, maximum: 9 } }, required: ['k'] }, minItems: 3, maxItems: 25 }, { type: 'object', additionalProperties: { type: 'boolean' }, minProperties: 2, maxProperties: 9 }, OPEN_SCHEMAS.jsonObject]) {
        const shared = grammarOf(model.vocab, schema);
        const unshared = new Grammar(compileSchema(schema, { horizon: model.vocab.maxTokenBytes }), model.vocab, false);
        for (let seed = 0; seed < 6; seed++) {
          const other = unshared.matcher();
          walk(shared, rng(seed), 300, (s, mask, ids) => {
            const want = bruteForce(shared, s);
            assert.deepEqual(bitsOf(mask), want, `${JSON.stringify(schema)} state ${s}`);
            assert.deepEqual(bitsOf(other.mask(ids)), want, `${JSON.stringify(schema)} unshared`);
          });
        }
      }
    });

    it('random token walks decode (with the real tokenizer) to JSON that validates', () => {
      const schemas = { ...TEST_SCHEMAS, ...OPEN_SCHEMAS };
      let finished = 0;
      let total = 0;
      for (const [key, schema] of Object.entries(schemas)) {
        const g = grammarOf(model.vocab, schema);
        const validator = new Validator(schema as object, '2020-12', false);
        for (let seed = 0; seed < 8; seed++) {
          total++;
          const { ids, finished: done } = walk(g, rng(seed * 31 + key.length), 2000);
          if (!done) continue;
          finished++;
          const text = model.tok.decode(ids);
          let value: unknown;
          assert.doesNotThrow(() => (value = JSON.parse(text)), `${key}/${seed}: ${JSON.stringify(text)}`);
          const r = validator.validate(value);
          assert.ok(r.valid, `${key}/${seed}: ${text} ${JSON.stringify(r.errors.slice(0, 2))}`);
        }
      }
      assert.ok(finished >= total * 0.9, `${finished}/${total} finished`);
    });

    it('allows only EOS once the value is complete', () => {
      const g = grammarOf(model.vocab, { type: 'object', properties: { a: { type: 'boolean' } }, required: ['a'] });
      const ids = model.tok.encode('{"a":true}', false).filter((id) => model.vocab.bytes[id]);
      const m = g.matcher();
      const mask = m.mask(ids);
      assert.deepEqual(bitsOf(mask), [...model.tok.eosTokenIds].sort((a, b) => a - b));
      assert.ok(m.finished);
    });
  });
}

describe('matcher', () => {
  let model: Model;
  before(async () => {
    model = await loadModel('llama');
  });

  it('is idempotent for repeated calls (a preempted sequence) and restarts on a shorter history', () => {
    const g = grammarOf(model.vocab, TEST_SCHEMAS.person);
    const ids = model.tok.encode('{"name": "Bob", "age', false);
    const m = g.matcher();
    const a = m.mask(ids);
    assert.equal(m.mask(ids), a);
    const fresh = g.matcher().mask(ids.slice(0, 2));
    assert.deepEqual(m.mask(ids.slice(0, 2)), fresh);
    assert.deepEqual(m.mask(ids), a);
  });

  it('ends with EOS only after a token the grammar does not allow, and after EOS (ignore_eos)', () => {
    const g = grammarOf(model.vocab, { type: 'boolean' });
    const eos = model.tok.eosTokenIds;
    const m = g.matcher();
    const x = model.tok.encode('x', false).at(-1)!;
    assert.deepEqual(bitsOf(m.mask([x])), [...eos].sort((a, b) => a - b));
    const t = model.tok.encode('true', false);
    const m2 = g.matcher();
    assert.deepEqual(bitsOf(m2.mask([...t, eos[0]!, eos[0]!])), [...eos].sort((a, b) => a - b));
  });

  it('never throws into the scheduler', () => {
    const c = constraintOf(grammarOf(model.vocab, { type: 'null' }));
    const f = c.newMask();
    assert.ok(f([1e9, -5, 3.5]) instanceof Uint32Array);
  });

  it('precomputes the masks of likely next states in the background, identical to computing them on demand', () => {
    setPrecompute(true, 0);
    try {
      const schema = { type: 'object', properties: { a: { type: 'string', maxLength: 30 }, b: { type: 'array', items: { type: 'integer' }, maxItems: 5 } }, required: ['a', 'b'] };
      const g = new Grammar(compileSchema(schema, { horizon: model.vocab.maxTokenBytes }), model.vocab, true);
      let steps = 0;
      for (let seed = 0; seed < 10; seed++) {
        walk(g, rng(seed), 200, (s, mask) => {
          assert.deepEqual(bitsOf(mask), bruteForce(g, s));
          runPrecompute(5); // what the engine's step leaves the JS thread
          steps++;
        });
      }
      assert.ok(g.stats.precomputed > 0);
      // Most steps found their mask ready: few critical-path walks.
      assert.ok(g.stats.walks < steps / 5, `${g.stats.walks} walks for ${steps} steps, ${g.stats.precomputed} precomputed`);
    } finally {
      setPrecompute(true);
    }
  });

  it('shares masks between string positions far from their length limits', () => {
    const g = grammarOf(model.vocab, { type: 'string', maxLength: 400 });
    const a = model.tok.encode('a', false).at(-1)!;
    const m = g.matcher();
    const ids = [model.tok.encode('"', false).at(-1)!];
    for (let i = 0; i < 400; i++) {
      m.mask(ids);
      ids.push(a);
    }
    // 400 positions, but only those within the longest token of the limit differ.
    assert.ok(g.stats.walks < 400 - model.vocab.maxTokenBytes + 10, `${g.stats.walks} walks`);
    assert.ok(g.stats.walks <= model.vocab.maxTokenBytes + 5, `${g.stats.walks} walks`);
  });
});
