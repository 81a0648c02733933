// Large JSON bodies off the event loop (issue 15): the worker pool answers exactly what the inline
// parser answers, whatever the body, the main loop keeps turning while a large body is parsed, a
// large prompt reaches the backend intact through the pool, and a declared oversize body is
// refused before its credential is looked up.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startStandIn, type StandIn } from '../test/gateway/helpers/standin.ts';
import { checkJsonBody, parseJsonObject } from './body.ts';
import { GatewayError } from './errors.ts';
import { JsonOffload, offloadStats } from './json-offload.ts';
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

  it('validates a body by schema name as the inline check does, sending back only the error of a refused one', async () => {
    const bodies: [Uint8Array, Parameters<typeof checkJsonBody>[1]][] = [
      [enc.encode(JSON.stringify({ model: 'm', prompt: 'hi', logit_bias: Object.fromEntries(Array.from({ length: 50_000 }, (_, i) => [String(i), 1])) })), 'openai.completion'],
      [enc.encode(JSON.stringify({ model: 'm', prompt: Array.from({ length: 100_000 }, (_, i) => i % 7), max_tokens: 2 })), 'openai.completion'],
      [enc.encode(JSON.stringify({ model: 'm', messages: [] })), 'openai.chat'],
      [enc.encode(JSON.stringify({ inputs: pad(100_000), parameters: { max_new_tokens: 0 } })), 'lorax.generate'],
      [enc.encode(JSON.stringify({ inputs: pad(100_000), parameters: { max_new_tokens: 3 }, extra: [1] })), 'lorax.compat'],
      [enc.encode('{"inputs":'), 'lorax.generate'],
    ];
    for (const [b, name] of bodies) {
      const s0 = { ...offloadStats };
      const inline = await outcome(() => checkJsonBody(b, name));
      const off = await outcome(() => pool.parseChecked(b.slice(), name));
      assert.deepEqual(off, inline);
      if (off.ok && !(off.value as { valid: { success: boolean } }).valid.success) {
        assert.equal((off.value as { raw: unknown }).raw, null, 'a refused body does not come back');
        assert.equal(offloadStats.refused - s0.refused, 1);
      }
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

describe('JSON worker threads that cannot start', () => {
  it('parse and serialise inline instead (one log line), with the same answers', async () => {
    const logs: string[] = [];
    const pool = new JsonOffload({ threads: 1, inlineMaxBytes: 0, workerEntry: new URL('./no-such-worker.ts', import.meta.url).href }, (m) => logs.push(m));
    try {
      const body = enc.encode(JSON.stringify({ inputs: pad(100_000) }));
      // The first call meets the failure; from then on the pool works inline.
      await pool.parse(body.slice()).catch(() => {});
      const v = await pool.parse(body.slice());
      assert.equal((v.inputs as string).length, 100_000);
      await assert.rejects(pool.parse(enc.encode('{"a":')), (e: unknown) => e instanceof GatewayError && e.status === 400);
      assert.equal(new TextDecoder().decode(await pool.stringify({ a: 'é' })), '{"a":"é"}');
      assert.equal(logs.length, 1);
      assert.match(logs[0]!, /JSON worker threads unavailable/);
    } finally {
      await pool.close();
    }
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

  it('answers a large request as the same request small, refusals decided on the worker', async () => {
    const bias = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [String(i), 1]));
    const cases: [string, unknown][] = [
      ['/v1/completions', { model: 'llama', prompt: 'hi', logit_bias: bias(301) }],
      ['/v1/chat/completions', { model: 'llama', messages: [] }],
      ['/generate', { inputs: 'hi', parameters: { max_new_tokens: 0 } }],
      ['/generate', { inputs: 'hi', parameters: { max_new_tokens: 2, stop: ['z'] } }],
    ];
    for (const [path, value] of cases) {
      const compact = JSON.stringify(value);
      const s0 = { ...offloadStats };
      const small = await fetch(`${gw.url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${key}` }, body: compact });
      assert.equal(offloadStats.checked - s0.checked, 0, 'a small body is validated inline');
      const large = await fetch(`${gw.url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${key}` }, body: `${' '.repeat(100_000)}${compact}` });
      assert.equal(offloadStats.checked - s0.checked, 1, 'a large body is validated on the worker');
      assert.equal(large.status, small.status);
      assert.deepEqual(await large.json(), await small.json());
    }
    // 60,000 logit_bias keys (700 KB): refused on the worker.
    const s0 = { ...offloadStats };
    const r = await fetch(`${gw.url}/v1/completions`, { method: 'POST', headers: { authorization: `Bearer ${key}` }, body: JSON.stringify({ model: 'llama', prompt: 'hi', logit_bias: bias(60_000) }) });
    assert.equal(r.status, 400);
    assert.match(((await r.json()) as { error: { message: string } }).error.message, /at most 300 token ids/);
    assert.equal(offloadStats.refused - s0.refused, 1);
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
