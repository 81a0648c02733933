// Tenant isolation at the backend, attacked directly with genuine gateway service tokens (issue 14,
// issue 15): every spelling of another tenant's adapter, absolute paths, hub tokens bound to their
// repos (a hub-shaped server records which token came with which repo), catastrophic regexes in an
// adapter config (timed against another tenant's request), nesting depth, oversized chunked
// bodies, and uploads racing deletes.
import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SignJWT } from 'jose';
import { postJson, startBackend, type TestServer } from '../helpers/backend.ts';
import { startHub, type HubServer } from '../helpers/hub-server.ts';
import { chunked } from '../helpers/raw-http.ts';

const FIXTURES = new URL('../fixtures', import.meta.url).pathname;
const adapterDir = (name: string) => join(FIXTURES, 'adapters', 'llama', name);
const SECRET = 'isolation-test-service-key-0123456789abcdef';

const token = (tenant: string, scope?: string) => {
  const jwt = new SignJWT({ tenant, ...(scope ? { scope } : {}) }).setProtectedHeader({ alg: 'HS256' }).setIssuer('switchboard-gateway').setAudience('switchboard-backend').setIssuedAt().setExpirationTime('60s');
  return jwt.sign(new TextEncoder().encode(SECRET));
};
const as = async (tenant: string, scope?: string) => ({ authorization: `Bearer ${await token(tenant, scope)}` });

describe('backend tenant isolation under attack', () => {
  let root: string;
  let cache: string;
  let hub: HubServer;
  let srv: TestServer;
  const OPERATOR = 'hf_operator_token';
  const DEFAULT = 'hf_server_wide_token';
  const VICTIM = 'hf_victim_token';

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'sb-isolation-'));
    cache = await mkdtemp(join(tmpdir(), 'sb-isolation-cache-'));
    await cp(adapterDir('r8-qv'), join(root, 'tenants', 'acme', 'secret'), { recursive: true });
    await cp(adapterDir('r8-qv'), join(root, 'public', 'shared'), { recursive: true });
    // A config whose patterns backtrack catastrophically in a backtracking engine (V8's RegExp
    // needed minutes for these on one module name).
    await cp(adapterDir('r8-qv'), join(root, 'tenants', 'acme', 'redos'), { recursive: true });
    const cfg = JSON.parse(await readFile(join(adapterDir('r8-qv'), 'adapter_config.json'), 'utf-8'));
    await writeFile(
      join(root, 'tenants', 'acme', 'redos', 'adapter_config.json'),
      JSON.stringify({ ...cfg, target_modules: '(.*)*x', rank_pattern: { '(a+)+$': 4, '(.*a){20}': 4 } }),
    );
    hub = await startHub({
      'shared-org/gated': { dir: adapterDir('r8-qv'), token: OPERATOR },
      'victim/private': { dir: adapterDir('r8-qv-b'), token: VICTIM },
    });
    srv = await startBackend([
      '--adapter-source', 'local', '--adapter-root', root, '--service-key', SECRET,
      '--hub-endpoint', hub.endpoint, '--adapter-cache-dir', cache, '--hub-token', DEFAULT,
    ]);
  });
  after(async () => {
    await srv?.close();
    await hub?.close();
    await rm(root, { recursive: true, force: true });
    await rm(cache, { recursive: true, force: true });
  });

  const generate = async (tenant: string, parameters: Record<string, unknown>) => postJson(`${srv.url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 2, ...parameters } }, await as(tenant));

  it("no spelling of another tenant's adapter loads it: each answers exactly like a missing adapter", async () => {
    const own = await generate('acme', { adapter_id: 'tenants/acme/secret' });
    assert.equal(own.status, 200, await own.clone().text());
    const spellings = [
      './tenants/acme/secret', 'tenants//acme/secret', 'tenants/globex/../acme/secret', 'tenants/acme/./secret', 'tenants/acme/secret/',
      `${root}/tenants/acme/secret`, `${root}//tenants/acme/secret`, 'tenants\\acme\\secret', 'tenants/acme%2Fsecret', 'tenants%2Facme%2Fsecret',
      'Tenants/acme/secret', 'TENANTS/acme/secret', 'tenants/acme/secret\u0000', ' tenants/acme/secret', 'tenants/ac\u0435me/secret',
      '\uff54enants/acme/secret', 'tenants/acme/secret/..', `../${root.split('/').pop()}/tenants/acme/secret`, 'tenants/acme', 'tenants',
      'public/../tenants/acme/secret', 'tenants/acme/secret/adapter_config.json',
    ];
    for (const id of spellings) {
      const missing = { error: `adapter "${id}" not found`, error_type: 'adapter' };
      const lorax = await generate('globex', { adapter_id: id, adapter_source: 'local' });
      assert.equal(lorax.status, 404, `${JSON.stringify(id)}: ${await lorax.clone().text()}`);
      assert.deepEqual(await lorax.json(), missing, JSON.stringify(id));
      const merged = await generate('globex', { merged_adapters: { ids: ['public/shared', id] }, adapter_source: 'local' });
      assert.equal(merged.status, 404, JSON.stringify(id));
      assert.deepEqual(await merged.json(), missing);
      const openai = await postJson(`${srv.url}/v1/completions`, { model: id, prompt: 'x', max_tokens: 1, adapter_source: 'local' }, await as('globex'));
      assert.equal(openai.status, 404, JSON.stringify(id));
      const o = ((await openai.json()) as { error: { message: string } }).error;
      assert.equal(o.message, missing.error);
      // The owner gets the same answer for a non-canonical spelling: only the canonical id is an adapter.
      if (id !== 'tenants/acme' && id !== 'tenants') assert.equal((await generate('acme', { adapter_id: id, adapter_source: 'local' })).status, 404, JSON.stringify(id));
    }
    // A missing adapter, for comparison: the same shape and words.
    const none = await generate('globex', { adapter_id: 'tenants/globex/nothing', adapter_source: 'local' });
    assert.deepEqual(await none.json(), { error: 'adapter "tenants/globex/nothing" not found', error_type: 'adapter' });
  });

  it('absolute adapter ids are refused without --allow-absolute-adapter-paths, in the words of a missing adapter', async () => {
    for (const id of ['/etc', '/etc/passwd', adapterDir('r8-qv'), `${root}/public/shared`]) {
      const r = await generate('globex', { adapter_id: id, adapter_source: 'local' });
      assert.equal(r.status, 404, id);
      assert.deepEqual(await r.json(), { error: `adapter "${id}" not found`, error_type: 'adapter' });
    }
    assert.equal((await generate('globex', { adapter_id: 'public/shared', adapter_source: 'local' })).status, 200);
  });

  it("a merge never sends one adapter's hub token to another adapter's repo", async () => {
    hub.calls.length = 0;
    // The operator's token for its shared repo, beside a reference to a private repo the caller cannot read.
    const r = await generate('globex', { adapter_source: 'hub', merged_adapters: { ids: ['shared-org/gated', 'victim/private'], api_tokens: [OPERATOR, null] } });
    assert.equal(r.status, 403, await r.clone().text());
    assert.match(((await r.json()) as { error: string }).error, /the hub refused access to adapter "victim\/private"/);
    const victimCalls = hub.calls.filter((c) => c.repo === 'victim/private');
    assert.ok(victimCalls.length > 0);
    assert.deepEqual(victimCalls.map((c) => c.token), victimCalls.map(() => null), 'no token went to victim/private');
    assert.ok(hub.calls.some((c) => c.repo === 'shared-org/gated' && c.token === OPERATOR));
    // With its own token for its own repo the merge works, each token going to its own repo only.
    hub.calls.length = 0;
    const ok = await generate('globex', { adapter_source: 'hub', merged_adapters: { ids: ['shared-org/gated', 'victim/private'], api_tokens: [OPERATOR, VICTIM] } });
    assert.equal(ok.status, 200, await ok.clone().text());
    for (const c of hub.calls) assert.equal(c.token, c.repo === 'victim/private' ? VICTIM : OPERATOR, JSON.stringify(c));
  });

  it("the server-wide --hub-token is not sent for a token-less reference unless the operator opts in", async () => {
    hub.calls.length = 0;
    const r = await generate('globex', { adapter_source: 'hub', adapter_id: 'victim/private' });
    assert.equal(r.status, 403);
    assert.ok(hub.calls.every((c) => c.token === null), JSON.stringify(hub.calls));
  });

  it("another tenant's requests are not delayed by an adapter config with catastrophic regexes", async () => {
    const t0 = performance.now();
    const slow = generate('acme', { adapter_id: 'tenants/acme/redos' });
    await new Promise((r) => setTimeout(r, 5));
    const other = await generate('globex', {});
    const otherMs = performance.now() - t0;
    assert.equal(other.status, 200);
    const s = await slow;
    assert.equal(s.status, 200, await s.clone().text());
    assert.ok(otherMs < 1000, `the other tenant waited ${otherMs.toFixed(0)} ms`);
    assert.ok(performance.now() - t0 < 5000);
  });

  it('10,000- and 100,000-level nested JSON gets a 400 in the API shape, not a stack overflow', async () => {
    for (const n of [10_000, 100_000]) {
      const deep = `${'['.repeat(n)}${']'.repeat(n)}`;
      const lorax = await fetch(`${srv.url}/generate`, { method: 'POST', headers: { ...(await as('globex')), 'content-type': 'application/json' }, body: `{"inputs":"x","parameters":{"stop":${deep}}}` });
      assert.equal(lorax.status, 400);
      assert.deepEqual(await lorax.json(), { error: 'request body nests objects/arrays more than 100 levels deep', error_type: 'validation' });
      const openai = await fetch(`${srv.url}/v1/chat/completions`, { method: 'POST', headers: { ...(await as('globex')), 'content-type': 'application/json' }, body: `{"model":"llama","messages":${deep}}` });
      assert.equal(openai.status, 400);
      assert.match(((await openai.json()) as { error: { message: string } }).error.message, /nests objects\/arrays more than 100 levels/);
    }
  });

  it('an oversized chunked body gets a 413 answer, not a reset connection', async () => {
    const r = await chunked(srv.url, '/generate', 'POST', await as('globex'), 80); // 5 MiB > 4 MiB
    assert.ok('status' in r, JSON.stringify(r));
    assert.equal(r.status, 413);
    assert.match(JSON.parse(r.body).error, /larger than 4194304 bytes/);
    // The next request (on a kept-alive connection, if any) is answered too, not hung up on.
    const next = await chunked(srv.url, '/generate', 'POST', await as('globex'), 1);
    assert.ok('status' in next, JSON.stringify(next));
    assert.equal(next.status, 400);
  });

  it('uploads: concurrent upload and delete of one adapter never 5xx; a config RE2 cannot run is refused naming the pattern', async () => {
    const w = await as('acme', 'adapters:write');
    const weights = await readFile(join(adapterDir('r8-qv'), 'adapter_model.safetensors'));
    const url = `${srv.url}/adapters/tenants/acme/racy`;
    for (let i = 0; i < 15; i++) {
      const [put, del] = await Promise.all([
        fetch(`${url}/adapter_model.safetensors`, { method: 'PUT', headers: w, body: weights }),
        fetch(url, { method: 'DELETE', headers: w }),
      ]);
      assert.equal(put.status, 200, await put.text());
      assert.equal(del.status, 200, await del.text());
    }
    const cfg = JSON.parse(await readFile(join(adapterDir('r8-qv'), 'adapter_config.json'), 'utf-8'));
    for (const [bad, pattern] of [[{ target_modules: '(q|v)_proj\\1' }, '(q|v)_proj\\\\1'], [{ rank_pattern: { '(?<=self_attn\\.)q_proj': 4 } }, '(?<=self_attn\\\\.)q_proj']] as const) {
      const r = await fetch(`${url}/adapter_config.json`, { method: 'PUT', headers: w, body: JSON.stringify({ ...cfg, ...bad }) });
      assert.equal(r.status, 422);
      const e = ((await r.json()) as { error: string }).error;
      assert.ok(e.includes(pattern) && /is not a regular expression Switchboard can match/.test(e), e);
    }
  });

  it('uploads: a tenant gets 429 past its concurrent uploads; others are not affected', async () => {
    const w = await as('acme', 'adapters:write');
    // Four uploads held open (their bodies still coming), then a fifth.
    const hold = (i: number) => {
      const u = new URL(srv.url);
      let answered = false;
      const done = new Promise<number>((resolve, reject) => {
        const req = request({ host: u.hostname, port: u.port, method: 'PUT', path: `/adapters/tenants/acme/held-${i}/adapter_model.safetensors`, headers: { ...w, 'transfer-encoding': 'chunked' } }, (res) => {
          answered = true;
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
        req.write(Buffer.alloc(1024));
        held.push(() => req.end());
      });
      return { done, answered: () => answered };
    };
    const held: (() => void)[] = [];
    const open = [0, 1, 2, 3].map(hold);
    try {
      // Wait until all four are being read by the backend (each has sent its first chunk).
      for (let i = 0; i < 50 && held.length < 4; i++) await new Promise((r) => setTimeout(r, 20));
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(open.map((h) => h.answered()), [false, false, false, false], 'four uploads in flight');
      const fifth = await fetch(`${srv.url}/adapters/tenants/acme/held-4/adapter_model.safetensors`, { method: 'PUT', headers: w, body: new Uint8Array(10) });
      assert.equal(fifth.status, 429);
      assert.match(((await fifth.json()) as { error: string }).error, /uploads in progress/);
      const other = await fetch(`${srv.url}/adapters/tenants/globex/x/adapter_model.safetensors`, { method: 'PUT', headers: await as('globex', 'adapters:write'), body: new Uint8Array(10) });
      assert.equal(other.status, 200);
    } finally {
      for (const end of held) end();
    }
    assert.deepEqual(await Promise.all(open.map((h) => h.done)), [200, 200, 200, 200]);
  });
});

describe('backend operator opt-ins', () => {
  let root: string;
  let cache: string;
  let hub: HubServer;
  let srv: TestServer;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'sb-optin-'));
    cache = await mkdtemp(join(tmpdir(), 'sb-optin-cache-'));
    await cp(adapterDir('r8-qv'), join(root, 'tenants', 'acme', 'secret'), { recursive: true });
    hub = await startHub({ 'operator/private': { dir: adapterDir('r8-qv'), token: 'hf_server_wide' } });
    srv = await startBackend([
      '--adapter-source', 'local', '--adapter-root', root, '--service-key', SECRET, '--hub-endpoint', hub.endpoint, '--adapter-cache-dir', cache,
      '--hub-token', 'hf_server_wide', '--allow-hub-token-fallback', '--allow-absolute-adapter-paths', '--max-uploads-per-tenant', '1',
    ]);
  });
  after(async () => {
    await srv?.close();
    await hub?.close();
    await rm(root, { recursive: true, force: true });
    await rm(cache, { recursive: true, force: true });
  });

  it('--allow-absolute-adapter-paths: absolute paths load, but never a path into the tenants directory', async () => {
    const h = await as('globex');
    const ok = await postJson(`${srv.url}/generate`, { inputs: 'x', parameters: { max_new_tokens: 2, adapter_id: adapterDir('r8-qv'), adapter_source: 'local' } }, h);
    assert.equal(ok.status, 200, await ok.clone().text());
    for (const id of [`${root}/tenants/acme/secret`, '/etc', `${adapterDir('r8-qv')}/../r8-qv`]) {
      const r = await postJson(`${srv.url}/generate`, { inputs: 'x', parameters: { max_new_tokens: 2, adapter_id: id, adapter_source: 'local' } }, h);
      assert.equal(r.status, 404, id);
      assert.deepEqual(await r.json(), { error: `adapter "${id}" not found`, error_type: 'adapter' });
    }
  });

  it('--max-uploads-per-tenant 1: a second upload of the tenant gets 429 while one is in flight', async () => {
    const w = await as('acme', 'adapters:write');
    const u = new URL(srv.url);
    let end!: () => void;
    let answered = false;
    const first = new Promise<number>((resolve, reject) => {
      const req = request({ host: u.hostname, port: u.port, method: 'PUT', path: '/adapters/tenants/acme/held/adapter_model.safetensors', headers: { ...w, 'transfer-encoding': 'chunked' } }, (res) => {
        answered = true;
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.write(Buffer.alloc(1024));
      end = () => req.end();
    });
    try {
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(answered, false, 'the first upload is in flight');
      const second = await fetch(`${srv.url}/adapters/tenants/acme/other/adapter_model.safetensors`, { method: 'PUT', headers: w, body: new Uint8Array(10) });
      assert.equal(second.status, 429);
      assert.match(((await second.json()) as { error: string }).error, /already has 1 uploads in progress/);
    } finally {
      end();
    }
    assert.equal(await first, 200);
    const again = await fetch(`${srv.url}/adapters/tenants/acme/other/adapter_model.safetensors`, { method: 'PUT', headers: w, body: new Uint8Array(10) });
    assert.equal(again.status, 200, 'the slot is free again');
  });

  it('--allow-hub-token-fallback: a token-less hub reference is fetched with the server-wide token', async () => {
    const r = await postJson(`${srv.url}/generate`, { inputs: 'x', parameters: { max_new_tokens: 2, adapter_id: 'operator/private', adapter_source: 'hub' } }, await as('globex'));
    assert.equal(r.status, 200, await r.clone().text());
    assert.ok(hub.calls.every((c) => c.token === 'hf_server_wide'));
  });
});
