// Large JSON bodies off the event loop (issue 15): the worker pool answers exactly what the inline
// parser answers, whatever the body, the main loop keeps turning while a large body is parsed, a
// large prompt reaches the backend intact through the pool, and a declared oversize body is
// refused before its credential is looked up.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startStandIn, type StandIn } from '../test/gateway/helpers/standin.ts';
import { parseJsonObject } from './body.ts';
import { GatewayError } from './errors.ts';
import { JsonOffload } from './json-offload.ts';
import { startGateway, type RunningGateway } from './node.ts';

const KEY = 'offload-service-key-0123456789abcdef-0123456789';
const enc = new TextEncoder();
const pad = (n: number) => 'x'.repeat(n);

type Outcome = { ok: true; value: unknown } | { ok: false; status: number; message: string; code: unknown };

async function outcome(f: () => unknown): Promise<Outcome> {
  try {
    return { ok: true, value: await f() };
  } catch (err) {
    assert.ok(err instanceof GatewayError, String(err));
    return { ok: false, status: err.status, message: err.message, code: err.opts.code };
  }
}

describe('JSON bodies on worker threads', () => {
  const pool = new JsonOffload({ threads: 2, inlineMaxBytes: 0 });
  after(() => pool.close());

  it('answers what the inline parser answers, for good and bad bodies of any size', async () => {
    const big = pad(200_000);
    const bodies: Uint8Array[] = [
      enc.encode(JSON.stringify({ inputs: big, parameters: { max_new_tokens: 3, stop: ['a', 'b'] }, n: null, nested: { é: '雪', emoji: '😀' } })),
      enc.encode(`{"inputs":"${big}"`), // truncated JSON
      enc.encode(`{"inputs":"x","stop":${'['.repeat(100_000)}${']'.repeat(100_000)}}`), // too deep
      enc.encode(`[${JSON.stringify(big)}]`), // not an object
      enc.encode(' '.repeat(100_000)), // empty
      new Uint8Array([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]), // bad UTF-8
      enc.encode('{"a":1}'),
    ];
    for (const b of bodies) {
      const inline = await outcome(() => parseJsonObject(b));
      const off = await outcome(() => pool.parse(b.slice()));
      assert.deepEqual(off, inline);
    }
  });

  it('serialises a value to the bytes of JSON.stringify', async () => {
    const v = { inputs: `${pad(100_000)}"\\\n\u2028雪😀`, parameters: { max_new_tokens: 1, details: true }, list: [1, null, 'x'] };
    const bytes = await pool.stringify(v);
    assert.equal(new TextDecoder().decode(bytes), JSON.stringify(v));
  });

  it('keeps the event loop turning while a large body is parsed', async () => {
    const body = enc.encode(JSON.stringify({ inputs: pad(4_000_000) }));
    await pool.parse(body.slice()); // threads started and warm
    let turned = false;
    setImmediate(() => (turned = true));
    const v = await pool.parse(body);
    assert.equal((v.inputs as string).length, 4_000_000);
    // Parsed inline, the promise would settle before the loop's next turn.
    assert.ok(turned, 'the loop turned while the body was parsed elsewhere');
  });
});

describe('gateway with the JSON worker pool', () => {
  let up: StandIn;
  let gw: RunningGateway;
  let key: string;
  before(async () => {
    up = await startStandIn();
    gw = await startGateway({ backends: [up.url], serviceKey: KEY, adminToken: 'adm', port: 0, log: () => {} });
    const k = await fetch(`${gw.url}/admin/keys`, { method: 'POST', headers: { authorization: 'Bearer adm' }, body: JSON.stringify({ tenant: 'acme' }) });
    key = ((await k.json()) as { key: string }).key;
  });
  after(async () => {
    await gw?.close();
    await up?.close();
  });

  it('forwards a large prompt unchanged, and a small one as before', async () => {
    for (const inputs of [`${pad(300_000)}"雪\n`, 'small']) {
      const r = await fetch(`${gw.url}/generate`, { method: 'POST', headers: { authorization: `Bearer ${key}` }, body: JSON.stringify({ inputs, parameters: { max_new_tokens: 2, stop: ['z'] } }) });
      assert.equal(r.status, 200, await r.clone().text());
      assert.deepEqual(await r.json(), { generated_text: 'hi' }, 'details the client did not ask for are trimmed');
      const sent = up.lastBody.get('/generate') as { inputs: string; parameters: Record<string, unknown> };
      assert.equal(sent.inputs, inputs);
      assert.deepEqual(sent.parameters, { max_new_tokens: 2, stop: ['z'], details: true });
    }
  });

  it('a large body that is not JSON gets the same 400 in each API shape', async () => {
    const l = await fetch(`${gw.url}/generate`, { method: 'POST', headers: { authorization: `Bearer ${key}` }, body: `{"inputs":"${pad(100_000)}` });
    assert.equal(l.status, 400);
    assert.match(((await l.json()) as { error: string; error_type: string }).error, /^request body is not valid JSON/);
    const o = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${key}` }, body: `[${JSON.stringify(pad(100_000))}]` });
    assert.equal(o.status, 400);
    assert.deepEqual(((await o.json()) as { error: { message: string; code: string } }).error.code, 'invalid_json');
  });

  it('refuses a declared oversize body with 413 before looking at the credential', async () => {
    const body = pad(1024 * 1024 + 1);
    for (const headers of [{} as Record<string, string>, { authorization: 'Bearer sk-sb-not-a-real-key' }, { authorization: `Bearer ${key}` }]) {
      const r = await fetch(`${gw.url}/v1/completions`, { method: 'POST', headers, body });
      assert.equal(r.status, 413);
      assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'request_too_large');
    }
    // Within the limit, a missing credential is still a 401.
    assert.equal((await fetch(`${gw.url}/generate`, { method: 'POST', body: '{}' })).status, 401);
  });
});
