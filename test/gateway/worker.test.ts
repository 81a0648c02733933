// The Worker build in a real Workers runtime (workerd, through Miniflare 3), in front of a real
// backend: keys from the admin API, tenant JWTs (jose on workerd), validation with
// @cfworker/json-schema, streaming, isolation, disconnect propagation, a backend failing
// mid-stream (stand-in), and a shared Redis reached over HTTP (REST dialect) whose keys and
// limits are the same ones the Node gateway uses.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { SignJWT } from 'jose';
import type { RunningGateway } from '../../gateway/node.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';
import { startRedisRest, type RedisRest } from './helpers/redis-rest.ts';
import { ADMIN_TOKEN, SERVICE_KEY, issueKey, makeAdapterRoot, post, sseData, startBackend, startTestGateway, uploadFixtureAdapter, type Backend } from './helpers/stack.ts';
import { startStandIn, type StandIn } from './helpers/standin.ts';
import { startWorker, type RunningWorker } from './helpers/worker.ts';

const JWT_SECRET = 'edge-jwt-secret-0123456789abcdef-0123456789';
const jwt = (claims: Record<string, unknown>, o: { exp?: number | string; aud?: string } = {}) =>
  new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuer('https://idp.test')
    .setAudience(o.aud ?? 'edge')
    .setExpirationTime(o.exp ?? '5m')
    .sign(new TextEncoder().encode(JWT_SECRET));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('gateway on workerd (Miniflare)', () => {
  let redis: TestRedis;
  let rest: RedisRest;
  let root: Awaited<ReturnType<typeof makeAdapterRoot>>;
  let be: Backend;
  let standIn: StandIn;
  let w: RunningWorker; // in-isolate memory store
  let wr: RunningWorker; // shared Redis over REST
  let node: RunningGateway; // the Node gateway on the same Redis

  before(async () => {
    redis = await startRedis();
    rest = await startRedisRest(redis.url);
    root = await makeAdapterRoot();
    be = await startBackend(root.dir);
    standIn = await startStandIn();
    const common = { SERVICE_KEY, ADMIN_TOKEN, JWT_ISSUER: 'https://idp.test', JWT_AUDIENCE: 'edge', JWT_SECRET, HEALTH_INTERVAL_MS: '200', EXPOSE_BACKEND: 'true' };
    [w, wr] = await Promise.all([
      startWorker({ ...common, BACKENDS: be.url }),
      startWorker({ ...common, BACKENDS: `${be.url},${standIn.url}`, REDIS_REST_URL: rest.url, REDIS_REST_TOKEN: rest.token }),
    ]);
    node = await startTestGateway({ backends: [be.url], redisUrl: redis.url });
  });
  after(async () => {
    await w?.close();
    await wr?.close();
    await node?.close();
    await standIn?.close();
    await be?.close();
    await root?.cleanup();
    await rest?.close();
    await redis?.stop();
  });

  it('serves health, issues keys and forwards LoRAX and OpenAI requests, streaming', async () => {
    const h = await fetch(`${w.url}/health`);
    assert.equal(h.status, 200);
    assert.equal(((await h.json()) as any).store.kind, 'memory');
    const key = await issueKey(w, 'acme');
    const g = await post(`${w.url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 3 } }, key);
    assert.equal(g.status, 200);
    assert.deepEqual(Object.keys((await g.json()) as object), ['generated_text']);
    const s = await post(`${w.url}/generate_stream`, { inputs: 'Hello', parameters: { max_new_tokens: 3 } }, key);
    const events = sseData(await s.text()).map((e) => JSON.parse(e));
    assert.equal(events.length, 3);
    assert.equal(events[2].details, null);
    const c = await post(`${w.url}/v1/chat/completions`, { model: 'llama', messages: [{ role: 'user', content: 'hi' }], max_tokens: 3, stream: true }, key);
    const cev = sseData(await c.text());
    assert.equal(cev.at(-1), '[DONE]');
    assert.ok(cev.every((e) => !e.includes('"usage"')));
  });

  it('tenant JWTs: accepted when valid; expired, wrong audience and bad signature refused', async () => {
    assert.equal((await post(`${w.url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 1 } }, await jwt({ tenant: 'edge-co' }))).status, 200);
    const expired = await post(`${w.url}/generate`, { inputs: 'x' }, await jwt({ tenant: 'edge-co' }, { exp: Math.floor(Date.now() / 1000) - 100 }));
    assert.equal(expired.status, 401);
    assert.match(((await expired.json()) as any).error, /expired/);
    const aud = await post(`${w.url}/v1/completions`, { model: '', prompt: 'x' }, await jwt({ tenant: 'edge-co' }, { aud: 'other' }));
    assert.equal(aud.status, 401);
    assert.match(((await aud.json()) as any).error.message, /"aud"/);
    const tok = await jwt({ tenant: 'edge-co' });
    const forged = `${tok.slice(0, tok.lastIndexOf('.'))}.${'A'.repeat(43)}`;
    assert.equal((await post(`${w.url}/generate`, { inputs: 'x' }, forged)).status, 401);
  });

  it('validation runs in workerd: bad JSON, schema errors, JSON Schema checks, body limit', async () => {
    const key = await issueKey(w, 'acme');
    const seen = (await be.rt.metrics.requestCount.get()).values[0]?.value ?? 0;
    let r = await fetch(`${w.url}/generate`, { method: 'POST', headers: { authorization: `Bearer ${key}` }, body: '{nope' });
    assert.equal(r.status, 400);
    r = await post(`${w.url}/generate`, { inputs: '' }, key);
    assert.equal(r.status, 422);
    assert.deepEqual(await r.json(), { error: 'Input validation error: inputs: cannot be empty', error_type: 'validation' });
    r = await post(`${w.url}/v1/chat/completions`, { model: '', messages: [{ role: 'user', content: 'x' }], response_format: { type: 'json_schema', json_schema: { name: 'a', schema: { type: 'object', properties: { n: { type: 'integer', minimum: 'zero' } } } } } }, key);
    assert.equal(r.status, 400);
    assert.match(((await r.json()) as any).error.message, /not a valid JSON Schema/);
    r = await post(`${w.url}/generate`, { inputs: 'x'.repeat(1024 * 1024 + 10) }, key);
    assert.equal(r.status, 413);
    assert.equal(((await be.rt.metrics.requestCount.get()).values[0]?.value ?? 0), seen);
  });

  it('isolation: another tenant cannot use, list or detect a private adapter', async () => {
    const acme = await issueKey(w, 'acme');
    const bob = await issueKey(w, 'bob');
    const bobTry = async () => {
      const r = await post(`${w.url}/v1/chat/completions`, { model: 'private-one', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 }, bob);
      return [r.status, await r.text()];
    };
    const before = await bobTry();
    await uploadFixtureAdapter(w, acme, 'r16-all', 'private-one');
    assert.equal((await post(`${w.url}/v1/chat/completions`, { model: 'private-one', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 }, acme)).status, 200);
    assert.deepEqual(await bobTry(), before);
    assert.equal(before[0], 404);
    const list = (await (await fetch(`${w.url}/v1/models`, { headers: { authorization: `Bearer ${bob}` } })).json()) as { data: Array<{ id: string }> };
    assert.deepEqual(list.data.map((m) => m.id), ['llama']);
  });

  it('a client that disconnects cancels the generation on the backend', async () => {
    const key = await issueKey(w, 'acme');
    const ac = new AbortController();
    const r = await post(`${w.url}/generate_stream`, { inputs: 'Hello', parameters: { max_new_tokens: 500, ignore_eos_token: true } }, key, {}, ac.signal);
    await r.body!.getReader().read();
    const done = (await be.rt.metrics.requestSuccess.get()).values[0]?.value ?? 0;
    ac.abort();
    const end = Date.now() + 3000;
    while (be.rt.inFlight > 0 && Date.now() < end) await sleep(10);
    assert.equal(be.rt.inFlight, 0);
    assert.equal((await be.rt.metrics.requestSuccess.get()).values[0]?.value ?? 0, done, 'cancelled, not finished');
  });

  it('shared Redis over REST: keys and limits are the Node gateway\'s too', async () => {
    const h = (await (await fetch(`${wr.url}/health`)).json()) as any;
    assert.equal(h.store.kind, 'redis');
    assert.equal(h.store.ok, true);
    const key = await issueKey(node, 'shared-co', { limits: { rpm: 4 } });
    const statuses: number[] = [];
    for (const url of [node.url, wr.url, node.url, wr.url, wr.url, node.url]) {
      const r = await post(`${url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 1 } }, key);
      statuses.push(r.status);
      if (r.status === 429) assert.ok(Number(r.headers.get('retry-after')) >= 1);
      await r.body?.cancel();
    }
    assert.deepEqual(statuses, [200, 200, 200, 200, 429, 429]);
    await sleep(100);
    const usage = await fetch(`${node.url}/admin/tenants/shared-co/usage?days=1`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(((await usage.json()) as any).total.requests, 4);
    assert.ok(rest.commands > 0);
    // A key revoked on Node is refused by the Worker at once.
    const k2 = await issueKey(wr, 'shared-co');
    const id = ((await (await fetch(`${node.url}/admin/keys?tenant=shared-co`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json()) as any).data.at(-1).id;
    await fetch(`${node.url}/admin/keys/${id}`, { method: 'DELETE', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal((await post(`${wr.url}/generate`, { inputs: 'x' }, k2)).status, 401);
  });

  it('a backend failing mid-stream reaches the client as an error event (stand-in upstream)', async () => {
    const key = await issueKey(wr, 'acme');
    // The stand-in is the second backend; base-model requests go to the least loaded replica, so
    // mark the real one busy for this request by asking until the stand-in answers.
    for (let i = 0; i < 10; i++) {
      const r = await post(`${wr.url}/generate_stream`, { inputs: 'die-mid' }, key);
      const via = r.headers.get('x-switchboard-backend');
      const events = sseData(await r.text());
      if (via !== '1') continue;
      const last = JSON.parse(events.at(-1)!);
      assert.equal(last.error_type, 'incomplete_generation');
      return;
    }
    assert.fail('the stand-in replica was never chosen');
  });
});
