// The gateway over real HTTP in front of a real backend (tiny Llama fixture, service-key auth on)
// with a real redis-server: API keys (issue, use, revoke, scopes), tenant JWTs (accept; expired,
// wrong audience, bad signature), private adapters (upload, hub reference with a private token)
// and cross-tenant isolation (use, list, probe), validation of malformed requests, token
// counting and what the gateway trims, and the official OpenAI client end to end.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SignJWT } from 'jose';
import OpenAI from 'openai';
import { startHub, type HubServer } from '../helpers/hub-server.ts';
import type { RunningGateway } from '../../gateway/node.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';
import {
  ADAPTERS_DIR,
  admin,
  issueKey,
  makeAdapterRoot,
  post,
  sseData,
  startBackend,
  startTestGateway,
  uploadFixtureAdapter,
  type Backend,
} from './helpers/stack.ts';

const JWT_SECRET = 'tenant-jwt-secret-for-tests-0123456789abcdef';
const ISS = 'https://login.example.test';
const AUD = 'switchboard-gateway';
const jwt = (claims: Record<string, unknown>, o: { exp?: number | string; aud?: string; secret?: string } = {}) =>
  new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuer(ISS)
    .setAudience(o.aud ?? AUD)
    .setIssuedAt()
    .setExpirationTime(o.exp ?? '5m')
    .sign(new TextEncoder().encode(o.secret ?? JWT_SECRET));

const requestsSeen = async (be: Backend) => (await be.rt.metrics.requestCount.get()).values[0]?.value ?? 0;

describe('gateway e2e: API', () => {
  let redis: TestRedis;
  let root: Awaited<ReturnType<typeof makeAdapterRoot>>;
  let hub: HubServer;
  let cacheDir: string;
  let be: Backend;
  let gw: RunningGateway;
  let acme: string;
  let bob: string;

  before(async () => {
    redis = await startRedis();
    root = await makeAdapterRoot();
    hub = await startHub({ 'acme-org/private-lora': { dir: join(ADAPTERS_DIR, 'r16-all'), token: 'hf_acme_private_token' } });
    cacheDir = await mkdtemp(join(tmpdir(), 'sb-gw-hubcache-'));
    be = await startBackend(root.dir, ['--hub-endpoint', hub.endpoint, '--adapter-cache-dir', cacheDir]);
    gw = await startTestGateway({ backends: [be.url], redisUrl: redis.url, jwt: { issuer: ISS, audience: AUD, secret: JWT_SECRET } });
    acme = await issueKey(gw, 'acme');
    bob = await issueKey(gw, 'bob');
  });

  after(async () => {
    await gw?.close();
    await be?.close();
    await hub?.close();
    await root?.cleanup();
    await rm(cacheDir, { recursive: true, force: true });
    await redis?.stop();
  });

  describe('API keys', () => {
    it('issue (shown once), use, list without secrets, revoke: refused at once', async () => {
      const issued = await admin(gw, 'POST', '/keys', { tenant: 'carol', name: 'ci', scopes: ['inference'] });
      assert.equal(issued.status, 201);
      const key = issued.json.key as string;
      assert.match(key, /^sk-sb-/);
      assert.equal(issued.json.tenant, 'carol');
      const ok = await post(`${gw.url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 2 } }, key);
      assert.equal(ok.status, 200);
      const list = await admin(gw, 'GET', '/keys?tenant=carol');
      assert.equal(list.json.data.length, 1);
      assert.equal(JSON.stringify(list.json).includes(key), false);
      assert.equal(JSON.stringify(await admin(gw, 'GET', `/keys/${issued.json.id}`)).includes(key), false);
      const revoked = await admin(gw, 'DELETE', `/keys/${issued.json.id}`);
      assert.equal(revoked.status, 200);
      assert.ok(revoked.json.revoked_at);
      const after = await post(`${gw.url}/generate`, { inputs: 'Hello' }, key);
      assert.equal(after.status, 401);
      assert.deepEqual(await after.json(), { error: 'invalid API key (unknown, revoked or expired)', error_type: 'unauthorized' });
      const openai = await post(`${gw.url}/v1/chat/completions`, { model: '', messages: [{ role: 'user', content: 'x' }] }, key);
      assert.equal(openai.status, 401);
      assert.equal(((await openai.json()) as any).error.type, 'authentication_error');
    });

    it('a key another instance has cached is refused there at once after a revocation, whatever the request', async () => {
      // The inference routes cache key records per instance (one Redis round trip less); the
      // reservation re-checks revocation atomically and every other answer re-reads the key.
      const other = await startTestGateway({ backends: [be.url], redisUrl: redis.url });
      try {
        const issued = await admin(gw, 'POST', '/keys', { tenant: 'dave', scopes: ['inference'] });
        const key = issued.json.key as string;
        for (let i = 0; i < 2; i++) assert.equal((await post(`${other.url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 1 } }, key)).status, 200);
        assert.equal((await post(`${other.url}/v1/completions`, { model: '', prompt: 'x', max_tokens: 100_000_000 }, key)).status, 400, 'cached and valid: the body error');
        assert.equal((await admin(gw, 'DELETE', `/keys/${issued.json.id}`)).status, 200);
        const refused = [
          await post(`${other.url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 1 } }, key),
          await post(`${other.url}/generate_stream`, { inputs: 'Hello', parameters: { max_new_tokens: 1 } }, key),
          await post(`${other.url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: -3 } }, key),
          await post(`${other.url}/generate`, '{not json', key),
          await post(`${other.url}/generate`, { inputs: 'Hello', parameters: { adapter_id: 'nowhere' } }, key),
          await post(`${other.url}/v1/completions`, { model: '', prompt: 'x', max_tokens: 100_000_000 }, key),
          await post(`${other.url}/tokenize`, { inputs: 'Hello' }, key),
          await post(`${other.url}/tokenize`, { nope: 1 }, key),
          await fetch(`${other.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } }),
        ];
        for (const r of refused) {
          assert.equal(r.status, 401, `${r.url}: ${await r.clone().text()}`);
          assert.equal(r.headers.get('www-authenticate'), 'Bearer');
        }
        assert.deepEqual(await refused[0]!.json(), { error: 'invalid API key (unknown, revoked or expired)', error_type: 'unauthorized' });
        assert.equal(((await refused[5]!.json()) as { error: { code: string } }).error.code, 'invalid_api_key');
      } finally {
        await other.close();
      }
    });

    it('missing or malformed credentials: 401 with WWW-Authenticate; scopes are enforced (403)', async () => {
      const none = await post(`${gw.url}/generate`, { inputs: 'x' }, null);
      assert.equal(none.status, 401);
      assert.equal(none.headers.get('www-authenticate'), 'Bearer');
      assert.equal((await post(`${gw.url}/generate`, { inputs: 'x' }, 'sk-sb-forged')).status, 401);
      const readOnly = await issueKey(gw, 'acme', { scopes: ['adapters:read'] });
      const r = await post(`${gw.url}/v1/completions`, { model: '', prompt: 'x' }, readOnly);
      assert.equal(r.status, 403);
      assert.equal(((await r.json()) as any).error.type, 'permission_error');
      assert.equal((await fetch(`${gw.url}/v1/adapters`, { headers: { authorization: `Bearer ${readOnly}` } })).status, 200);
      const put = await fetch(`${gw.url}/v1/adapters/x/adapter_config.json`, { method: 'PUT', headers: { authorization: `Bearer ${readOnly}` }, body: '{}' });
      assert.equal(put.status, 403);
      const expired = await issueKey(gw, 'acme', { expires_at: new Date(Date.now() - 1000).toISOString() });
      assert.equal((await post(`${gw.url}/generate`, { inputs: 'x' }, expired)).status, 401);
    });

    it('admin API: wrong token 401, bad input 400 in OpenAI shape', async () => {
      const r = await fetch(`${gw.url}/admin/keys`, { method: 'POST', headers: { authorization: 'Bearer nope' }, body: '{}' });
      assert.equal(r.status, 401);
      const bad = await admin(gw, 'POST', '/keys', { tenant: 'Not A Tenant!' });
      assert.equal(bad.status, 400);
      assert.equal(bad.json.error.param, 'tenant');
      const scope = await admin(gw, 'POST', '/keys', { tenant: 'acme', scopes: ['root'] });
      assert.equal(scope.status, 400);
    });
  });

  describe('tenant JWTs', () => {
    it('a valid token authenticates its tenant statelessly', async () => {
      const tok = await jwt({ tenant: 'edge-co', sub: 'svc-1' });
      const r = await post(`${gw.url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 2 } }, tok);
      assert.equal(r.status, 200);
      await new Promise((res) => setTimeout(res, 50));
      const usage = await admin(gw, 'GET', '/tenants/edge-co/usage?days=1');
      assert.equal(usage.json.total.requests, 1);
    });

    it('expired, wrong audience, bad signature, no tenant: 401 in each API\'s shape', async () => {
      const cases: Array<[string, Promise<string>, RegExp]> = [
        ['expired', jwt({ tenant: 'edge-co' }, { exp: Math.floor(Date.now() / 1000) - 120 }), /expired/],
        ['audience', jwt({ tenant: 'edge-co' }, { aud: 'another-service' }), /"aud"/],
        ['signature', jwt({ tenant: 'edge-co' }, { secret: 'not-the-right-secret-0123456789abcdef' }), /signature/],
        ['tenant', jwt({ sub: 'x' }), /tenant/],
      ];
      for (const [what, p, msg] of cases) {
        const tok = await p;
        const l = await post(`${gw.url}/generate`, { inputs: 'Hello' }, tok);
        assert.equal(l.status, 401, what);
        const lb = (await l.json()) as { error: string; error_type: string };
        assert.equal(lb.error_type, 'unauthorized');
        assert.match(lb.error, msg, what);
        const o = await post(`${gw.url}/v1/chat/completions`, { model: '', messages: [{ role: 'user', content: 'x' }] }, tok);
        assert.equal(o.status, 401);
        assert.equal(((await o.json()) as any).error.code, 'invalid_api_key');
      }
    });
  });

  describe('private adapters and isolation', () => {
    // What bob gets for a name, in every way a tenant can touch an adapter.
    const probe = async (key: string, name: string) => {
      const out: Array<[number, string]> = [];
      const call = async (r: Promise<Response>) => {
        const res = await r;
        out.push([res.status, await res.text()]);
      };
      await call(post(`${gw.url}/generate`, { inputs: 'Hello', parameters: { adapter_id: name, max_new_tokens: 2 } }, key));
      await call(post(`${gw.url}/generate_stream`, { inputs: 'Hello', parameters: { adapter_id: name, max_new_tokens: 2 } }, key));
      await call(post(`${gw.url}/`, { inputs: 'Hello', parameters: { merged_adapters: { ids: [name, 'r8-qv'] }, max_new_tokens: 2 } }, key));
      await call(post(`${gw.url}/v1/chat/completions`, { model: name, messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 }, key));
      await call(post(`${gw.url}/v1/completions`, { model: name, prompt: 'hi', max_tokens: 2, stream: true }, key));
      await call(fetch(`${gw.url}/v1/adapters/${name}`, { headers: { authorization: `Bearer ${key}` } }));
      await call(fetch(`${gw.url}/v1/adapters/${name}`, { method: 'DELETE', headers: { authorization: `Bearer ${key}` } }));
      return out;
    };

    it('another tenant gets exactly what it gets for an adapter that does not exist (use, probe)', async () => {
      await admin(gw, 'PUT', '/shared-adapters/r8-qv', { source: 'local', adapter_id: 'r8-qv' });
      const before = await probe(bob, 'secret-sauce');
      assert.ok(before.every(([s]) => s === 404), JSON.stringify(before));
      assert.deepEqual(JSON.parse(before[0]![1]), { error: 'adapter "secret-sauce" not found', error_type: 'adapter' });
      await uploadFixtureAdapter(gw, acme, 'r8-qv-b', 'secret-sauce');
      const afterUpload = await probe(bob, 'secret-sauce');
      assert.deepEqual(afterUpload, before);
      // The backend-side names do not help either.
      for (const name of ['tenants/acme/secret-sauce', '../tenants/acme/secret-sauce', 'acme/secret-sauce']) {
        const r = await post(`${gw.url}/generate`, { inputs: 'Hello', parameters: { adapter_id: name, adapter_source: 'local' } }, bob);
        assert.equal(r.status, 404, name);
        assert.deepEqual(await r.json(), { error: `adapter "${name}" not found`, error_type: 'adapter' });
      }
    });

    it('the owner uses it by its plain name, with the uploaded weights', async () => {
      const mine = await post(`${gw.url}/generate`, { inputs: 'The capital of France is', parameters: { adapter_id: 'secret-sauce', max_new_tokens: 8, details: true } }, acme);
      assert.equal(mine.status, 200);
      const body = (await mine.json()) as { generated_text: string; details: { tokens: Array<{ id: number }> } };
      // Same weights as the public fixture r8-qv-b served straight by the backend root.
      await admin(gw, 'PUT', '/shared-adapters/ref-b', { source: 'local', adapter_id: 'r8-qv-b' });
      const ref = await post(`${gw.url}/generate`, { inputs: 'The capital of France is', parameters: { adapter_id: 'ref-b', max_new_tokens: 8, details: true } }, bob);
      const refBody = (await ref.json()) as typeof body;
      assert.deepEqual(body.details.tokens.map((t) => t.id), refBody.details.tokens.map((t) => t.id));
      const base = await post(`${gw.url}/generate`, { inputs: 'The capital of France is', parameters: { max_new_tokens: 8, details: true } }, acme);
      assert.notDeepEqual(((await base.json()) as typeof body).details.tokens.map((t) => t.id), body.details.tokens.map((t) => t.id));
      // OpenAI: `model` is the plain name, in the answer as in the request.
      const chat = await post(`${gw.url}/v1/chat/completions`, { model: 'secret-sauce', messages: [{ role: 'user', content: 'hi' }], max_tokens: 3, stream: true }, acme);
      const events = sseData(await chat.text());
      assert.equal(events.at(-1), '[DONE]');
      assert.ok(events.slice(0, -1).every((e) => JSON.parse(e).model === 'secret-sauce'));
      assert.ok(events.every((e) => !e.includes('tenants/')));
    });

    it('lists: each tenant sees the base model, its own adapters and shared ones, never another\'s', async () => {
      const models = async (key: string) => ((await (await fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } })).json()) as { data: Array<{ id: string; owned_by: string }> }).data;
      const a = await models(acme);
      const b = await models(bob);
      assert.equal(a[0]!.id, 'llama');
      assert.ok(a.some((m) => m.id === 'secret-sauce' && m.owned_by === 'acme'));
      assert.ok(a.some((m) => m.id === 'r8-qv') && b.some((m) => m.id === 'r8-qv'));
      assert.ok(!b.some((m) => m.id === 'secret-sauce'));
      assert.ok(!JSON.stringify(b).includes('tenants/') && !JSON.stringify(a).includes('tenants/'));
      const bobAdapters = await (await fetch(`${gw.url}/v1/adapters`, { headers: { authorization: `Bearer ${bob}` } })).json();
      assert.deepEqual(bobAdapters, { object: 'list', data: [] });
      // Bob may have his own "secret-sauce": a separate namespace, acme's is untouched.
      await uploadFixtureAdapter(gw, bob, 'r8-qv', 'secret-sauce');
      const bobs = await post(`${gw.url}/generate`, { inputs: 'Hello', parameters: { adapter_id: 'secret-sauce', max_new_tokens: 2 } }, bob);
      assert.equal(bobs.status, 200);
      assert.equal((await admin(gw, 'GET', '/tenants/acme/adapters/secret-sauce')).json.name, 'secret-sauce');
      const del = await fetch(`${gw.url}/v1/adapters/secret-sauce`, { method: 'DELETE', headers: { authorization: `Bearer ${bob}` } });
      assert.equal(del.status, 200);
      const stillAcme = await post(`${gw.url}/generate`, { inputs: 'Hello', parameters: { adapter_id: 'secret-sauce', max_new_tokens: 2 } }, acme);
      assert.equal(stillAcme.status, 200);
    });

    it('hub adapters: the tenant\'s hub token goes with its adapter only', async () => {
      const reg = await post(`${gw.url}/v1/adapters`, { name: 'from-hub', repo: 'acme-org/private-lora', token: 'hf_acme_private_token' }, acme);
      assert.equal(reg.status, 201);
      const regBody = (await reg.json()) as Record<string, unknown>;
      assert.equal(regBody.has_token, true);
      assert.equal(JSON.stringify(regBody).includes('hf_acme'), false);
      const ok = await post(`${gw.url}/generate`, { inputs: 'Hello', parameters: { adapter_id: 'from-hub', max_new_tokens: 3 } }, acme);
      assert.equal(ok.status, 200, await ok.clone().text());
      // Bob can neither use the name nor reach the repo directly (nor pass a token of his own).
      const byName = await post(`${gw.url}/generate`, { inputs: 'Hello', parameters: { adapter_id: 'from-hub' } }, bob);
      assert.equal(byName.status, 404);
      const byRepo = await post(`${gw.url}/generate`, { inputs: 'Hello', parameters: { adapter_id: 'acme-org/private-lora', adapter_source: 'hub', api_token: 'hf_acme_private_token' } }, bob);
      assert.equal(byRepo.status, 404);
      assert.deepEqual(await byRepo.json(), { error: 'adapter "acme-org/private-lora" not found', error_type: 'adapter' });
    });

    it('uploads are validated; a half-uploaded adapter is not usable yet', async () => {
      const bad = await fetch(`${gw.url}/v1/adapters/bad name/adapter_config.json`, { method: 'PUT', headers: { authorization: `Bearer ${acme}` }, body: '{}' });
      assert.equal(bad.status, 400);
      const file = await fetch(`${gw.url}/v1/adapters/half/model.bin`, { method: 'PUT', headers: { authorization: `Bearer ${acme}` }, body: 'x' });
      assert.equal(file.status, 400);
      const cfg = await fetch(`${gw.url}/v1/adapters/half/adapter_config.json`, { method: 'PUT', headers: { authorization: `Bearer ${acme}` }, body: '{"peft_type":"LORA","r":8}' });
      assert.equal(cfg.status, 200);
      assert.equal(((await cfg.json()) as any).status, 'pending');
      const use = await post(`${gw.url}/v1/chat/completions`, { model: 'half', messages: [{ role: 'user', content: 'x' }] }, acme);
      assert.equal(use.status, 409);
    });
  });

  describe('validation (nothing malformed reaches the backend)', () => {
    it('malformed requests get 4xx in each API\'s shape, before the backend', async () => {
      const seen = await requestsSeen(be);
      const raw = (path: string, body: string) => fetch(`${gw.url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${acme}`, 'content-type': 'application/json' }, body });
      let r = await raw('/generate', '{"inputs": "x"');
      assert.equal(r.status, 400);
      assert.match(((await r.json()) as any).error, /not valid JSON/);
      r = await raw('/v1/chat/completions', '[1,2]');
      assert.equal(r.status, 400);
      assert.equal(((await r.json()) as any).error.type, 'invalid_request_error');
      r = await post(`${gw.url}/generate`, { parameters: { temperature: -1 } }, acme);
      assert.equal(r.status, 422);
      assert.deepEqual(await r.json(), { error: 'Input validation error: inputs: is required; parameters.temperature: must be non-negative', error_type: 'validation' });
      r = await post(`${gw.url}/generate_stream`, { inputs: 'x', parameters: { best_of: 2, do_sample: true } }, acme);
      assert.equal(r.status, 422);
      r = await post(`${gw.url}/v1/chat/completions`, { model: '', messages: [{ role: 'robot', content: 'x' }] }, acme);
      assert.equal(r.status, 400);
      const e = ((await r.json()) as any).error;
      assert.equal(e.param, 'messages[0].role');
      assert.equal(e.code, 'invalid_value');
      r = await post(`${gw.url}/v1/completions`, { model: '', prompt: 'x', max_tokens: 'ten' }, acme);
      assert.equal(r.status, 400);
      assert.equal(((await r.json()) as any).error.param, 'max_tokens');
      const big = 'x'.repeat(1024 * 1024 + 1);
      r = await post(`${gw.url}/generate`, { inputs: big }, acme);
      assert.equal(r.status, 413);
      assert.equal(((await r.json()) as any).error_type, 'validation');
      assert.equal(await requestsSeen(be), seen, 'the backend saw none of them');
    });

    it('response_format: invalid, remote-ref or oversized JSON Schemas are refused at the gateway', async () => {
      const seen = await requestsSeen(be);
      let r = await post(`${gw.url}/generate`, { inputs: 'x', parameters: { response_format: { type: 'json_object', schema: { type: 'object', properties: { a: { type: 'strnig' } } } } } }, acme);
      assert.equal(r.status, 422);
      const l = (await r.json()) as { error: string; error_type: string };
      assert.equal(l.error_type, 'validation');
      assert.match(l.error, /^Input validation error: parameters\.response_format\.schema: is not a valid JSON Schema: at #\/properties\/a\/type/);
      r = await post(`${gw.url}/v1/chat/completions`, { model: '', messages: [{ role: 'user', content: 'x' }], response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { $ref: 'http://169.254.169.254/latest' } } } }, acme);
      assert.equal(r.status, 400);
      const o = ((await r.json()) as any).error;
      assert.equal(o.param, 'response_format.json_schema.schema');
      assert.match(o.message, /only local references/);
      let deep: Record<string, unknown> = { type: 'string' };
      for (let i = 0; i < 50; i++) deep = { type: 'array', items: deep };
      r = await post(`${gw.url}/v1/chat/completions`, { model: '', messages: [{ role: 'user', content: 'x' }], response_format: { type: 'json_schema', json_schema: { name: 'deep', schema: deep } } }, acme);
      assert.equal(r.status, 400);
      assert.match(((await r.json()) as any).error.message, /nested too deeply/);
      r = await post(`${gw.url}/v1/chat/completions`, { model: '', messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', required: 'a' } } }] }, acme);
      assert.equal(r.status, 400);
      assert.equal(((await r.json()) as any).error.param, 'tools[0].function.parameters');
      assert.equal(await requestsSeen(be), seen);
      // A valid schema goes through to the backend (which decides whether it can honour it).
      r = await post(`${gw.url}/generate`, { inputs: 'x', parameters: { max_new_tokens: 2, response_format: { type: 'json_object', schema: { type: 'object', properties: { a: { type: 'string' } } } } } }, acme);
      assert.notEqual(r.status, 401);
      assert.ok(r.status === 200 || r.status === 422, String(r.status));
    });
  });

  describe('token counting', () => {
    it('LoRAX: details are asked for and trimmed unless requested; usage matches the backend\'s counts', async () => {
      const k = await issueKey(gw, 'counting');
      const plain = await post(`${gw.url}/generate`, { inputs: 'Hello there', parameters: { max_new_tokens: 6 } }, k);
      const pb = (await plain.json()) as Record<string, unknown>;
      assert.deepEqual(Object.keys(pb), ['generated_text']);
      const det = await post(`${gw.url}/generate`, { inputs: 'Hello there', parameters: { max_new_tokens: 6, details: true } }, k);
      const db = (await det.json()) as { details: { prompt_tokens: number; generated_tokens: number } };
      const compat = await post(`${gw.url}/`, { inputs: 'Hello there', parameters: { max_new_tokens: 6 } }, k);
      const cb = (await compat.json()) as unknown[];
      assert.ok(Array.isArray(cb) && cb.length === 1 && !('details' in (cb[0] as object)));
      const stream = await post(`${gw.url}/generate_stream`, { inputs: 'Hello there', parameters: { max_new_tokens: 6 } }, k);
      const events = sseData(await stream.text()).map((e) => JSON.parse(e));
      assert.equal(events.at(-1).details, null);
      const chat = await post(`${gw.url}/v1/chat/completions`, { model: '', messages: [{ role: 'user', content: 'Hello there' }], max_tokens: 4 }, k);
      const usage = ((await chat.json()) as { usage: { prompt_tokens: number; completion_tokens: number } }).usage;
      const chatStream = await post(`${gw.url}/v1/chat/completions`, { model: '', messages: [{ role: 'user', content: 'Hello there' }], max_tokens: 4, stream: true, stream_options: { include_usage: true } }, k);
      const cev = sseData(await chatStream.text());
      const usageChunk = JSON.parse(cev.at(-2)!) as { choices: unknown[]; usage: { prompt_tokens: number; completion_tokens: number } };
      assert.deepEqual(usageChunk.choices, []);
      await new Promise((r) => setTimeout(r, 100));
      const report = (await admin(gw, 'GET', '/tenants/counting/usage?days=2')).json;
      const per = db.details.prompt_tokens + db.details.generated_tokens;
      assert.equal(report.total.requests, 6);
      assert.equal(report.total.prompt_tokens, 4 * db.details.prompt_tokens + usage.prompt_tokens + usageChunk.usage.prompt_tokens);
      assert.equal(report.total.total_tokens, 4 * per + usage.prompt_tokens + usage.completion_tokens + usageChunk.usage.prompt_tokens + usageChunk.usage.completion_tokens);
      assert.equal(report.days[0].total_tokens, report.total.total_tokens);
      assert.equal(report.keys.length, 1);
    });
  });

  describe('other routes', () => {
    it('/tokenize, /info and /health through the gateway', async () => {
      const t = await post(`${gw.url}/tokenize`, { inputs: 'Hello world' }, acme);
      assert.equal(t.status, 200);
      assert.ok(Array.isArray(await t.json()));
      assert.equal((await post(`${gw.url}/tokenize`, { input: 'x' }, acme)).status, 422);
      const info = await fetch(`${gw.url}/info`, { headers: { authorization: `Bearer ${acme}` } });
      assert.equal(((await info.json()) as { max_total_tokens: number }).max_total_tokens, 512);
      assert.equal((await fetch(`${gw.url}/info`)).status, 401);
      const health = await fetch(`${gw.url}/health`);
      assert.equal(health.status, 200);
      assert.deepEqual(await health.json(), { status: 'ok', backends: { healthy: 1, total: 1 }, store: { kind: 'redis', ok: true } });
      const nf = await fetch(`${gw.url}/v1/nothing`, { headers: { authorization: `Bearer ${acme}` } });
      assert.equal(nf.status, 404);
      assert.equal(((await nf.json()) as any).error.type, 'not_found_error');
    });

    it('the official OpenAI client works against the gateway, with a tenant adapter', async () => {
      const client = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: acme, maxRetries: 0 });
      const list = await client.models.list();
      assert.ok(list.data.some((m) => m.id === 'secret-sauce'));
      const chat = await client.chat.completions.create({ model: 'secret-sauce', messages: [{ role: 'user', content: 'Say hi' }], max_tokens: 5, temperature: 0 });
      assert.equal(chat.model, 'secret-sauce');
      assert.ok(chat.usage!.completion_tokens >= 1);
      const stream = await client.completions.create({ model: 'r8-qv', prompt: 'Once upon', max_tokens: 5, stream: true });
      let text = '';
      for await (const c of stream) text += c.choices[0]?.text ?? '';
      assert.ok(text.length > 0);
      await assert.rejects(client.chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'x' }] }), (err: unknown) => err instanceof OpenAI.NotFoundError);
      const bad = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'sk-sb-wrong', maxRetries: 0 });
      await assert.rejects(bad.models.list(), (err: unknown) => err instanceof OpenAI.AuthenticationError);
    });
  });
});
