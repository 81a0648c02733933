// adapter_source "s3" against an S3-compatible server the test starts (s3rver): the AWS SDK's
// standard credentials and an endpoint override, buckets only by the operator's list, per-version
// caching, refusals; and end to end through /generate, with pbase refused saying why.
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { mkdtemp, readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import S3rver from 's3rver';
import { openModelDir } from '../../native/model-dir.ts';
import { openPeftAdapter } from '../../native/peft-adapter.ts';
import { postJson, startBackend } from '../../test/helpers/backend.ts';
import { parseS3Id, S3Source } from './s3-source.ts';
import type { AdapterError } from './source.ts';

const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../test/fixtures');
const R16 = path.join(FIXTURES, 'adapters/llama/r16-all');

describe('adapter_source "s3"', () => {
  let server: S3rver;
  let endpoint: string;
  let client: S3Client;
  let cacheDir: string;
  const env = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1' };

  before(async () => {
    server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: await mkdtemp(path.join(tmpdir(), 'sb-s3rver-')), configureBuckets: [{ name: 'adapters', configs: [] }, { name: 'other-bucket', configs: [] }] });
    const addr = (await server.run()) as AddressInfo;
    endpoint = `http://127.0.0.1:${addr.port}`;
    // The SDK's standard credential chain reads these, as it would on a real host.
    Object.assign(process.env, env);
    client = new S3Client({ endpoint, forcePathStyle: true, region: 'us-east-1' });
    for (const f of ['adapter_config.json', 'adapter_model.safetensors']) {
      await client.send(new PutObjectCommand({ Bucket: 'adapters', Key: `loras/r16/${f}`, Body: await readFile(path.join(R16, f)) }));
      await client.send(new PutObjectCommand({ Bucket: 'other-bucket', Key: `r16/${f}`, Body: await readFile(path.join(R16, f)) }));
    }
    await client.send(new PutObjectCommand({ Bucket: 'adapters', Key: 'loras/bin/adapter_config.json', Body: await readFile(path.join(R16, 'adapter_config.json')) }));
    await client.send(new PutObjectCommand({ Bucket: 'adapters', Key: 'loras/bin/adapter_model.bin', Body: await readFile(path.join(FIXTURES, 'pickle/r16-all.bin')) }));
    cacheDir = await mkdtemp(path.join(tmpdir(), 'sb-s3-cache-'));
  });
  after(() => server.close());

  it('parses s3://bucket/prefix and refuses anything else', () => {
    assert.deepEqual(parseS3Id('s3://adapters/loras/r16/'), { bucket: 'adapters', prefix: 'loras/r16' });
    for (const bad of ['adapters/loras', 's3://A_B/x', 's3://adapters/a/../b', 's3://adapters/a//b', 'https://x/y']) {
      assert.throws(() => parseS3Id(bad), (e: AdapterError) => e.status === 400, bad);
    }
  });

  it('downloads a PEFT folder with the standard credentials and caches it per object version', async () => {
    const src = new S3Source({ cacheDir, buckets: ['adapters'], endpoint });
    const dir = await src.fetch({ id: 's3://adapters/loras/r16', source: 's3' });
    assert.deepEqual(await readFile(path.join(dir, 'adapter_model.safetensors')), await readFile(path.join(R16, 'adapter_model.safetensors')));
    const model = await openModelDir(path.join(FIXTURES, 'models/llama'));
    assert.ok((await openPeftAdapter(dir, model)).spec.modules.length > 0);
    assert.equal(await src.fetch({ id: 's3://adapters/loras/r16/', source: 's3' }), dir, 'same objects, same folder');
    // A re-upload (new ETag) gets a new folder.
    const cfg = JSON.parse(await readFile(path.join(R16, 'adapter_config.json'), 'utf-8')) as Record<string, unknown>;
    await client.send(new PutObjectCommand({ Bucket: 'adapters', Key: 'loras/r16/adapter_config.json', Body: JSON.stringify({ ...cfg, task_type: 'CAUSAL_LM' }) }));
    assert.notEqual(await src.fetch({ id: 's3://adapters/loras/r16', source: 's3' }), dir);
    // adapter_model.bin when there is no safetensors.
    const bin = await src.fetch({ id: 's3://adapters/loras/bin', source: 's3' });
    assert.equal((await openPeftAdapter(bin, model)).spec.modules[0]!.a.file, path.join(bin, 'adapter_model.bin'));
  });

  it("reads only the operator's buckets, and says what is missing or refused", async () => {
    const off = new S3Source({ cacheDir, buckets: [], endpoint });
    await assert.rejects(off.fetch({ id: 's3://adapters/loras/r16', source: 's3' }), (e: AdapterError) => e.status === 422 && /--s3-buckets/.test(e.message));
    const src = new S3Source({ cacheDir, buckets: ['adapters'], endpoint });
    await assert.rejects(src.fetch({ id: 's3://other-bucket/r16', source: 's3' }), (e: AdapterError) => e.status === 403 && /not one this server reads/.test(e.message));
    await assert.rejects(src.fetch({ id: 's3://adapters/nothing-here', source: 's3' }), (e: AdapterError) => e.status === 404 && /no adapter_config\.json under it/.test(e.message));
    const any = new S3Source({ cacheDir, buckets: ['*'], endpoint });
    await any.fetch({ id: 's3://other-bucket/r16', source: 's3' });
    // Wrong credentials: S3 refuses, and so do we.
    const wrong = new S3Source({ cacheDir, buckets: ['*'], client: new S3Client({ endpoint, forcePathStyle: true, region: 'us-east-1', credentials: { accessKeyId: 'nobody', secretAccessKey: 'wrong' } }) });
    await assert.rejects(wrong.fetch({ id: 's3://adapters/loras/bin', source: 's3' }), (e: AdapterError) => e.status === 403 || e.status === 422);
  });

  it('serves /generate with an S3 adapter; pbase is refused saying why', async () => {
    const xdg = await mkdtemp(path.join(tmpdir(), 'sb-xdg-'));
    process.env.XDG_CACHE_HOME = xdg;
    const be = await startBackend(['--s3-buckets', 'adapters', '--s3-endpoint', endpoint]);
    try {
      const ok = await postJson(`${be.url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 2, adapter_id: 's3://adapters/loras/r16', adapter_source: 's3' } });
      assert.equal(ok.status, 200, await ok.clone().text());
      const denied = await postJson(`${be.url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 2, adapter_id: 's3://other-bucket/r16', adapter_source: 's3' } });
      assert.equal(denied.status, 403);
      const pbase = await postJson(`${be.url}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 2, adapter_id: 'x/1', adapter_source: 'pbase' } });
      assert.equal(pbase.status, 422);
      assert.match(((await pbase.json()) as { error: string }).error, /adapter_source "pbase" is Predibase's hosted adapter registry/);
    } finally {
      await be.close();
      delete process.env.XDG_CACHE_HOME;
    }
  });
});
