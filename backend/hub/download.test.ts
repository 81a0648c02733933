// --model-id from a Hub-shaped server into the huggingface_hub cache layout: layout, private repos,
// pinned revisions, resume after a cut connection, corruption caught, offline start, refusals.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { cp, lstat, mkdtemp, readdir, readFile, readlink, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { openModelDir } from '../../native/model-dir.ts';
import { gitBlobSha1, startHubModelServer, type HubModelServer } from '../../test/helpers/hub-model-server.ts';
import { hubCacheDir, hubToken } from './hub-cache.ts';
import { HubError } from './hub-client.ts';
import { parseModelId, resolveModel, type ModelResolveOptions } from './download.ts';

const MODEL_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../test/fixtures/models/llama');

async function filesOf(dir: string): Promise<Record<string, Uint8Array>> {
  const out: Record<string, Uint8Array> = {};
  for (const f of await readdir(dir)) out[f] = new Uint8Array(await readFile(path.join(dir, f)));
  return out;
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const sink = { lines: [] as string[], write(t: string) { this.lines.push(t); return true; } };

describe('resolveModel against a Hub-shaped server', () => {
  let hub: HubModelServer;
  let llama: Record<string, Uint8Array>;
  let v1: Record<string, Uint8Array>;
  let cacheDir: string;
  const opts = (extra: Partial<ModelResolveOptions> = {}): ModelResolveOptions => ({
    endpoint: hub.endpoint,
    cacheDir,
    progressSink: sink,
    retryDelayMs: 10,
    ...extra,
  });

  before(async () => {
    llama = await filesOf(MODEL_DIR);
    // Revision v1: another generation config, so its snapshot differs from main's.
    v1 = { ...llama, 'generation_config.json': new TextEncoder().encode('{"max_length": 7}') };
    const pickleOnly = { 'config.json': llama['config.json']!, 'pytorch_model.bin': new Uint8Array(64), 'tokenizer.json': llama['tokenizer.json']! };
    hub = await startHubModelServer({
      'acme/tiny-llama': { revisions: { main: llama, v1 } },
      'acme/private-llama': { revisions: { main: llama }, token: 'hf_secret' },
      'acme/pickle-only': { revisions: { main: pickleOnly } },
    });
  });
  after(() => hub.close());

  const freshCache = async () => {
    cacheDir = await mkdtemp(path.join(tmpdir(), 'sb-hub-cache-'));
  };

  it('downloads configs, tokenizer and weight shards into the huggingface_hub layout, then serves from it', async () => {
    await freshCache();
    const { dir, hub: h } = await resolveModel('acme/tiny-llama', opts());
    const commit = hub.commit('acme/tiny-llama', 'main');
    const repoDir = path.join(cacheDir, 'models--acme--tiny-llama');
    assert.equal(dir, path.join(repoDir, 'snapshots', commit));
    assert.deepEqual(h, { repoId: 'acme/tiny-llama', revision: 'main', commit, fromCache: false });
    assert.equal(await readFile(path.join(repoDir, 'refs', 'main'), 'utf-8'), commit);
    // Shards are blobs named by their sha256 (LFS), small files by their git blob sha1; the snapshot
    // holds relative symlinks to them.
    const shard = 'model-00002-of-00004.safetensors';
    assert.equal(await readlink(path.join(dir, shard)), `../../blobs/${sha256(llama[shard]!)}`);
    assert.equal(await readlink(path.join(dir, 'config.json')), `../../blobs/${gitBlobSha1(llama['config.json']!)}`);
    assert.deepEqual((await readdir(dir)).sort(), Object.keys(llama).sort());
    const model = await openModelDir(dir);
    assert.equal(model.spec.tensors.length > 0, true);
    // Downloads ran with the progress reporter, as plain lines (the sink is no terminal).
    assert.ok(sink.lines.some((l) => /^downloading acme\/tiny-llama: .* in /.test(l)), sink.lines.join(''));

    const before = hub.requests.length;
    await resolveModel('acme/tiny-llama', opts());
    const again = hub.requests.slice(before);
    assert.deepEqual(again.map((r) => r.method), ['GET'], 'a second start asks only for the revision');
    assert.match(again[0]!.path, /^\/api\/models\/acme\/tiny-llama\/revision\/main$/);
  });

  it('pins a revision given as id@revision or --revision, and a commit hash', async () => {
    await freshCache();
    const c1 = hub.commit('acme/tiny-llama', 'v1');
    const a = await resolveModel('acme/tiny-llama@v1', opts());
    assert.equal(a.hub?.commit, c1);
    assert.equal(await readFile(path.join(a.dir, 'generation_config.json'), 'utf-8'), '{"max_length": 7}');
    const b = await resolveModel('acme/tiny-llama', opts({ revision: 'v1' }));
    assert.equal(b.dir, a.dir);
    const c = await resolveModel(`acme/tiny-llama@${c1}`, opts());
    assert.equal(c.dir, a.dir);
    assert.equal(await readFile(path.join(cacheDir, 'models--acme--tiny-llama', 'refs', 'v1'), 'utf-8'), c1);
    // Blobs the two revisions share are stored once.
    const main = await resolveModel('acme/tiny-llama', opts());
    const blobs = await readdir(path.join(cacheDir, 'models--acme--tiny-llama', 'blobs'));
    assert.equal(blobs.length, Object.keys(llama).length + 1);
    assert.notEqual(main.dir, a.dir);
    assert.throws(() => parseModelId('acme/tiny-llama@v1', 'main'), /names revision v1 but --revision says main/);
    await assert.rejects(resolveModel('acme/tiny-llama@nope', opts()), (e: HubError) => e.kind === 'not-found' && /revision not found/.test(e.message));
  });

  it('a private repo needs its token; the token never reaches the CDN', async () => {
    await freshCache();
    await assert.rejects(resolveModel('acme/private-llama', opts()), (e: HubError) => e.kind === 'auth' && /not allowed/.test(e.message));
    await assert.rejects(resolveModel('acme/private-llama', opts({ token: 'hf_wrong' })), (e: HubError) => e.kind === 'auth');
    const from = hub.requests.length;
    const { dir } = await resolveModel('acme/private-llama', opts({ token: 'hf_secret' }));
    await openModelDir(dir);
    const reqs = hub.requests.slice(from);
    assert.ok(reqs.filter((r) => r.server === 'hub').every((r) => r.auth === 'Bearer hf_secret'));
    const cdnReqs = reqs.filter((r) => r.server === 'cdn');
    assert.ok(cdnReqs.length >= 4, 'the shards came from the CDN');
    assert.ok(cdnReqs.every((r) => r.auth === undefined), 'no credentials sent to another origin');
  });

  it('resumes a download cut off mid-file with a Range request', async () => {
    await freshCache();
    const shard = 'model-00003-of-00004.safetensors';
    const size = llama[shard]!.byteLength;
    // No retries: the first run fails and leaves blobs/<sha256>.incomplete behind.
    hub.faults.cutOnce = new Set([`acme/tiny-llama:${shard}`]);
    await assert.rejects(resolveModel('acme/tiny-llama', opts({ retries: 0 })), (e: HubError) => e.kind === 'network' && /run again to resume/.test(e.message));
    const partial = path.join(cacheDir, 'models--acme--tiny-llama', 'blobs', `${sha256(llama[shard]!)}.incomplete`);
    const have = (await stat(partial)).size;
    assert.ok(have > 0 && have < size, `partial file holds ${have} of ${size} bytes`);
    const from = hub.requests.length;
    const { dir } = await resolveModel('acme/tiny-llama', opts({ retries: 0 }));
    const ranged = hub.requests.slice(from).filter((r) => r.range !== undefined);
    assert.deepEqual(ranged.map((r) => r.range), [`bytes=${have}-`]);
    assert.deepEqual(new Uint8Array(await readFile(path.join(dir, shard))), llama[shard]);
    await assert.rejects(stat(partial), { code: 'ENOENT' });

    // With retries (the default), one run resumes by itself.
    await freshCache();
    hub.faults.cutOnce = new Set([`acme/tiny-llama:${shard}`]);
    const sentBefore = hub.bytesSent();
    const reqsBefore = hub.requests.length;
    const r = await resolveModel('acme/tiny-llama', opts());
    assert.deepEqual(new Uint8Array(await readFile(path.join(r.dir, shard))), llama[shard]);
    const resumed = hub.requests.slice(reqsBefore).filter((q) => q.range !== undefined);
    assert.equal(resumed.length, 1);
    assert.ok(Number(/^bytes=(\d+)-$/.exec(resumed[0]!.range!)![1]) > 0, 'resumed from where the cut left it');
    // Restarting would resend the half sent before the cut; resuming resends at most what was lost in flight.
    const total = Object.values(llama).reduce((n, b) => n + b.byteLength, 0);
    assert.ok(hub.bytesSent() - sentBefore < total + (size >> 1), `${hub.bytesSent() - sentBefore} bytes sent for ${total}`);
  });

  it('catches a corrupted download by its sha256 and keeps nothing of it', async () => {
    await freshCache();
    const shard = 'model-00001-of-00004.safetensors';
    hub.faults.corrupt = new Set([`acme/tiny-llama:${shard}`]);
    try {
      await assert.rejects(resolveModel('acme/tiny-llama', opts()), (e: HubError) => {
        assert.equal(e.kind, 'integrity');
        assert.match(e.message, new RegExp(`${shard}: sha256 of the download is [0-9a-f]{64} but the Hub says ${sha256(llama[shard]!)}`));
        return true;
      });
      const blobs = await readdir(path.join(cacheDir, 'models--acme--tiny-llama', 'blobs'));
      assert.ok(!blobs.some((b) => b.startsWith(sha256(llama[shard]!))), 'neither the blob nor its .incomplete remain');
      // A corrupted small (non-LFS) file is caught by its git blob sha1.
      hub.faults.corrupt = new Set(['acme/tiny-llama:config.json']);
      await freshCache();
      await assert.rejects(resolveModel('acme/tiny-llama', opts()), /config\.json: git sha1 of the download is/);
    } finally {
      hub.faults.corrupt = new Set();
    }
  });

  it('starts offline from the cache alone (HF_HUB_OFFLINE), and falls back to it when the Hub is unreachable', async () => {
    await freshCache();
    const online = await resolveModel('acme/tiny-llama', opts());
    const from = hub.requests.length;
    const off = await resolveModel('acme/tiny-llama', opts({ offline: true }));
    assert.equal(off.dir, online.dir);
    assert.equal(off.hub?.fromCache, true);
    assert.equal(hub.requests.length, from, 'offline: no request at all');
    await openModelDir(off.dir);
    await assert.rejects(resolveModel('acme/tiny-llama@v1', opts({ offline: true })), (e: HubError) => e.kind === 'offline' && /not complete in the cache/.test(e.message));
    // A Hub that does not answer: the cached snapshot serves, with a log line.
    const logs: string[] = [];
    const down = await resolveModel('acme/tiny-llama', opts({ endpoint: 'http://127.0.0.1:9' }), (m) => logs.push(m));
    assert.equal(down.dir, online.dir);
    assert.match(logs.join('\n'), /cannot reach the Hub .* using cached commit/);
    // A shard missing from the cache makes the snapshot unusable offline.
    await rm(path.join(online.dir, 'model-00004-of-00004.safetensors'));
    await assert.rejects(resolveModel('acme/tiny-llama', opts({ offline: true })), /not complete in the cache/);
  });

  it('refuses a repo without safetensors before downloading anything', async () => {
    await freshCache();
    const from = hub.requests.length;
    await assert.rejects(resolveModel('acme/pickle-only', opts()), (e: HubError) => {
      assert.equal(e.kind, 'refused');
      assert.match(e.message, /acme\/pickle-only has no safetensors weights; it has pytorch_model\.bin\. Switchboard loads only safetensors/);
      return true;
    });
    assert.deepEqual(hub.requests.slice(from).map((r) => r.path), ['/api/models/acme/pickle-only/revision/main']);
    await assert.rejects(lstat(path.join(cacheDir, 'models--acme--pickle-only', 'blobs')), { code: 'ENOENT' });
  });

  it('reuses a cache filled by huggingface_hub (Python): offline as is, and its blobs online', async () => {
    // test/fixtures/hub-cache-python: snapshot_download of this model by huggingface_hub 1.33
    // (scripts/make-interop-fixtures.py).
    const pyCache = path.join(MODEL_DIR, '../../hub-cache-python/hub');
    const off = await resolveModel('acme/tiny-llama', opts({ cacheDir: pyCache, offline: true }));
    assert.equal(off.dir, path.join(pyCache, 'models--acme--tiny-llama/snapshots/94a5f40217c3f4584beed22b9db5e39a0a41bd37'));
    await openModelDir(off.dir);
    // Online (another commit of the same files): shards already in blobs/ by their sha256 are linked, not fetched.
    await freshCache();
    await cp(pyCache, cacheDir, { recursive: true, verbatimSymlinks: true });
    const from = hub.requests.length;
    const on = await resolveModel('acme/tiny-llama', opts());
    assert.notEqual(on.dir, off.dir.replace(pyCache, cacheDir));
    const shards = Object.keys(llama).filter((f) => f.endsWith('.safetensors')).map((f) => sha256(llama[f]!));
    const cdn = hub.requests.slice(from).filter((r) => r.server === 'cdn');
    assert.ok(!cdn.some((r) => shards.some((s) => r.path.includes(s))), 'no shard downloaded again');
    // Only tokenizer.json is fetched: this server stores it in LFS (sha256), Python's got it as a git blob.
    assert.equal(cdn.length, 1);
    await openModelDir(on.dir);
  });

  it('takes a local directory as is and refuses ids that are neither', async () => {
    assert.deepEqual(await resolveModel(MODEL_DIR, opts()), { dir: MODEL_DIR });
    await assert.rejects(resolveModel('/no/such/dir', opts()), /no such directory/);
    await assert.rejects(resolveModel('not a repo', opts()), /neither an existing directory nor a Hub repo id/);
    await assert.rejects(resolveModel('acme/x@../../etc', opts()), /not a valid revision/);
    await assert.rejects(resolveModel('acme/missing', opts()), (e: HubError) => e.kind === 'not-found' && /^--model-id acme\/missing: no such directory here, and acme\/missing \(revision main\): not found on the Hub at http/.test(e.message));
  });
});

describe('hub cache and token locations', () => {
  it('follows huggingface_hub: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME, XDG_CACHE_HOME', () => {
    assert.equal(hubCacheDir({ HF_HUB_CACHE: '/a', HUGGINGFACE_HUB_CACHE: '/b', HF_HOME: '/c' }), '/a');
    assert.equal(hubCacheDir({ HUGGINGFACE_HUB_CACHE: '/b', HF_HOME: '/c' }), '/b');
    assert.equal(hubCacheDir({ HF_HOME: '/c' }), '/c/hub');
    assert.equal(hubCacheDir({ XDG_CACHE_HOME: '/x' }), '/x/huggingface/hub');
  });

  it('reads HF_TOKEN, else the token file huggingface-cli login writes', async () => {
    const home = await mkdtemp(path.join(tmpdir(), 'sb-hf-home-'));
    assert.equal(hubToken({ HF_TOKEN: 'hf_env', HF_HOME: home }), 'hf_env');
    assert.equal(hubToken({ HF_HOME: home }), undefined);
    const { writeFile } = await import('node:fs/promises');
    await writeFile(path.join(home, 'token'), 'hf_file\n');
    assert.equal(hubToken({ HF_HOME: home }), 'hf_file');
  });
});
