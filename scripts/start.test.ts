// `npm start` as a newcomer meets it: every curl line it prints is run (as fetch, parsed from the
// printed text) and must succeed, the tenant adapter upload included; it says the model is random.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';

const ROOT = join(import.meta.dirname, '..');

/** A printed curl line as a fetch call: -X, -H, -d '<json>', --data-binary @file. */
function parseCurl(line: string): { url: string; init: RequestInit } {
  const tokens = [...line.matchAll(/'([^']*)'|(\S+)/g)].map((m) => m[1] ?? m[2]!);
  assert.equal(tokens.shift(), 'curl');
  let url = '';
  let method: string | null = null;
  const headers: Record<string, string> = {};
  let body: string | Uint8Array<ArrayBuffer> | undefined;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (t === '-X') method = tokens[++i]!;
    else if (t === '-H') {
      const h = tokens[++i]!;
      const colon = h.indexOf(':');
      headers[h.slice(0, colon).trim()] = h.slice(colon + 1).trim();
    } else if (t === '-d') body = tokens[++i]!;
    else if (t === '--data-binary') body = new Uint8Array(readFileSync(tokens[++i]!.replace(/^@/, '')));
    else if (/^https?:\/\//.test(t)) url = t;
    else assert.fail(`curl option the test does not know: ${t}`);
  }
  return { url, init: { method: method ?? (body !== undefined ? 'POST' : 'GET'), headers, ...(body !== undefined ? { body } : {}) } };
}

describe('npm start', () => {
  it('prints curl lines that all work, tenant adapter upload included, and says the model is random', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts', 'start.ts'), '--port', '0'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          if (/Try it:[\s\S]*\n\n$/.test(out)) resolve();
        });
        child.once('exit', (code) => reject(new Error(`npm start exited ${code}: ${err}`)));
      });
      assert.match(out, /RANDOM weights/);
      assert.match(out, /gibberish by design/);
      const curls = out.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('curl '));
      assert.ok(curls.length >= 9, out);
      assert.ok(curls.some((l) => l.includes('/v1/adapters/my-lora/adapter_model.safetensors')), 'the upload is among them');
      for (const line of curls) {
        const { url, init } = parseCurl(line);
        const res = await fetch(url, init);
        const text = await res.text();
        assert.ok(res.ok, `${line}\n-> ${res.status} ${text}`);
        if (url.endsWith('/generate')) assert.equal(typeof (JSON.parse(text) as { generated_text: unknown }).generated_text, 'string');
      }
      // The uploaded adapter really served: the backend loaded it from the tenant's directory.
      assert.match(err, /adapter \S*tenants\/demo\/my-lora loaded into an engine slot/);
      // Both layers log each request, never the key or the admin token.
      assert.match(err, /\[gateway\] POST \/generate 200 tenant=demo adapter=my-lora in=\d+ out=20 [\d.]+ms/);
      assert.match(err, /\[switchboard\] POST \/generate 200 adapter=tenants\/demo\/my-lora in=\d+ out=20 [\d.]+ms/);
      const key = /API key of tenant "demo": (\S+)/.exec(out)![1]!;
      const admin = /Admin token [^:]*: (\S+)/.exec(out)![1]!;
      assert.ok(!err.includes(key) && !err.includes(admin), 'no credential in the logs');
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
    }
  });

  it('a gateway port in use: one line naming it, before anything loads', async () => {
    const { createServer } = await import('node:net');
    const held = createServer();
    await new Promise<void>((r) => held.listen(0, '127.0.0.1', () => r()));
    const port = (held.address() as { port: number }).port;
    try {
      const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts', 'start.ts'), '--port', String(port)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const code = await new Promise((r) => child.once('exit', r));
      assert.equal(code, 1);
      assert.equal(err, `npm start: port ${port} is already in use on 127.0.0.1: stop what holds it or pick another with --port (or PORT)\n`);
    } finally {
      held.close();
    }
  });
});
