// JSON mode through real backends (issue 13): the three fixture models (tiny random weights that
// never write JSON on their own) at temperatures 1.0-1.5 on every route — /generate,
// /generate_stream, /v1/completions and /v1/chat/completions with response_format json_schema —
// for the schemas users send (USER_SCHEMAS). Every output that ends by EOS or a stop sequence
// parses and validates with ajv; outputs that end by length with max_new_tokens at least the
// shortest completion (the budget rule, backend/structured/grammar.ts) must validate too. Where a
// route returns token ids, their decoding by the model's tokenizer is checked as well.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { compileSchema } from '../../backend/structured/compile.ts';
import { bindGrammar } from '../../backend/structured/grammar.ts';
import { SchemaError } from '../../backend/structured/schema.ts';
import { USER_SCHEMAS } from '../../backend/structured/test-schemas.ts';
import { loadTokenBytes } from '../../backend/structured/token-bytes.ts';
import { Vocab } from '../../backend/structured/vocab.ts';
import { TextTokenizer } from '../../backend/text/tokenizer.ts';
import { postJson, readSSE, startBackend, type TestServer } from '../helpers/backend.ts';
import { mulberry32 } from '../helpers/prng.ts';
import { validationErrors } from '../helpers/json-validator.ts';

const MODELS_DIR = join(import.meta.dirname, '..', 'fixtures', 'models');
const MAX_NEW = 256;

interface Outcome {
  route: string;
  schema: string;
  text: string;
  finish: string;
  /** Generated token ids, where the route returns them. */
  ids?: number[];
  /** max_new_tokens of the request. */
  budget: number;
}

function problem(schema: unknown, text: string): string | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return `not JSON (${(err as Error).message})`;
  }
  return validationErrors(schema, value);
}

/**
 * The mistral fixture model with a tokenizer whose byte fallbacks <0x00>..<0xFF> are special
 * tokens (test/fixtures/tokenizers/byte-fallback-special, same vocabulary): the case of
 * a CJK const cut mid-string.
 */
function byteFallbackSpecialModel(): string {
  const dir = mkdtempSync(join(tmpdir(), 'mistral-bf-special-'));
  const src = join(MODELS_DIR, 'mistral');
  for (const f of ['config.json', 'generation_config.json', 'model.safetensors']) symlinkSync(join(src, f), join(dir, f));
  const fixture = join(MODELS_DIR, '..', 'tokenizers', 'byte-fallback-special');
  if (existsSync(join(fixture, 'tokenizer.json'))) {
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) symlinkSync(join(fixture, f), join(dir, f));
  } else {
    const tj = JSON.parse(readFileSync(join(src, 'tokenizer.json'), 'utf-8')) as { model: { vocab: Record<string, number> }; added_tokens: Record<string, unknown>[] };
    for (const [piece, id] of Object.entries(tj.model.vocab)) {
      if (/^<0x[0-9A-F]{2}>$/.test(piece)) tj.added_tokens.push({ id, content: piece, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
    }
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tj));
    symlinkSync(join(src, 'tokenizer_config.json'), join(dir, 'tokenizer_config.json'));
  }
  return dir;
}

const SUITES: [string, () => string][] = [
  ['llama', () => join(MODELS_DIR, 'llama')],
  ['mistral', () => join(MODELS_DIR, 'mistral')],
  ['qwen2', () => join(MODELS_DIR, 'qwen2')],
  ['mistral, byte fallbacks as special tokens', byteFallbackSpecialModel],
];

for (const [name, makeDir] of SUITES) {
  describe(`JSON mode e2e: ${name}`, () => {
    let srv: TestServer;
    let tok: TextTokenizer;
    /** Fewest tokens that complete each schema's value (what the budget rule needs). */
    const need = new Map<string, number>();
    /** Schemas this tokenizer cannot write (refused before generating). */
    const unwritable = new Set<string>();
    before(async () => {
      const dir = makeDir();
      srv = await startBackend(['--model-id', dir]);
      const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf-8')) as { vocab_size: number; eos_token_id: number | number[] };
      tok = await TextTokenizer.load(dir, cfg.eos_token_id);
      const vocab = new Vocab(loadTokenBytes(dir).bytes, cfg.vocab_size, tok.eosTokenIds);
      for (const [key, schema] of Object.entries(USER_SCHEMAS)) {
        try {
          const g = bindGrammar(compileSchema(schema, { horizon: vocab.maxTokenBytes }), vocab, true);
          need.set(key, g.dist(g.start));
        } catch (err) {
          if (!(err instanceof SchemaError)) throw err;
          unwritable.add(key);
        }
      }
    });
    after(async () => {
      await srv?.close();
    });

    it('every route, many seeds, temperature 1.0-1.5: finished outputs validate; length-ended ones too when the budget allowed', async () => {
      const rand = mulberry32(name.length * 977);
      const jobs: Promise<Outcome[]>[] = [];
      const entries = Object.entries(USER_SCHEMAS).filter(([key]) => !unwritable.has(key));
      let k = 0;
      for (const [key, schema] of entries) {
        for (const route of ['/generate', '/generate_stream', '/v1/completions', '/v1/chat/completions']) {
          const seed = 1 + Math.floor(rand() * 1e6);
          const temperature = Math.round((1 + rand() * 0.5) * 100) / 100;
          // Every third request gets a budget just above the shortest completion: steering decides its end.
          const budget = k++ % 3 === 0 && need.get(key)! < MAX_NEW ? need.get(key)! + Math.floor(rand() * 6) : MAX_NEW;
          jobs.push(request(route, key, schema, seed, temperature, budget));
        }
      }
      // And some that cannot stop early (ignore_eos_token): the budget rule alone ends their value.
      const tight = entries.filter(([key], i) => i % 3 === name.length % 3 && need.get(key)! < MAX_NEW);
      for (const [key, schema] of tight) {
        const seed = 1 + Math.floor(rand() * 1e6);
        jobs.push(request('/generate', key, schema, seed, 1.3, need.get(key)! + Math.floor(rand() * 4), true));
      }
      const outcomes = (await Promise.all(jobs)).flat();
      const failures: string[] = [];
      let finished = 0;
      let steered = 0;
      for (const o of outcomes) {
        const schema = USER_SCHEMAS[o.schema]!;
        const ended = o.finish !== 'length';
        const fits = need.get(o.schema)! <= o.budget;
        if (ended) finished++;
        else if (fits) steered++;
        if (!ended && !fits) continue;
        const p = problem(schema, o.text);
        if (p) failures.push(`${o.route} ${o.schema} (${o.finish}, budget ${o.budget}): ${p}: ${JSON.stringify(o.text)}`);
        if (o.ids) {
          const q = problem(schema, tok.decode(o.ids));
          if (q) failures.push(`${o.route} ${o.schema} token ids (${o.finish}): ${q}: ${JSON.stringify(tok.decode(o.ids))}`);
        }
      }
      if (process.env.JSON_MODE_E2E_VERBOSE) for (const o of outcomes) console.log(o.route, o.schema, o.finish, o.budget, JSON.stringify(o.text));
      assert.deepEqual(failures, [], `${failures.length} of ${outcomes.length} outputs fail`);
      assert.ok(finished >= outcomes.length * 0.5, `${finished}/${outcomes.length} ended by EOS`);
      assert.ok(steered >= tight.length, `${steered} outputs were closed by the budget rule`);
    });

    it('schemas the tokenizer cannot write are refused up front (422 / 400), never cut short', async () => {
      if (name.includes('special')) assert.ok(unwritable.has('constCjk') && unwritable.has('emojiKey'), [...unwritable].join(', '));
      else assert.deepEqual([...unwritable], []);
      for (const key of unwritable) {
        const schema = USER_SCHEMAS[key];
        const a = await postJson(`${srv.url}/generate`, { inputs: 'x', parameters: { max_new_tokens: 32, response_format: { type: 'json_object', schema } } });
        assert.equal(a.status, 422);
        assert.match(((await a.json()) as { error: string }).error, /cannot write with regular tokens/);
        const b = await postJson(`${srv.url}/v1/chat/completions`, { model: '', messages: [{ role: 'user', content: 'x' }], response_format: { type: 'json_schema', json_schema: { name: key, schema } } });
        assert.equal(b.status, 400);
        assert.match(((await b.json()) as { error: { message: string } }).error.message, /cannot write with regular tokens/);
      }
    });

    it('stop sequences never cut a value: they are kept out of the value, or the schema is refused', async () => {
      const keys = Object.keys(USER_SCHEMAS).filter((k) => !unwritable.has(k) && need.get(k)! < 60).slice(0, 6);
      const outs = await Promise.all(
        keys.map(async (key, i) => {
          const res = await postJson(`${srv.url}/generate`, {
            inputs: `JSON for ${key}:`,
            parameters: { max_new_tokens: MAX_NEW, do_sample: true, temperature: 1.4, seed: 100 + i, stop: ['\n', ' ,', '":'], details: true, response_format: { type: 'json_object', schema: USER_SCHEMAS[key] } },
          });
          assert.equal(res.status, 200, await res.clone().text());
          const body = (await res.json()) as { generated_text: string; details: { finish_reason: string } };
          return { key, ...body };
        }),
      );
      for (const o of outs) {
        assert.notEqual(o.details.finish_reason, 'stop_sequence', `${o.key}: ${JSON.stringify(o.generated_text)}`);
        for (const stop of ['\n', ' ,']) assert.ok(!o.generated_text.includes(stop), `${o.key}: ${JSON.stringify(o.generated_text)}`);
        if (o.details.finish_reason !== 'length') assert.equal(problem(USER_SCHEMAS[o.key], o.generated_text), null, `${o.key}: ${JSON.stringify(o.generated_text)}`);
      }
      const refused = await postJson(`${srv.url}/v1/chat/completions`, {
        model: '',
        messages: [{ role: 'user', content: 'x' }],
        stop: ['}'],
        response_format: { type: 'json_schema', json_schema: { name: 'o', schema: { type: 'object' } } },
      });
      assert.equal(refused.status, 400);
      assert.match(((await refused.json()) as { error: { message: string } }).error.message, /stop sequences/);
    });

    async function request(route: string, key: string, schema: unknown, seed: number, temperature: number, budget: number, ignoreEos = false): Promise<Outcome[]> {
      const rf = { type: 'json_schema', json_schema: { name: key, schema, strict: true } };
      const base = { route, schema: key, budget };
      if (route === '/generate' || route === '/generate_stream') {
        const res = await postJson(`${srv.url}${route}`, {
          inputs: `Write ${key} as JSON:`,
          parameters: { max_new_tokens: budget, do_sample: true, temperature, seed, details: true, ignore_eos_token: ignoreEos, response_format: { type: 'json_object', schema } },
        });
        assert.equal(res.status, 200, await res.clone().text());
        if (route === '/generate') {
          const body = (await res.json()) as { generated_text: string; details: { finish_reason: string; tokens: { id: number }[] } };
          if (ignoreEos) assert.equal(body.details.finish_reason, 'length');
          // Token ids of the text (EOS tokens generated under ignore_eos are not text).
          const ids = body.details.tokens.map((t) => t.id).filter((id) => !tok.eosTokenIds.includes(id));
          return [{ ...base, route: ignoreEos ? `${route} (ignore_eos)` : route, text: body.generated_text, finish: body.details.finish_reason, ids }];
        }
        const events = (await readSSE(res)).map((d) => JSON.parse(d) as { token: { id: number; text: string; special: boolean }; generated_text: string | null; details: { finish_reason: string } | null });
        const last = events.at(-1)!;
        const ids = events.filter((e) => !e.token.special).map((e) => e.token.id);
        // The streamed pieces add up to the final text.
        const streamed = events.map((e) => (e.token.special ? '' : e.token.text)).join('');
        const out: Outcome[] = [{ ...base, text: last.generated_text ?? '', finish: last.details?.finish_reason ?? '', ids }];
        if (streamed !== last.generated_text) out.push({ ...base, route: `${route} (concatenated tokens)`, text: streamed, finish: last.details?.finish_reason ?? '' });
        return out;
      }
      if (route === '/v1/completions') {
        const res = await postJson(`${srv.url}/v1/completions`, { model: '', prompt: `JSON for ${key}:`, max_tokens: budget, temperature, seed, response_format: rf });
        assert.equal(res.status, 200, await res.clone().text());
        const body = (await res.json()) as { choices: { text: string; finish_reason: string }[] };
        return body.choices.map((c) => ({ ...base, text: c.text, finish: c.finish_reason }));
      }
      const res = await postJson(`${srv.url}/v1/chat/completions`, {
        model: '',
        messages: [{ role: 'user', content: `Give me ${key}` }],
        max_tokens: budget,
        temperature,
        seed,
        stream: false,
        response_format: rf,
      });
      assert.equal(res.status, 200, await res.clone().text());
      const body = (await res.json()) as { choices: { message: { content: string }; finish_reason: string }[] };
      return body.choices.map((c) => ({ ...base, text: c.message.content, finish: c.finish_reason }));
    }
  });
}
