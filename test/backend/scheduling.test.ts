// The scheduler through real HTTP: heterogeneous batches, adapter exchange with few slots,
// preemption under a tiny KV cache, a slow adapter source that stalls nobody else, private hub
// adapters, client disconnects, backpressure, and gateway service tokens.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SignJWT } from 'jose';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { postJson, startBackend, type TestServer } from '../helpers/backend.ts';
import { startHub, type HubServer } from '../helpers/hub-server.ts';
import { openModelDir } from '../../native/model-dir.ts';
import { openPeftAdapter } from '../../native/peft-adapter.ts';
import { adapterBytes } from '../../backend/adapters/adapter-store.ts';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures');
const adapterDir = (name: string) => join(FIXTURES, 'adapters', 'llama', name);
const ADAPTERS = ['r8-qv', 'r16-all', 'r4-rslora-mlp', 'r8-patterns', 'merged-cat'];
const PROMPTS = ['The weather today', 'Numbers: 1, 2, 3', 'A story about a café', 'JSON: {"a": [1, 2]}', 'Hello'];

async function generateIds(url: string, inputs: string, adapter: string | null, maxNew = 10): Promise<number[]> {
  const res = await postJson(`${url}/generate`, { inputs, parameters: { max_new_tokens: maxNew, details: true, ...(adapter ? { adapter_id: adapterDir(adapter) } : {}) } });
  const text = await res.text();
  assert.equal(res.status, 200, text);
  return (JSON.parse(text) as { details: { tokens: { id: number }[] } }).details.tokens.map((t) => t.id);
}

const metric = async (url: string, name: string) => {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(name + ' ') || l.startsWith(name + '{'));
  return line ? Number(line.split(' ').at(-1)) : NaN;
};

describe('continuous batching over HTTP', () => {
  let srv: TestServer;
  const alone = new Map<string, number[]>();
  const jobs = PROMPTS.flatMap((p, i) => [null, ...ADAPTERS].map((a, j) => ({ p, a: (i + j) % 2 === 0 ? a : null })));
  before(async () => {
    srv = await startBackend(['--adapter-source', 'local', '--allow-absolute-adapter-paths', '--waiting-served-ratio', '0']);
    for (const j of jobs) alone.set(`${j.p}|${j.a}`, await generateIds(srv.url, j.p, j.a));
  });
  after(async () => {
    await srv.close();
  });

  it('gives concurrent mixed-adapter requests the same tokens as one at a time', async () => {
    const results = await Promise.all(jobs.map((j) => generateIds(srv.url, j.p, j.a)));
    jobs.forEach((j, i) => assert.deepEqual(results[i], alone.get(`${j.p}|${j.a}`), `${j.p} / ${j.a}`));
    assert.equal(srv.rt.scheduler.blocks.used, 0, 'every KV block returned');
  });

  it('keeps adapters in slots within the adapter memory budget, and refuses one larger than all of it', async () => {
    // The CPU engine (4-byte weights), a budget that holds r8-qv (or r8-qv-b) but not both, and not r16-all.
    const model = await openModelDir(join(FIXTURES, 'models', 'llama'));
    const size = async (name: string) => adapterBytes((await openPeftAdapter(adapterDir(name), model)).spec, 4);
    const small = await size('r8-qv');
    assert.equal(await size('r8-qv-b'), small);
    assert.ok((await size('r16-all')) > small + 1);
    const tight = await startBackend(['--device', 'cpu', '--adapter-source', 'local', '--allow-absolute-adapter-paths'], {}, { internal: { adapterMemoryBytes: small + 1 } });
    try {
      const gauge = (state: string) => metric(tight.url, `switchboard_adapter_memory_bytes{state="${state}"}`);
      assert.equal(await gauge('budget'), small + 1);
      assert.equal(await gauge('used'), 0);
      await generateIds(tight.url, PROMPTS[0]!, 'r8-qv', 2);
      assert.equal(await gauge('used'), small);
      await generateIds(tight.url, PROMPTS[0]!, 'r8-qv-b', 2);
      assert.equal(await gauge('used'), small, 'r8-qv made room for r8-qv-b');
      assert.equal(await metric(tight.url, 'lorax_adapter_evictions_total'), 1);
      const res = await postJson(`${tight.url}/generate`, { inputs: 'x', parameters: { max_new_tokens: 2, adapter_id: adapterDir('r16-all') } });
      const body = await res.text();
      assert.equal(res.status, 422, body);
      assert.match(body, /more than the whole adapter budget.*--adapter-memory-fraction/);
      assert.equal(await gauge('used'), small);
    } finally {
      await tight.close();
    }
  });

  it('exchanges adapters through 2 slots and still answers everyone correctly', async () => {
    const small = await startBackend(['--adapter-source', 'local', '--allow-absolute-adapter-paths', '--max-active-adapters', '2', '--adapter-cycle-time-s', '0.05']);
    try {
      const results = await Promise.all(jobs.map((j) => generateIds(small.url, j.p, j.a)));
      jobs.forEach((j, i) => assert.deepEqual(results[i], alone.get(`${j.p}|${j.a}`), `${j.p} / ${j.a}`));
      assert.ok((await metric(small.url, 'lorax_adapter_evictions_total')) > 0, 'adapters were evicted to make room');
      assert.ok(small.rt.store.activeCount <= 2);
    } finally {
      await small.close();
    }
  });

  it('preempts under a tiny KV cache and recomputes without changing the tokens', async () => {
    const tiny = await startBackend(['--adapter-source', 'local', '--allow-absolute-adapter-paths', '--max-batch-total-tokens', '64', '--block-size', '8', '--max-total-tokens', '48', '--max-input-length', '32', '--waiting-served-ratio', '0']);
    try {
      const work = jobs.slice(0, 10);
      const results = await Promise.all(work.map((j) => generateIds(tiny.url, j.p, j.a, 12)));
      const want = await Promise.all(work.map((j) => generateIds(srv.url, j.p, j.a, 12)));
      work.forEach((j, i) => assert.deepEqual(results[i], want[i], `${j.p} / ${j.a}`));
      assert.ok((await metric(tiny.url, 'lorax_preemptions_total')) > 0, 'the cache was too small for everyone at once');
      assert.equal(tiny.rt.scheduler.blocks.used, 0);
    } finally {
      await tiny.close();
    }
  });

  it('frees the batch slot and KV blocks when a streaming client disconnects', async () => {
    const ac = new AbortController();
    const res = await postJson(`${srv.url}/generate_stream`, { inputs: 'Go on forever', parameters: { max_new_tokens: 400, ignore_eos_token: true } }, {}, ac.signal);
    const reader = res.body!.getReader();
    await reader.read(); // the first event arrived: the sequence is running
    assert.ok(srv.rt.scheduler.batchSize >= 1);
    assert.ok(srv.rt.scheduler.blocks.used > 0);
    ac.abort();
    const t0 = Date.now();
    while ((srv.rt.scheduler.blocks.used > 0 || srv.rt.scheduler.batchSize > 0) && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 5));
    assert.equal(srv.rt.scheduler.batchSize, 0);
    assert.equal(srv.rt.scheduler.blocks.used, 0);
    assert.equal(srv.rt.inFlight, 0);
  });

  it('answers 429 beyond --max-concurrent-requests', async () => {
    const one = await startBackend(['--max-concurrent-requests', '1']);
    try {
      const ac = new AbortController();
      const long = await postJson(`${one.url}/generate_stream`, { inputs: 'x', parameters: { max_new_tokens: 400, ignore_eos_token: true } }, {}, ac.signal);
      await long.body!.getReader().read();
      const res = await postJson(`${one.url}/generate`, { inputs: 'y', parameters: { max_new_tokens: 2 } });
      assert.equal(res.status, 429);
      assert.equal(((await res.json()) as { error_type: string }).error_type, 'overloaded');
      ac.abort();
    } finally {
      await one.close();
    }
  });
});

describe('hub adapters', () => {
  let hub: HubServer;
  let srv: TestServer;
  let cache: string;
  before(async () => {
    hub = await startHub({
      'acme/r8-qv': { dir: adapterDir('r8-qv') },
      'acme/private': { dir: adapterDir('r16-all'), token: 'hf_secret' },
      'acme/slow': { dir: adapterDir('r8-patterns'), delayMs: 1500 },
    });
    cache = await mkdtemp(join(tmpdir(), 'sb-hub-cache-'));
    srv = await startBackend(['--adapter-source', 'hub', '--hub-endpoint', hub.endpoint, '--adapter-cache-dir', cache]);
  });
  after(async () => {
    await srv.close();
    await hub.close();
    await rm(cache, { recursive: true, force: true });
  });

  it('downloads a hub adapter once into the disk cache and serves it like the local copy', async () => {
    const local = await startBackend(['--adapter-source', 'local', '--allow-absolute-adapter-paths']);
    try {
      const want = await generateIds(local.url, PROMPTS[0]!, 'r8-qv');
      const res = await postJson(`${srv.url}/generate`, { inputs: PROMPTS[0], parameters: { max_new_tokens: 10, details: true, adapter_id: 'acme/r8-qv' } });
      assert.equal(res.status, 200, await res.clone().text());
      assert.deepEqual(((await res.json()) as { details: { tokens: { id: number }[] } }).details.tokens.map((t) => t.id), want);
      await postJson(`${srv.url}/generate`, { inputs: PROMPTS[1], parameters: { max_new_tokens: 2, adapter_id: 'acme/r8-qv' } });
      // The hub client reads each file's metadata with a HEAD, then GETs its bytes: two files, each fetched once.
      assert.equal(hub.requests.filter((r) => r.startsWith('GET ') && r.includes('/resolve/') && r.includes('acme/r8-qv')).length, 2, 'two files, downloaded once');
    } finally {
      await local.close();
    }
  });

  it('serves a private adapter only to requests that bring its token', async () => {
    const noToken = await postJson(`${srv.url}/generate`, { inputs: 'x', parameters: { max_new_tokens: 2, adapter_id: 'acme/private' } });
    assert.equal(noToken.status, 403);
    const ok = await postJson(`${srv.url}/generate`, { inputs: 'x', parameters: { max_new_tokens: 2, adapter_id: 'acme/private', api_token: 'hf_secret' } });
    assert.equal(ok.status, 200, await ok.clone().text());
    // Now cached and resident: still refused without the token, or with another one.
    const again = await postJson(`${srv.url}/generate`, { inputs: 'x', parameters: { max_new_tokens: 2, adapter_id: 'acme/private' } });
    assert.equal(again.status, 403);
    const wrong = await postJson(`${srv.url}/generate`, { inputs: 'x', parameters: { max_new_tokens: 2, adapter_id: 'acme/private', api_token: 'hf_wrong' } });
    assert.equal(wrong.status, 403);
    const missing = await postJson(`${srv.url}/generate`, { inputs: 'x', parameters: { max_new_tokens: 2, adapter_id: 'acme/nope' } });
    assert.equal(missing.status, 404);
  });

  it('keeps serving others while an adapter loads slowly', async () => {
    const t0 = performance.now();
    const slow = postJson(`${srv.url}/generate`, { inputs: 'x', parameters: { max_new_tokens: 4, adapter_id: 'acme/slow' } }).then(async (r) => ({ r, t: performance.now() - t0, body: await r.text() }));
    await new Promise((r) => setTimeout(r, 50));
    const fast = [];
    for (let i = 0; i < 3; i++) {
      const r = await postJson(`${srv.url}/generate`, { inputs: PROMPTS[i], parameters: { max_new_tokens: 8 } });
      assert.equal(r.status, 200);
      fast.push(performance.now() - t0);
    }
    const s = await slow;
    assert.equal(s.r.status, 200, s.body);
    assert.ok(s.t > 1400, `the slow adapter took ${s.t} ms`);
    assert.ok(fast.every((t) => t < s.t), `base requests finished at ${fast.map((t) => t.toFixed(0)).join(', ')} ms, before the slow adapter (${s.t.toFixed(0)} ms)`);
  });
});

describe('gateway service tokens', () => {
  const secret = 'a-shared-secret-of-at-least-32-bytes!!';
  let srv: TestServer;
  let root: string;
  const token = (tenant: string, opts: { aud?: string; exp?: string; scope?: string } = {}) =>
    new SignJWT({ tenant, ...(opts.scope ? { scope: opts.scope } : {}) })
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer('switchboard-gateway')
      .setAudience(opts.aud ?? 'switchboard-backend')
      .setIssuedAt()
      .setExpirationTime(opts.exp ?? '60s')
      .sign(new TextEncoder().encode(secret));
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'sb-tenants-'));
    await cp(adapterDir('r8-qv'), join(root, 'tenants', 'acme', 'mine'), { recursive: true });
    srv = await startBackend(['--adapter-source', 'local', '--adapter-root', root, '--service-key', secret]);
  });
  after(async () => {
    await srv.close();
    await rm(root, { recursive: true, force: true });
  });

  it('refuses requests without a valid service token', async () => {
    assert.equal((await fetch(`${srv.url}/health`)).status, 200);
    assert.equal((await postJson(`${srv.url}/generate`, { inputs: 'x' })).status, 401);
    assert.equal((await postJson(`${srv.url}/generate`, { inputs: 'x' }, { authorization: `Bearer ${await token('acme', { aud: 'other' })}` })).status, 401);
    assert.equal((await postJson(`${srv.url}/generate`, { inputs: 'x' }, { authorization: `Bearer ${await token('acme', { exp: '-10s' })}` })).status, 401);
    const openai = await postJson(`${srv.url}/v1/completions`, { model: 'llama', prompt: 'x' });
    assert.equal(openai.status, 401);
    assert.ok(((await openai.json()) as { error: { message: string } }).error.message);
  });

  it("serves a tenant's adapter to that tenant only; others get the not-found answer", async () => {
    const body = { inputs: 'x', parameters: { max_new_tokens: 2, adapter_id: 'tenants/acme/mine' } };
    const mine = await postJson(`${srv.url}/generate`, body, { authorization: `Bearer ${await token('acme')}` });
    assert.equal(mine.status, 200, await mine.clone().text());
    const theirs = await postJson(`${srv.url}/generate`, body, { authorization: `Bearer ${await token('globex')}` });
    const missing = await postJson(`${srv.url}/generate`, { ...body, parameters: { ...body.parameters, adapter_id: 'tenants/globex/mine' } }, { authorization: `Bearer ${await token('globex')}` });
    assert.equal(theirs.status, 404);
    assert.equal(missing.status, 404);
    assert.deepEqual(await theirs.json(), { error: 'adapter "tenants/acme/mine" not found', error_type: 'adapter' });
    assert.deepEqual(await missing.json(), { error: 'adapter "tenants/globex/mine" not found', error_type: 'adapter' });
  });

  it('accepts adapter uploads only for the token tenant with the write scope', async () => {
    const files = ['adapter_config.json', 'adapter_model.safetensors'];
    const { readFile } = await import('node:fs/promises');
    const put = async (tenant: string, tok: string, file: string) =>
      fetch(`${srv.url}/adapters/tenants/${tenant}/uploaded/${file}`, { method: 'PUT', headers: { authorization: `Bearer ${tok}` }, body: await readFile(join(adapterDir('r16-all'), file)) });
    assert.equal((await put('acme', await token('acme'), files[0]!)).status, 403, 'no write scope');
    assert.equal((await put('acme', await token('globex', { scope: 'adapters:write' }), files[0]!)).status, 403, 'other tenant');
    for (const f of files) assert.equal((await put('acme', await token('acme', { scope: 'adapters:write' }), f)).status, 200);
    const res = await postJson(`${srv.url}/generate`, { inputs: 'x', parameters: { max_new_tokens: 2, adapter_id: 'tenants/acme/uploaded' } }, { authorization: `Bearer ${await token('acme')}` });
    assert.equal(res.status, 200, await res.clone().text());
  });
});
