// A log reader that stops reading must not stop the server: with stderr a pipe nobody drains, Node's
// synchronous stderr writes would block the event loop once the pipe's buffer (64 KiB) is full, at
// the next access log line. Both servers write their access logs through a bounded asynchronous
// writer (backend/log-sink.ts, gateway/node.ts), so requests keep being answered.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ROOT, spawnServer, stopServer, type ServerProcess } from '../helpers/spawn-server.ts';

const MODEL = join(ROOT, 'test', 'fixtures', 'models', 'llama');
const REQUESTS = 2000; // about 150 KB of access log lines per server, well past a pipe's buffer

async function hammer(url: string): Promise<number> {
  let ok = 0;
  for (let i = 0; i < REQUESTS; i++) {
    const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(5000) });
    await res.arrayBuffer();
    if (res.status === 200) ok++;
  }
  return ok;
}

describe('a stderr reader that stopped reading', () => {
  const procs: ServerProcess[] = [];
  after(async () => {
    for (const p of procs) await stopServer(p.proc);
  });

  it('does not stop the backend or the gateway from answering', { timeout: 120_000 }, async () => {
    const env = { SWITCHBOARD_SERVICE_KEY: 'stalled-log-reader-service-key-0123456789abcdef' };
    const backend = await spawnServer(['serve', '--model-id', MODEL, '--port', '0', '--threads', '1'], env);
    procs.push(backend);
    const gateway = await spawnServer(['gateway', '--backend', backend.url, '--port', '0'], env);
    procs.push(gateway);
    // From here on nobody reads either server's stderr: the pipes fill and stay full.
    backend.proc.stderr!.pause();
    gateway.proc.stderr!.pause();
    assert.equal(await hammer(backend.url), REQUESTS);
    assert.equal(await hammer(gateway.url), REQUESTS);
  });
});
