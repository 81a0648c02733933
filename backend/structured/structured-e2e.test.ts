// Structured output through a real backend over HTTP, with the three fixture models (tiny random
// weights: sampled at temperature 1.5 they never write JSON on their own). Constrained requests
// for many schemas and seeds go out concurrently with unconstrained and adapter requests, so
// they share batches; every output that finishes must parse and validate (@cfworker/json-schema),
// and nearly all must finish.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Validator } from '@cfworker/json-schema';
import { postJson, readSSE, startBackend, type TestServer } from '../../test/helpers/backend.ts';
import { INLINE_MAX_CHARS } from './compile-pool.ts';
import { largeSchema, OPEN_SCHEMAS, TEST_SCHEMAS } from './test-schemas.ts';

const FIXTURES = join(import.meta.dirname, '..', '..', 'test', 'fixtures');
const SEEDS = [1, 2, 3, 4];
const MAX_NEW = 320;

interface Outcome {
  schema: string;
  text: string;
  finish: string;
}

function validate(schemaName: string, schema: object, text: string) {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    assert.fail(`${schemaName}: not JSON: ${JSON.stringify(text)} (${(err as Error).message})`);
  }
  const r = new Validator(schema, '2020-12', false).validate(value);
  assert.ok(r.valid, `${schemaName}: ${text}\n${JSON.stringify(r.errors.slice(0, 3))}`);
}

function checkAll(outcomes: Outcome[], schemas: Record<string, object>, minFinished: number) {
  const finished = outcomes.filter((o) => o.finish !== 'length');
  if (process.env.STRUCTURED_E2E_VERBOSE) {
    console.log(`${finished.length}/${outcomes.length} finished`);
    for (const o of outcomes) console.log(o.schema, o.finish, JSON.stringify(o.text));
  }
  for (const o of finished) validate(o.schema, schemas[o.schema]!, o.text);
  assert.ok(finished.length >= outcomes.length * minFinished, `only ${finished.length}/${outcomes.length} finished: ${outcomes.filter((o) => o.finish === 'length').map((o) => o.schema).join(', ')}`);
}

const MODELS = [
  { name: 'llama', adapter: 'r8-qv' },
  { name: 'mistral', adapter: 'r16-all' },
  { name: 'qwen2', adapter: 'r4-rslora-mlp' },
];

for (const model of MODELS) {
  describe(`structured output e2e: ${model.name}`, () => {
    let srv: TestServer;
    const adapter = join(FIXTURES, 'adapters', model.name, model.adapter);
    before(async () => {
      srv = await startBackend(['--model-id', join(FIXTURES, 'models', model.name), '--adapter-source', 'local', '--allow-absolute-adapter-paths']);
    });
    after(async () => {
      await srv.close();
    });

    it('LoRAX /generate: every schema x seeds, mixed with free and adapter requests in the same batches', async () => {
      const jobs: Promise<Outcome | null>[] = [];
      let k = 0;
      for (const [name, schema] of Object.entries(TEST_SCHEMAS)) {
        for (const seed of SEEDS) {
          const withAdapter = k++ % 3 === 0;
          jobs.push(
            postJson(`${srv.url}/generate`, {
              inputs: `Write ${name} as JSON:`,
              parameters: {
                max_new_tokens: MAX_NEW,
                do_sample: true,
                temperature: 1.5,
                seed,
                details: true,
                response_format: { type: seed % 2 ? 'json_object' : 'json_schema', schema },
                ...(withAdapter ? { adapter_id: adapter } : {}),
              },
            }).then(async (res) => {
              assert.equal(res.status, 200, await res.clone().text());
              const body = (await res.json()) as { generated_text: string; details: { finish_reason: string } };
              return { schema: name, text: body.generated_text, finish: body.details.finish_reason };
            }),
          );
          // Unconstrained neighbours in the same batches (base model and adapter).
          if (seed === SEEDS[0]) {
            jobs.push(
              postJson(`${srv.url}/generate`, {
                inputs: 'Tell me a story',
                parameters: { max_new_tokens: 40, do_sample: true, temperature: 1.5, seed, ...(k % 2 ? { adapter_id: adapter } : {}) },
              }).then(async (res) => {
                assert.equal(res.status, 200);
                return null;
              }),
            );
          }
        }
      }
      const outcomes = (await Promise.all(jobs)).filter((o): o is Outcome => o !== null);
      assert.equal(outcomes.length, Object.keys(TEST_SCHEMAS).length * SEEDS.length);
      checkAll(outcomes, TEST_SCHEMAS, 0.9);
    });

    it('OpenAI chat and completions: json_schema (n = 2), json_object, and free-form objects', async () => {
      const names = Object.keys(TEST_SCHEMAS).filter((_, i) => i % 3 === (model.name.length % 3));
      const jobs: Promise<Outcome[]>[] = [];
      for (const name of names) {
        jobs.push(
          postJson(`${srv.url}/v1/chat/completions`, {
            model: '',
            messages: [{ role: 'user', content: `Give me ${name}` }],
            max_tokens: MAX_NEW,
            temperature: 1.5,
            seed: 7,
            n: 2,
            response_format: { type: 'json_schema', json_schema: { name, schema: TEST_SCHEMAS[name], strict: true } },
          }).then(async (res) => {
            assert.equal(res.status, 200, await res.clone().text());
            const body = (await res.json()) as { choices: { message: { content: string }; finish_reason: string }[] };
            assert.equal(body.choices.length, 2);
            return body.choices.map((c) => ({ schema: name, text: c.message.content, finish: c.finish_reason }));
          }),
        );
        jobs.push(
          postJson(`${srv.url}/v1/completions`, {
            model: adapter,
            prompt: `JSON for ${name}:`,
            max_tokens: MAX_NEW,
            temperature: 1.5,
            seed: 3,
            response_format: { type: 'json_object', schema: TEST_SCHEMAS[name] },
          }).then(async (res) => {
            assert.equal(res.status, 200, await res.clone().text());
            const body = (await res.json()) as { choices: { text: string; finish_reason: string }[] };
            return body.choices.map((c) => ({ schema: name, text: c.text, finish: c.finish_reason }));
          }),
        );
      }
      // Free-form JSON (json_object without a schema, LoRAX's default schema, free strings):
      // strings can run long, so only the finished ones are held to validity.
      const open: Promise<Outcome[]>[] = [];
      for (const seed of [1, 2, 3]) {
        open.push(
          postJson(`${srv.url}/v1/chat/completions`, {
            model: '',
            messages: [{ role: 'user', content: 'Any JSON object' }],
            max_tokens: MAX_NEW,
            temperature: 1.5,
            seed,
            response_format: { type: 'json_object' },
          }).then(async (res) => {
            assert.equal(res.status, 200);
            const body = (await res.json()) as { choices: { message: { content: string }; finish_reason: string }[] };
            return body.choices.map((c) => ({ schema: 'jsonObject', text: c.message.content, finish: c.finish_reason }));
          }),
        );
        open.push(
          postJson(`${srv.url}/generate`, {
            inputs: 'JSON:',
            parameters: { max_new_tokens: MAX_NEW, do_sample: true, temperature: 1.5, seed, details: true, response_format: { type: 'json_object' } },
          }).then(async (res) => {
            assert.equal(res.status, 200);
            const body = (await res.json()) as { generated_text: string; details: { finish_reason: string } };
            return [{ schema: 'loraxDefault', text: body.generated_text, finish: body.details.finish_reason }];
          }),
        );
      }
      const outcomes = (await Promise.all(jobs)).flat();
      checkAll(outcomes, TEST_SCHEMAS, 0.9);
      const openOutcomes = (await Promise.all(open)).flat();
      checkAll(openOutcomes, OPEN_SCHEMAS, 0);
    });

    it('streams constrained output on /generate_stream (tokens add up to the validated text)', async () => {
      const schema = TEST_SCHEMAS.constDiscriminated!;
      const res = await postJson(`${srv.url}/generate_stream`, {
        inputs: 'Shape:',
        parameters: { max_new_tokens: MAX_NEW, do_sample: true, temperature: 1.5, seed: 11, details: true, response_format: { type: 'json_object', schema } },
      });
      assert.equal(res.status, 200);
      const events = (await readSSE(res)).map((d) => JSON.parse(d) as { token: { text: string; special: boolean }; generated_text: string | null; details: { finish_reason: string } | null });
      const last = events.at(-1)!;
      assert.ok(last.generated_text !== null);
      const streamed = events
        .filter((e) => !e.token.special)
        .map((e) => e.token.text)
        .join('');
      assert.equal(streamed.trimStart(), last.generated_text!.trimStart());
      assert.notEqual(last.details!.finish_reason, 'length');
      validate('constDiscriminated', schema, last.generated_text!);
    });
  });
}

describe('structured output e2e: requests refused up front', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startBackend([]);
  });
  after(async () => {
    await srv.close();
  });

  const bad = { type: 'object', properties: { email: { type: 'string', format: 'idn-email' }, code: { type: 'string', pattern: '^(?=[A-Z])' } }, if: { required: ['a'] }, then: {} };

  it('LoRAX answers 422 naming the unsupported features, on /generate and /generate_stream', async () => {
    for (const route of ['/generate', '/generate_stream']) {
      const res = await postJson(`${srv.url}${route}`, { inputs: 'x', parameters: { response_format: { type: 'json_object', schema: bad } } });
      assert.equal(res.status, 422);
      const body = (await res.json()) as { error: string; error_type: string };
      assert.equal(body.error_type, 'validation');
      for (const name of ['"format" ("idn-email"', '"pattern"', 'lookahead', '"if"', '"then"', '#/properties/code', 'parameters.response_format.schema']) assert.ok(body.error.includes(name), `${body.error} names ${name}`);
    }
  });

  it('OpenAI answers 400 naming them, on chat and completions', async () => {
    const chat = await postJson(`${srv.url}/v1/chat/completions`, {
      model: '',
      messages: [{ role: 'user', content: 'x' }],
      response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'integer', multipleOf: 3 } } },
    });
    assert.equal(chat.status, 400);
    const cb = (await chat.json()) as { error: { message: string; type: string } };
    assert.equal(cb.error.type, 'invalid_request_error');
    assert.match(cb.error.message, /"multipleOf"/);
    const comp = await postJson(`${srv.url}/v1/completions`, { model: '', prompt: 'x', response_format: { type: 'json_object', schema: { not: {} } } });
    assert.equal(comp.status, 400);
    assert.match(((await comp.json()) as { error: { message: string } }).error.message, /"not"/);
    const malformed = await postJson(`${srv.url}/v1/completions`, { model: '', prompt: 'x', response_format: { type: 'yaml' } });
    assert.equal(malformed.status, 400);
  });

  it('large schemas (compiled on the worker thread) are refused and honoured like small ones', async () => {
    const big = largeSchema();
    assert.ok(JSON.stringify(big).length > INLINE_MAX_CHARS);
    const refused = await postJson(`${srv.url}/generate`, { inputs: 'x', parameters: { response_format: { type: 'json_object', schema: largeSchema({ code: { type: 'string', pattern: '(a)\\1' } }) } } });
    assert.equal(refused.status, 422);
    assert.match(((await refused.json()) as { error: string }).error, /"pattern".*#\/properties\/code/);
    const ok = await postJson(`${srv.url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 24, response_format: { type: 'json_object', schema: big } } });
    assert.equal(ok.status, 200);
    assert.match(((await ok.json()) as { generated_text: string }).generated_text, /^\s*\{\s*("|$)/);
  });

  it('response_format "text" leaves generation unconstrained', async () => {
    const a = await postJson(`${srv.url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 8, response_format: { type: 'text' } } });
    const b = await postJson(`${srv.url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 8 } });
    assert.deepEqual(await a.json(), await b.json());
  });

  it('greedy decoding is constrained too', async () => {
    const res = await postJson(`${srv.url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 64, details: true, response_format: { type: 'json_object', schema: TEST_SCHEMAS.person } } });
    const body = (await res.json()) as { generated_text: string; details: { finish_reason: string } };
    // Even if it runs to max_new_tokens, the budget rule closes the value in time.
    validate('person', TEST_SCHEMAS.person!, body.generated_text);
  });
});
