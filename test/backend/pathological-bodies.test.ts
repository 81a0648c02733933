// Valid-JSON bodies that are costly to validate or to copy (issue 15) are validated where they were
// parsed: on the JSON parser thread for a large body (json-body.ts), with the server's limits
// (request-limits.ts), so a refusal is decided there and only its error body crosses to the loop.
// The structural check is json-body.ts's bodyStats: `checkedOnThread` / `refusedOnThread` count
// the bodies validated / refused on the thread, `checkedOnLoop` those the loop validated (it must
// stay 0 for a large body). And a body gets the same answer whatever its size: each request is sent
// compact (parsed and validated inline) and padded with whitespace past the inline limit (the same
// JSON value, validated on the thread), and status and body must match.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { TestServer } from '../helpers/backend.ts';

// Read when json-body.ts loads: bodies over 32 KiB go to the parser thread (64 KiB in production),
// so the small twins of the pathological requests below stay inline.
process.env.SWITCHBOARD_JSON_INLINE_MAX_BYTES = String(32 * 1024);
// A response_format schema of 1,000 characters or more comes back from the thread as text.
process.env.SWITCHBOARD_SCHEMA_TEXT_MIN_CHARS = '1000';
const { bodyStats, INLINE_MAX_BYTES } = await import('../../backend/json-body.ts');
const { startBackend } = await import('../helpers/backend.ts');

const MAX_INPUT = 511; // the llama fixture's default input bound (max_position_embeddings 512 - 1)

describe('pathological request bodies', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startBackend(['--threads', '1', '--max-concurrent-requests', '8']);
  });
  after(() => srv.close());

  /** Sends `text` as it is; the answer with what it did to bodyStats. */
  async function send(path: string, text: string) {
    const s0 = { ...bodyStats };
    const res = await fetch(`${srv.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: text });
    const body = await res.text();
    const d = Object.fromEntries(Object.entries(bodyStats).map(([k, v]) => [k, v - s0[k as keyof typeof s0]])) as typeof bodyStats;
    return { status: res.status, body, d };
  }

  /** The body refused on the thread, never validated on the loop. */
  function refusedOnThread(r: Awaited<ReturnType<typeof send>>) {
    assert.equal(r.d.streamedBodies, 1, 'the body went to the parser thread');
    assert.equal(r.d.checkedOnThread, 1);
    assert.equal(r.d.refusedOnThread, 1);
    assert.equal(r.d.checkedOnLoop, 0, 'the loop did not validate it');
  }

  /** The same request compact (inline) and padded past the inline limit (thread): same status and body. */
  async function sameAnswer(path: string, value: unknown, normalise: (body: string) => unknown = (b) => b) {
    const compact = JSON.stringify(value);
    assert.ok(compact.length < INLINE_MAX_BYTES, `the compact body (${compact.length} bytes) is inline`);
    const padded = `${' '.repeat(INLINE_MAX_BYTES + 1)}${compact}`;
    const small = await send(path, compact);
    const large = await send(path, padded);
    assert.equal(small.d.checkedOnLoop, 1);
    assert.equal(small.d.checkedOnThread, 0);
    assert.equal(large.d.checkedOnLoop, 0);
    assert.equal(large.d.checkedOnThread, 1);
    assert.equal(large.status, small.status, `${path}: ${small.body.slice(0, 200)} / ${large.body.slice(0, 200)}`);
    assert.deepEqual(normalise(large.body), normalise(small.body));
    return small;
  }

  const ids = (n: number) => Array.from({ length: n }, (_, i) => i % 100);
  const messages = (n: number) => Array.from({ length: n }, () => ({ role: 'user', content: 'a' }));

  it('refuses 500,000 token ids on the thread with the input bound (prepareInput\'s words)', async () => {
    const r = await send('/v1/completions', JSON.stringify({ model: 'llama', prompt: ids(500_000), max_tokens: 2 }));
    assert.equal(r.status, 400, r.body.slice(0, 300));
    const e = JSON.parse(r.body) as { error: { message: string; type: string } };
    assert.equal(e.error.message, `Input validation error: \`inputs\` must have less than ${MAX_INPUT} tokens. Given: 500000`);
    assert.equal(e.error.type, 'invalid_request_error');
    refusedOnThread(r);
    // Token-id arrays of a batch are bounded one by one.
    const batch = await send('/v1/completions', JSON.stringify({ model: 'llama', prompt: [ids(3), ids(200_000)], max_tokens: 2 }));
    assert.equal(batch.status, 400);
    assert.match(batch.body, /Given: 200000/);
    refusedOnThread(batch);
  });

  it('refuses 200,000 logit_bias keys on the thread (the schema\'s bound of 300)', async () => {
    const r = await send('/v1/completions', JSON.stringify({ model: 'llama', prompt: 'hi', max_tokens: 2, logit_bias: Object.fromEntries(ids(200_000).map((_, i) => [String(i), 1])) }));
    assert.equal(r.status, 400, r.body.slice(0, 300));
    assert.match(r.body, /logit_bias/);
    assert.match(r.body, /at most 300 token ids/);
    assert.ok(r.body.length < 2_000, `a short error body (${r.body.length} bytes)`);
    refusedOnThread(r);
  });

  it('refuses more chat messages than input tokens on the thread', async () => {
    const r = await send('/v1/chat/completions', JSON.stringify({ model: 'llama', max_tokens: 2, messages: messages(100_000) }));
    assert.equal(r.status, 400, r.body.slice(0, 300));
    assert.equal((JSON.parse(r.body) as { error: { message: string } }).error.message, `Input validation error: \`inputs\` must have less than ${MAX_INPUT} tokens. Given: at least 100000`);
    refusedOnThread(r);
  });

  it('refuses more prompts x n than --max-concurrent-requests on the thread', async () => {
    const r = await send('/v1/completions', JSON.stringify({ model: 'llama', prompt: Array.from({ length: 20_000 }, () => 'hello world'), max_tokens: 1 }));
    assert.equal(r.status, 400, r.body.slice(0, 300));
    assert.match(r.body, /20000 prompts x n=1 is more than this server runs at once \(--max-concurrent-requests 8\)/);
    refusedOnThread(r);
  });

  it('refuses a 100,000-value enum schema with the compiler\'s words, the schema crossing as text', async () => {
    const enumOf = (n: number) => ({ type: 'string', enum: Array.from({ length: n }, (_, i) => `value${i}`) });
    const r = await send('/v1/chat/completions', JSON.stringify({ model: 'llama', max_tokens: 2, messages: messages(1), response_format: { type: 'json_schema', json_schema: { name: 'x', schema: enumOf(100_000) } } }));
    assert.equal(r.status, 400, r.body.slice(0, 300));
    assert.match(r.body, /response_format\.json_schema\.schema: the schema is too large to compile/);
    assert.equal(r.d.checkedOnLoop, 0);
    assert.equal(r.d.schemaTexts, 1);
    // A schema served: the same answer as the same request small (the schema as an object).
    const strip = (b: string) => {
      const v = JSON.parse(b) as Record<string, unknown>;
      delete v.id;
      delete v.created;
      return v;
    };
    for (const [path, value] of [
      ['/v1/chat/completions', { model: 'llama', max_tokens: 4, temperature: 0, messages: messages(1), response_format: { type: 'json_schema', json_schema: { name: 'x', schema: enumOf(150) } } }],
      ['/v1/completions', { model: 'llama', max_tokens: 4, temperature: 0, prompt: 'hi', response_format: { type: 'json_object', schema: enumOf(150) } }],
      ['/generate', { inputs: 'hi', parameters: { max_new_tokens: 4, response_format: { type: 'json_object', schema: enumOf(150) } } }],
    ] as const) {
      const s0 = bodyStats.schemaTexts;
      const ok = await sameAnswer(path, value, path === '/generate' ? undefined : strip);
      assert.equal(ok.status, 200, ok.body.slice(0, 300));
      assert.equal(bodyStats.schemaTexts - s0, 1, `${path}: the large body's schema came as text`);
    }
  });

  it('answers an invalid request the same whether its body is small or large', async () => {
    const cases: [string, unknown][] = [
      ['/v1/completions', { prompt: 'hi' }], // no model
      ['/v1/completions', { model: 'llama', prompt: ids(MAX_INPUT + 1), max_tokens: 2 }],
      ['/v1/completions', { model: 'llama', prompt: [ids(4), ids(4)], n: 5, max_tokens: 2 }],
      ['/v1/completions', { model: 'llama', prompt: 'hi', best_of: 3, n: 2 }],
      ['/v1/completions', { model: 'llama', prompt: 'hi', logit_bias: Object.fromEntries(ids(301).map((_, i) => [String(i), 1])) }],
      ['/v1/completions', { model: 'llama', prompt: ['hi', 7], max_tokens: 2 }],
      ['/v1/chat/completions', { model: 'llama', max_tokens: 2, messages: messages(MAX_INPUT + 1) }],
      ['/v1/chat/completions', { model: 'llama', messages: [{ role: 'user', content: 'hi' }], tools: [{ type: 'function', function: { name: 'f' } }] }],
      ['/v1/chat/completions', { model: 'llama', messages: [] }],
      ['/generate', { inputs: 'hi', parameters: { max_new_tokens: 0 } }],
      ['/generate', { parameters: {} }],
      ['/generate_stream', { inputs: 'hi', parameters: { decoder_input_details: true } }],
      ['/', { inputs: 'hi', parameters: { temperature: -1 } }],
      ['/tokenize', { inputs: 7 }],
    ];
    for (const [path, value] of cases) {
      const r = await sameAnswer(path, value);
      assert.ok(r.status >= 400 && r.status < 500, `${path} ${JSON.stringify(value).slice(0, 80)}: ${r.status} ${r.body.slice(0, 200)}`);
    }
  });

  it('serves a valid request the same whether its body is small or large', async () => {
    // id and created differ per answer; everything else must not.
    const strip = (b: string) => {
      const v = JSON.parse(b) as Record<string, unknown>;
      delete v.id;
      delete v.created;
      return v;
    };
    const completion = await sameAnswer('/v1/completions', { model: 'llama', prompt: [ids(5), ids(7)], max_tokens: 3, temperature: 0, logprobs: 1, echo: true }, strip);
    assert.equal(completion.status, 200, completion.body.slice(0, 300));
    const chat = await sameAnswer('/v1/chat/completions', { model: 'llama', messages: messages(40), max_tokens: 3, temperature: 0, logit_bias: { '5': 1 } }, strip);
    assert.equal(chat.status, 200, chat.body.slice(0, 300));
    const gen = await sameAnswer('/generate', { inputs: 'the quick brown fox', parameters: { max_new_tokens: 3, details: true, decoder_input_details: true } });
    assert.equal(gen.status, 200, gen.body.slice(0, 300));
    const tok = await sameAnswer('/tokenize', { inputs: 'the quick brown fox' });
    assert.equal(tok.status, 200, tok.body.slice(0, 300));
  });
});
