// Tenant isolation through the gateway, as a hostile tenant would probe it (issue 14): hub tokens
// bound to their repos (a hub-shaped server records which token came with which repo), the admin
// API never registering a tenant's path as "shared", every spelling of another tenant's adapter,
// catastrophic regexes in an uploaded config timed against another tenant's request, nesting
// depth, oversized chunked bodies, odd methods, and uploads racing deletes or piling up.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { RunningGateway } from '../../gateway/node.ts';
import { startHub, type HubServer } from '../helpers/hub-server.ts';
import { chunked } from '../helpers/raw-http.ts';
import { ADAPTERS_DIR, admin, issueKey, makeAdapterRoot, post, startBackend, startTestGateway, uploadFixtureAdapter, type Backend } from './helpers/stack.ts';

describe('gateway e2e: tenant isolation under attack', () => {
  let root: Awaited<ReturnType<typeof makeAdapterRoot>>;
  let hub: HubServer;
  let cacheDir: string;
  let be: Backend;
  let gw: RunningGateway;
  let acme: string;
  let bob: string;
  const logs: string[] = [];
  const OPERATOR = 'hf_operator_shared_token';
  const VICTIM = 'hf_victim_token';

  before(async () => {
    root = await makeAdapterRoot();
    hub = await startHub({
      'shared-org/gated': { dir: join(ADAPTERS_DIR, 'r8-qv'), token: OPERATOR },
      'victim/private': { dir: join(ADAPTERS_DIR, 'r8-qv-b'), token: VICTIM },
    });
    cacheDir = await mkdtemp(join(tmpdir(), 'sb-gw-iso-cache-'));
    be = await startBackend(root.dir, ['--hub-endpoint', hub.endpoint, '--adapter-cache-dir', cacheDir]);
    gw = await startTestGateway({ backends: [be.url], log: (m) => logs.push(m), options: { maxAdapterBytes: 1024 * 1024 } });
    acme = await issueKey(gw, 'acme');
    bob = await issueKey(gw, 'bob');
    await uploadFixtureAdapter(gw, acme, 'r8-qv', 'secret');
  });
  after(async () => {
    await gw?.close();
    await be?.close();
    await hub?.close();
    await root?.cleanup();
    await rm(cacheDir, { recursive: true, force: true });
  });

  it("a merge with a shared adapter never sends its operator token to the tenant's other repo", async () => {
    assert.equal((await admin(gw, 'PUT', '/shared-adapters/gated', { source: 'hub', adapter_id: 'shared-org/gated', api_token: OPERATOR })).status, 201);
    assert.equal((await post(`${gw.url}/v1/adapters`, { name: 'stolen', repo: 'victim/private' }, bob)).status, 201);
    hub.calls.length = 0;
    logs.length = 0;
    const r = await post(`${gw.url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 2, merged_adapters: { ids: ['gated', 'stolen'] } } }, bob);
    // The tenant's own reference is refused by the hub: a 4xx naming the adapter by the tenant's name.
    assert.equal(r.status, 403, await r.clone().text());
    const msg = ((await r.json()) as { error: string }).error;
    assert.match(msg, /the hub refused access to adapter "stolen"/);
    assert.ok(!msg.includes('victim/private'));
    const toVictim = hub.calls.filter((c) => c.repo === 'victim/private');
    assert.ok(toVictim.length > 0);
    assert.ok(toVictim.every((c) => c.token === null), JSON.stringify(toVictim));
    // The operator's log says nothing false about the gateway's service key.
    assert.ok(!logs.some((l) => /service (token|key)/.test(l)), logs.join('\n'));
    // With a token of its own for its repo, the merge works, each token going to its own repo.
    assert.equal((await post(`${gw.url}/v1/adapters`, { name: 'owned', repo: 'victim/private', token: VICTIM }, bob)).status, 201);
    hub.calls.length = 0;
    const ok = await post(`${gw.url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 2, merged_adapters: { ids: ['gated', 'owned'] } } }, bob);
    assert.equal(ok.status, 200, await ok.clone().text());
    for (const c of hub.calls) assert.equal(c.token, c.repo === 'victim/private' ? VICTIM : OPERATOR, JSON.stringify(c));
    // A client-sent api_tokens is never forwarded as such.
    hub.calls.length = 0;
    const forged = await post(`${gw.url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 2, merged_adapters: { ids: ['gated', 'stolen'], api_tokens: [OPERATOR, OPERATOR] } } }, bob);
    assert.equal(forged.status, 403);
    assert.ok(hub.calls.filter((c) => c.repo === 'victim/private').every((c) => c.token === null));
  });

  it('the admin API refuses any spelling of a tenant path as a shared adapter', async () => {
    for (const id of ['tenants/acme/secret', './tenants/acme/secret', 'tenants//acme/secret', 'r8-qv/../tenants/acme/secret', 'Tenants/acme/secret', 'tenants/acme/secret/', '/tmp/x', 'tenants\\acme\\secret', 'tenants%2Facme%2Fsecret', '.', 'a/./b']) {
      const r = await admin(gw, 'PUT', '/shared-adapters/leak', { source: 'local', adapter_id: id });
      assert.equal(r.status, 400, `${id}: ${JSON.stringify(r.json)}`);
      assert.equal(r.json.error.param, 'adapter_id');
    }
    assert.equal((await admin(gw, 'GET', '/shared-adapters')).json.data.some((s: { name: string }) => s.name === 'leak'), false);
    assert.equal((await admin(gw, 'PUT', '/shared-adapters/public-qv', { source: 'local', adapter_id: 'r8-qv' })).status, 201);
  });

  it("no spelling of another tenant's adapter reaches it: each answers like a missing adapter", async () => {
    assert.equal((await post(`${gw.url}/generate`, { inputs: 'Hello', parameters: { adapter_id: 'secret', max_new_tokens: 2 } }, acme)).status, 200);
    const spellings = ['secret', 'tenants/acme/secret', './tenants/acme/secret', 'tenants//acme/secret', 'tenants/bob/../acme/secret', `${root.dir}/tenants/acme/secret`, 'acme/secret', 'tenants\\acme\\secret', 'tenants%2Facme%2Fsecret', 'SECRET', 'secret/'];
    for (const name of spellings) {
      for (const source of [undefined, 'local', 'hub']) {
        const r = await post(`${gw.url}/generate`, { inputs: 'Hello', parameters: { adapter_id: name, ...(source ? { adapter_source: source } : {}) } }, bob);
        assert.equal(r.status, 404, `${name} ${source}`);
        assert.equal(await r.text(), JSON.stringify({ error: `adapter "${name}" not found`, error_type: 'adapter' }));
      }
      const m = await post(`${gw.url}/generate`, { inputs: 'Hello', parameters: { merged_adapters: { ids: ['public-qv', name] } } }, bob);
      assert.equal(m.status, 404, name);
      const o = await post(`${gw.url}/v1/completions`, { model: name, prompt: 'x', max_tokens: 1 }, bob);
      assert.equal(o.status, 404, name);
      assert.equal(((await o.json()) as { error: { message: string } }).error.message, `adapter "${name}" not found`);
    }
  });

  it("an uploaded config with catastrophic regexes does not delay another tenant's request", async () => {
    const cfg = JSON.parse(await readFile(join(ADAPTERS_DIR, 'r8-qv', 'adapter_config.json'), 'utf-8'));
    const put = (name: string, file: string, body: BodyInit) =>
      fetch(`${gw.url}/v1/adapters/${name}/${file}`, { method: 'PUT', headers: { authorization: `Bearer ${acme}` }, body });
    assert.equal((await put('redos', 'adapter_config.json', JSON.stringify({ ...cfg, target_modules: '(.*)*x', exclude_modules: '(a+)+$' }))).status, 200);
    assert.equal((await put('redos', 'adapter_model.safetensors', new Uint8Array(await readFile(join(ADAPTERS_DIR, 'r8-qv', 'adapter_model.safetensors'))))).status, 200);
    const t0 = performance.now();
    const slow = post(`${gw.url}/generate`, { inputs: 'Hello', parameters: { adapter_id: 'redos', max_new_tokens: 2 } }, acme);
    await new Promise((r) => setTimeout(r, 5));
    const other = await post(`${gw.url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 2 } }, bob);
    const ms = performance.now() - t0;
    assert.equal(other.status, 200);
    assert.ok(ms < 1000, `the other tenant waited ${ms.toFixed(0)} ms`);
    assert.equal((await slow).status, 200);
    // A pattern RE2 cannot run (a backreference) is refused at upload, naming it.
    const bad = await put('backref', 'adapter_config.json', JSON.stringify({ ...cfg, target_modules: '(q)_proj\\1' }));
    assert.equal(bad.status, 422, await bad.clone().text());
    assert.match(((await bad.json()) as { error: { message: string } }).error.message, /target_modules "\(q\)_proj\\\\1" is not a regular expression Switchboard can match/);
  });

  it('10,000- and 100,000-level nested JSON gets a 400 in each API shape', async () => {
    for (const n of [10_000, 100_000]) {
      const deep = `${'['.repeat(n)}${']'.repeat(n)}`;
      const l = await post(`${gw.url}/generate`, `{"inputs":"x","parameters":{"stop":${deep}}}`, bob);
      assert.equal(l.status, 400);
      assert.deepEqual(await l.json(), { error: 'request body nests objects/arrays more than 100 levels deep', error_type: 'validation' });
      const o = await post(`${gw.url}/v1/chat/completions`, `{"model":"llama","messages":${deep}}`, bob);
      assert.equal(o.status, 400);
      assert.equal(((await o.json()) as { error: { message: string } }).error.message, 'request body nests objects/arrays more than 100 levels deep');
      const a = await post(`${gw.url}/v1/adapters`, `{"name":"x","repo":${deep}}`, bob);
      assert.equal(a.status, 400);
    }
  });

  it('an oversized chunked body gets a JSON 413, and a chunked body on an odd method a JSON 400', async () => {
    const big = await chunked(gw.url, '/generate', 'POST', { authorization: `Bearer ${bob}` }, 32); // 2 MiB > 1 MiB
    assert.ok('status' in big, JSON.stringify(big));
    assert.equal(big.status, 413);
    assert.match(JSON.parse(big.body).error, /larger than 1048576 bytes/);
    for (const path of ['/generate', '/v1/chat/completions']) {
      const odd = await chunked(gw.url, path, 'FROB', { authorization: `Bearer ${bob}` }, 32);
      assert.ok('status' in odd, JSON.stringify(odd));
      assert.equal(odd.status, 400);
      const j = JSON.parse(odd.body);
      assert.match(path.startsWith('/v1/') ? j.error.message : j.error, /malformed HTTP request/);
    }
    const huge = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const u = new URL(gw.url);
      const req = request({ host: u.hostname, port: u.port, method: 'GET', path: '/v1/models', headers: { authorization: `Bearer ${bob}`, 'x-pad': 'x'.repeat(64 * 1024) } }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(huge.status, 431);
    assert.equal(JSON.parse(huge.body).error.message, 'request headers are too large');
  });

  it('uploads: an oversized chunked upload gets a JSON 413, not a reset, and nothing lands', async () => {
    const r = await chunked(gw.url, '/v1/adapters/huge/adapter_model.safetensors', 'PUT', { authorization: `Bearer ${acme}` }, 32); // 2 MiB > 1 MiB
    assert.ok('status' in r, JSON.stringify(r));
    assert.equal(r.status, 413);
    assert.match(JSON.parse(r.body).error.message, /larger than 1048576 bytes/);
    assert.equal((await fetch(`${gw.url}/v1/adapters/huge`, { headers: { authorization: `Bearer ${acme}` } })).status, 404);
  });

  it('uploads: upload and delete of one adapter at once never 5xx; a tenant past its concurrent uploads gets 429', async () => {
    const weights = await readFile(join(ADAPTERS_DIR, 'r8-qv', 'adapter_model.safetensors'));
    for (let i = 0; i < 10; i++) {
      const [up, del] = await Promise.all([
        fetch(`${gw.url}/v1/adapters/racy/adapter_model.safetensors`, { method: 'PUT', headers: { authorization: `Bearer ${acme}` }, body: weights }),
        fetch(`${gw.url}/v1/adapters/racy`, { method: 'DELETE', headers: { authorization: `Bearer ${acme}` } }),
      ]);
      assert.equal(up.status, 200, await up.text());
      assert.ok(del.status === 200 || del.status === 404, `${del.status} ${await del.text()}`);
    }
    // Two uploads held open (bodies still streaming), then a third.
    const u = new URL(gw.url);
    const ends: (() => void)[] = [];
    const done = [0, 1].map(
      (i) =>
        new Promise<number>((resolve, reject) => {
          const req = request({ host: u.hostname, port: u.port, method: 'PUT', path: `/v1/adapters/held-${i}/adapter_model.safetensors`, headers: { authorization: `Bearer ${acme}`, 'transfer-encoding': 'chunked' } }, (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          });
          req.on('error', reject);
          req.write(weights.subarray(0, 1024));
          ends.push(() => req.end(weights.subarray(1024)));
        }),
    );
    try {
      await new Promise((r) => setTimeout(r, 300));
      const third = await fetch(`${gw.url}/v1/adapters/held-2/adapter_model.safetensors`, { method: 'PUT', headers: { authorization: `Bearer ${acme}` }, body: weights });
      assert.equal(third.status, 429, await third.clone().text());
      assert.equal(((await third.json()) as { error: { code: string } }).error.code, 'too_many_uploads');
      const others = await fetch(`${gw.url}/v1/adapters/x/adapter_model.safetensors`, { method: 'PUT', headers: { authorization: `Bearer ${bob}` }, body: weights });
      assert.equal(others.status, 200);
    } finally {
      for (const end of ends) end();
    }
    assert.deepEqual(await Promise.all(done), [200, 200]);
  });
});
