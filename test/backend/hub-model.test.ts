// `switchboard serve --model-id org/name` end to end: --download-only through the real CLI fills
// the cache (HF_ENDPOINT, HUGGINGFACE_HUB_CACHE, HF_TOKEN), then a server started with
// HF_HUB_OFFLINE=1 serves generation from that cache alone, under the repo id's name.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parseServeConfig } from '../../backend/config.ts';
import { startServer } from '../../backend/cli.ts';
import { startHubModelServer, type HubModelServer } from '../helpers/hub-model-server.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const MODEL_DIR = path.join(root, 'test/fixtures/models/llama');
const run = promisify(execFile);

describe('serve --model-id <hub repo>', () => {
  let hub: HubModelServer;
  let cache: string;
  before(async () => {
    const files: Record<string, Uint8Array> = {};
    for (const f of await readdir(MODEL_DIR)) files[f] = new Uint8Array(await readFile(path.join(MODEL_DIR, f)));
    hub = await startHubModelServer({ 'acme/tiny-llama': { revisions: { main: files }, token: 'hf_operator' } });
    cache = await mkdtemp(path.join(tmpdir(), 'sb-hub-serve-'));
  });
  after(() => hub.close());

  it('--download-only fills the cache and exits; an offline server then starts from it', async () => {
    const env = { ...process.env, HF_ENDPOINT: hub.endpoint, HUGGINGFACE_HUB_CACHE: cache, HF_TOKEN: 'hf_operator', MODEL_ID: '' };
    const bin = path.join(root, 'bin/switchboard.mjs');
    // Without the token the CLI fails with one line naming the problem.
    const denied = await run(process.execPath, [bin, 'serve', '--model-id', 'acme/tiny-llama', '--download-only'], { env: { ...env, HF_TOKEN: '' } }).catch((e: { code: number; stderr: string }) => e);
    assert.equal((denied as { code: number }).code, 1);
    assert.match((denied as { stderr: string }).stderr, /^switchboard: acme\/tiny-llama \(revision main\): not allowed; pass a token that can read it \(HF_TOKEN\)\n$/m);

    const { stdout, stderr } = await run(process.execPath, [bin, 'serve', '--model-id', 'acme/tiny-llama', '--download-only'], { env });
    const commit = hub.commit('acme/tiny-llama', 'main');
    assert.equal(stdout.trim(), path.join(cache, 'models--acme--tiny-llama', 'snapshots', commit));
    assert.match(stderr, /acme\/tiny-llama@main \(commit [0-9a-f]{40}, .* GB of weights\) is in the cache/);
    assert.match(stderr, /downloading acme\/tiny-llama: .* in /, 'a plain progress line (stderr is no terminal)');

    const requests = hub.requests.length;
    const config = parseServeConfig(['--model-id', 'acme/tiny-llama', '--port', '0'], { HF_HUB_OFFLINE: '1', HUGGINGFACE_HUB_CACHE: cache, HF_ENDPOINT: hub.endpoint });
    const server = await startServer(config, { log: () => {} });
    try {
      const info = (await (await fetch(`${server.url}/info`)).json()) as { model_id: string };
      assert.equal(info.model_id, 'acme/tiny-llama');
      const res = await fetch(`${server.url}/generate`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ inputs: 'Hello', parameters: { max_new_tokens: 3 } }),
      });
      assert.equal(res.status, 200);
      assert.equal(hub.requests.length, requests, 'the offline server never called the Hub');
    } finally {
      await server.close();
    }
  });
});
