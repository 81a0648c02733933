// Quotas over real HTTP with two gateway instances sharing one real redis-server in front of a
// real backend: requests per minute, tokens per minute (reserved up front, settled with the real
// count), concurrent streams, 429 with Retry-After and rate-limit headers; a client that
// disconnects cancels the generation on the backend and still settles; and Redis going down
// (fail closed, 503) and coming back.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { RunningGateway } from '../../gateway/node.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';
import { admin, issueKey, makeAdapterRoot, post, sseData, startBackend, startTestGateway, type Backend } from './helpers/stack.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await sleep(10);
  }
}
const counter = async (c: { get(): Promise<{ values: Array<{ value: number }> }> }) => (await c.get()).values[0]?.value ?? 0;

describe('gateway e2e: limits across instances', () => {
  let redis: TestRedis;
  let root: Awaited<ReturnType<typeof makeAdapterRoot>>;
  let be: Backend;
  let g1: RunningGateway;
  let g2: RunningGateway;

  before(async () => {
    redis = await startRedis();
    root = await makeAdapterRoot();
    be = await startBackend(root.dir);
    g1 = await startTestGateway({ backends: [be.url], redisUrl: redis.url });
    g2 = await startTestGateway({ backends: [be.url], redisUrl: redis.url });
  });
  after(async () => {
    await g1?.close();
    await g2?.close();
    await be?.close();
    await root?.cleanup();
    await redis?.stop();
  });

  it('requests per minute hold across two instances: 429 with Retry-After past the limit', async () => {
    const key = await issueKey(g1, 'rpm-co', { limits: { rpm: 5 } });
    const results = await Promise.all(
      Array.from({ length: 12 }, (_, i) => post(`${(i % 2 ? g1 : g2).url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 1 } }, key)),
    );
    const ok = results.filter((r) => r.status === 200);
    const limited = results.filter((r) => r.status === 429);
    assert.equal(ok.length, 5);
    assert.equal(limited.length, 7);
    for (const r of limited) {
      const after = Number(r.headers.get('retry-after'));
      assert.ok(after >= 1 && after <= 12, String(after));
      assert.equal(r.headers.get('x-ratelimit-limit-requests'), '5');
      assert.equal(r.headers.get('x-ratelimit-remaining-requests'), '0');
      const body = (await r.json()) as { error: string; error_type: string };
      assert.equal(body.error_type, 'overloaded');
      assert.match(body.error, /5 requests per minute/);
    }
    assert.ok(ok.every((r) => r.headers.get('x-ratelimit-limit-requests') === '5'));
    // OpenAI shape for the OpenAI routes.
    const o = await post(`${g2.url}/v1/chat/completions`, { model: '', messages: [{ role: 'user', content: 'x' }], max_tokens: 1 }, key);
    assert.equal(o.status, 429);
    const e = ((await o.json()) as { error: { type: string; code: string } }).error;
    assert.equal(e.type, 'rate_limit_error');
    assert.equal(e.code, 'rate_limit_rpm');
  });

  it('tokens per minute: budgets are reserved before forwarding, so a burst cannot overshoot', async () => {
    await admin(g1, 'PUT', '/tenants/tpm-co', { limits: { tpm: 1000 } });
    const key = await issueKey(g1, 'tpm-co');
    // Each request may use 5 + 4 (prompt bound) + 400 = 409 tokens: two fit in 1000, a third does not.
    const body = { inputs: 'Hello', parameters: { max_new_tokens: 400, ignore_eos_token: true, details: true } };
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => post(`${(i % 2 ? g1 : g2).url}/generate`, body, key)));
    const ok = results.filter((r) => r.status === 200);
    assert.equal(ok.length, 2, results.map((r) => r.status).join(','));
    const limited = results.filter((r) => r.status === 429);
    for (const r of limited) {
      assert.ok(Number(r.headers.get('retry-after')) >= 1);
      assert.equal(r.headers.get('x-ratelimit-limit-tokens'), '1000');
      await r.body?.cancel();
    }
    const used = (await Promise.all(ok.map((r) => r.json() as Promise<{ details: { prompt_tokens: number; generated_tokens: number } }>))).map(
      (b) => b.details.prompt_tokens + b.details.generated_tokens,
    );
    await sleep(100);
    const usage = (await admin(g1, 'GET', '/tenants/tpm-co/usage?days=1')).json;
    assert.equal(usage.total.total_tokens, used[0]! + used[1]!);
    assert.ok(usage.total.total_tokens <= 1000);
  });

  it('settling returns the unused part of a reservation', async () => {
    await admin(g1, 'PUT', '/tenants/refund-co', { limits: { tpm: 1000 } });
    const key = await issueKey(g1, 'refund-co');
    // A reserves 9 + 300 = 309 tokens, then its client leaves after the first event: it is
    // charged what it used (a few tokens), the rest goes back to the bucket.
    const ac = new AbortController();
    const a = await post(`${g1.url}/generate_stream`, { inputs: 'Hello', parameters: { max_new_tokens: 300, ignore_eos_token: true } }, key, {}, ac.signal);
    assert.equal(Number(a.headers.get('x-ratelimit-remaining-tokens')), 1000 - 309);
    await a.body!.getReader().read();
    ac.abort();
    let usedA = 0;
    await until(async () => {
      usedA = (await admin(g1, 'GET', '/tenants/refund-co/usage?days=1')).json.total.total_tokens;
      return usedA > 0;
    });
    assert.ok(usedA < 100, String(usedA));
    const b = await post(`${g2.url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 300 } }, key);
    assert.equal(b.status, 200);
    await b.body?.cancel();
    const remaining = Number(b.headers.get('x-ratelimit-remaining-tokens'));
    // 1000 - used(A) - reserved(B), plus a few tokens of refill; without the refund it would be 382.
    const expected = 1000 - usedA - 309;
    assert.ok(remaining >= expected && remaining <= expected + 25, `remaining ${remaining}, expected ~${expected}`);
  });

  it('a token budget larger than the limit itself is refused with a clear message, not a 429', async () => {
    await admin(g1, 'PUT', '/tenants/small-co', { limits: { tpm: 100 } });
    const key = await issueKey(g1, 'small-co');
    const r = await post(`${g1.url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 200 } }, key);
    assert.equal(r.status, 422);
    assert.match(((await r.json()) as { error: string }).error, /more than the 100 tokens per minute allowed; lower parameters\.max_new_tokens/);
    const o = await post(`${g1.url}/v1/chat/completions`, { model: '', messages: [{ role: 'user', content: 'x' }] }, key);
    assert.equal(o.status, 400);
    assert.equal(((await o.json()) as any).error.code, 'tokens_exceed_limit');
  });

  it('concurrent streams: one more than the limit waits (429) until a stream ends', async () => {
    const key = await issueKey(g1, 'stream-co', { limits: { concurrent_streams: 2 } });
    const open = async (gw: RunningGateway, ac: AbortController) => {
      const r = await post(`${gw.url}/generate_stream`, { inputs: 'Hello', parameters: { max_new_tokens: 500, ignore_eos_token: true } }, key, {}, ac.signal);
      if (r.status === 200) await r.body!.getReader().read(); // started; then stop reading (backpressure holds it)
      return r;
    };
    const a1 = new AbortController();
    const a2 = new AbortController();
    const s1 = await open(g1, a1);
    const s2 = await open(g2, a2);
    assert.equal(s1.status, 200);
    assert.equal(s2.status, 200);
    const third = await post(`${g1.url}/v1/completions`, { model: '', prompt: 'x', max_tokens: 5, stream: true }, key);
    assert.equal(third.status, 429);
    assert.ok(Number(third.headers.get('retry-after')) >= 1);
    assert.equal(((await third.json()) as any).error.code, 'rate_limit_concurrency');
    // Non-streaming requests do not take a stream slot.
    assert.equal((await post(`${g2.url}/generate`, { inputs: 'x', parameters: { max_new_tokens: 1 } }, key)).status, 200);
    a1.abort();
    await until(async () => {
      const r = await post(`${g2.url}/generate_stream`, { inputs: 'x', parameters: { max_new_tokens: 2 } }, key);
      await r.body?.cancel();
      return r.status === 200;
    });
    a2.abort();
  });

  it('a client that disconnects cancels the generation on the backend, and is still counted', async () => {
    const key = await issueKey(g1, 'leaver-co');
    const done = await counter(be.rt.metrics.requestSuccess);
    const ac = new AbortController();
    const r = await post(`${g1.url}/generate_stream`, { inputs: 'Hello', parameters: { max_new_tokens: 500, ignore_eos_token: true } }, key, {}, ac.signal);
    const reader = r.body!.getReader();
    await reader.read();
    assert.equal(be.rt.inFlight, 1);
    ac.abort();
    await until(() => be.rt.inFlight === 0, 2000);
    await sleep(100);
    assert.equal(await counter(be.rt.metrics.requestSuccess), done, 'the generation was cancelled, not finished');
    const usage = (await admin(g1, 'GET', '/tenants/leaver-co/usage?days=1')).json;
    assert.equal(usage.total.requests, 1);
    assert.ok(usage.total.completion_tokens >= 1 && usage.total.completion_tokens < 500, JSON.stringify(usage.total));
    // Same for a non-streaming request whose client gives up.
    const ac2 = new AbortController();
    const p = post(`${g2.url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 500, ignore_eos_token: true } }, key, {}, ac2.signal).catch((e: Error) => e);
    await until(() => be.rt.inFlight === 1, 2000);
    ac2.abort();
    assert.ok((await p) instanceof Error);
    await until(() => be.rt.inFlight === 0, 2000);
    assert.equal(await counter(be.rt.metrics.requestSuccess), done);
  });

  it('Redis down: fail closed (503 in the API shape, fast), health says so; back when Redis is', async () => {
    const key = await issueKey(g1, 'outage-co');
    assert.equal((await post(`${g1.url}/generate`, { inputs: 'x', parameters: { max_new_tokens: 1 } }, key)).status, 200);
    await redis.stop();
    const t0 = performance.now();
    const r = await post(`${g1.url}/generate`, { inputs: 'x', parameters: { max_new_tokens: 1 } }, key);
    assert.equal(r.status, 503);
    assert.ok(performance.now() - t0 < 2500, `${performance.now() - t0} ms`);
    assert.equal(r.headers.get('retry-after'), '1');
    assert.equal(((await r.json()) as { error_type: string }).error_type, 'overloaded');
    const o = await post(`${g2.url}/v1/chat/completions`, { model: '', messages: [{ role: 'user', content: 'x' }] }, key);
    assert.equal(o.status, 503);
    assert.equal(((await o.json()) as any).error.code, 'store_unavailable');
    const h = await fetch(`${g1.url}/health`);
    assert.equal(h.status, 503);
    assert.equal(((await h.json()) as any).store.ok, false);
    const a = await admin(g1, 'GET', '/keys');
    assert.equal(a.status, 503);
    // Redis is back (empty: the test server keeps nothing): the gateway recovers by itself.
    await redis.start();
    await until(async () => (await fetch(`${g1.url}/health`)).status === 200, 5000);
    const fresh = await issueKey(g2, 'outage-co');
    assert.equal((await post(`${g1.url}/generate`, { inputs: 'x', parameters: { max_new_tokens: 1 } }, fresh)).status, 200);
    const s = await post(`${g2.url}/generate_stream`, { inputs: 'x', parameters: { max_new_tokens: 2 } }, fresh);
    assert.ok(sseData(await s.text()).length >= 1);
  });
});
