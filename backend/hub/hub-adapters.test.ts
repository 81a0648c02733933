// Hub adapters share the base model's cache and layout: files land in models--org--name/blobs and
// snapshots/<commit>, a private adapter is served from the shared cache only to a request whose own
// token the hub accepts, offline serves only repos last seen public, and adapter_model.bin repos load.
import assert from 'node:assert/strict';
import { lstat, mkdtemp, readFile, readlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { openModelDir } from '../../native/model-dir.ts';
import { openPeftAdapter } from '../../native/peft-adapter.ts';
import { startHubModelServer, type HubModelServer } from '../../test/helpers/hub-model-server.ts';
import { HubSource } from '../adapters/hub-source.ts';
import { AdapterError } from '../adapters/source.ts';

const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../test/fixtures');
const read = async (p: string) => new Uint8Array(await readFile(p));

describe('HubSource on the shared hub cache', () => {
  let hub: HubModelServer;
  let cacheDir: string;
  let r16: Record<string, Uint8Array>;
  before(async () => {
    const dir = path.join(FIXTURES, 'adapters/llama/r16-all');
    r16 = { 'adapter_config.json': await read(path.join(dir, 'adapter_config.json')), 'adapter_model.safetensors': await read(path.join(dir, 'adapter_model.safetensors')) };
    const bin = { 'adapter_config.json': r16['adapter_config.json']!, 'adapter_model.bin': await read(path.join(FIXTURES, 'pickle/r16-all.bin')) };
    hub = await startHubModelServer({
      'acme/public-lora': { revisions: { main: r16 } },
      'acme/private-lora': { revisions: { main: r16 }, token: 'hf_acme' },
      'acme/bin-lora': { revisions: { main: bin } },
    });
    cacheDir = await mkdtemp(path.join(tmpdir(), 'sb-hub-adapters-'));
  });
  after(() => hub.close());

  it("downloads into huggingface_hub's layout, shared with the base model", async () => {
    const src = new HubSource({ endpoint: hub.endpoint, cacheDir });
    const dir = await src.fetch({ id: 'acme/public-lora', source: 'hub' });
    const commit = hub.commit('acme/public-lora', 'main');
    assert.equal(dir, path.join(cacheDir, 'models--acme--public-lora', 'snapshots', commit));
    assert.match(await readlink(path.join(dir, 'adapter_model.safetensors')), /^\.\.\/\.\.\/blobs\/[0-9a-f]{64}$/);
    assert.equal(await readFile(path.join(cacheDir, 'models--acme--public-lora', 'refs', 'main'), 'utf-8'), commit);
    const model = await openModelDir(path.join(FIXTURES, 'models/llama'));
    assert.ok((await openPeftAdapter(dir, model)).spec.modules.length > 0);
  });

  it('serves a cached private adapter only to requests whose own token the hub accepts', async () => {
    const src = new HubSource({ endpoint: hub.endpoint, cacheDir });
    const dir = await src.fetch({ id: 'acme/private-lora', source: 'hub', apiToken: 'hf_acme' });
    const before = hub.requests.length;
    // The files are on disk now, yet a request without the token (or with another) is refused by the hub.
    await assert.rejects(src.fetch({ id: 'acme/private-lora', source: 'hub' }), (e: AdapterError) => e.status === 403);
    await assert.rejects(src.fetch({ id: 'acme/private-lora', source: 'hub', apiToken: 'hf_other' }), (e: AdapterError) => e.status === 403);
    assert.equal(await src.fetch({ id: 'acme/private-lora', source: 'hub', apiToken: 'hf_acme' }), dir);
    const after = hub.requests.slice(before);
    assert.deepEqual(after.map((r) => r.path), Array(3).fill('/api/models/acme/private-lora/revision/main'), 'cached: only the access checks');
  });

  it('offline (HF_HUB_OFFLINE): public repos from the cache, private ones refused, unknown ones not found', async () => {
    const off = new HubSource({ endpoint: hub.endpoint, cacheDir, offline: true });
    const before = hub.requests.length;
    assert.equal(await off.fetch({ id: 'acme/public-lora', source: 'hub' }), path.join(cacheDir, 'models--acme--public-lora', 'snapshots', hub.commit('acme/public-lora', 'main')));
    await assert.rejects(off.fetch({ id: 'acme/private-lora', source: 'hub', apiToken: 'hf_acme' }), (e: AdapterError) => e.status === 403 && /cannot be checked with HF_HUB_OFFLINE/.test(e.message));
    await assert.rejects(off.fetch({ id: 'acme/other', source: 'hub' }), (e: AdapterError) => e.status === 404 && /not in the hub cache/.test(e.message));
    assert.equal(hub.requests.length, before, 'offline: the hub is never called');
    // The marker lives in .locks/, which huggingface_hub's cache scan skips.
    await lstat(path.join(cacheDir, '.locks', 'models--acme--public-lora', 'switchboard-public'));
  });

  it('fetches adapter_model.bin when the repo has no safetensors, and it loads', async () => {
    const src = new HubSource({ endpoint: hub.endpoint, cacheDir });
    const dir = await src.fetch({ id: 'acme/bin-lora', source: 'hub' });
    const model = await openModelDir(path.join(FIXTURES, 'models/llama'));
    const a = await openPeftAdapter(dir, model);
    assert.equal(a.spec.modules[0]!.a.file, path.join(dir, 'adapter_model.bin'));
  });

  it('maps hub failures to adapter errors', async () => {
    const src = new HubSource({ endpoint: hub.endpoint, cacheDir });
    await assert.rejects(src.fetch({ id: 'acme/missing', source: 'hub' }), (e: AdapterError) => e.status === 404);
    await assert.rejects(src.fetch({ id: 'acme/public-lora', source: 'hub', revision: 'nope' }), (e: AdapterError) => e.status === 404);
    // An unreachable hub: a cached public adapter still serves; a private one, or one not cached, does not.
    const down = new HubSource({ endpoint: 'http://127.0.0.1:9', cacheDir });
    assert.equal(await down.fetch({ id: 'acme/public-lora', source: 'hub' }), path.join(cacheDir, 'models--acme--public-lora', 'snapshots', hub.commit('acme/public-lora', 'main')));
    await assert.rejects(down.fetch({ id: 'acme/private-lora', source: 'hub', apiToken: 'hf_acme' }), (e: AdapterError) => e.status === 422 && /cannot reach the Hub/.test(e.message));
    await assert.rejects(down.fetch({ id: 'acme/never-fetched', source: 'hub' }), (e: AdapterError) => e.status === 422 && /cannot reach the Hub/.test(e.message));
  });
});
