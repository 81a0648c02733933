// The `switchboard` command as a user runs it: through `npx` (node_modules/.bin link, where the
// old argv[1] check printed nothing), one-line start-up failures, secrets from files and the
// environment, and the access log a running server writes.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { rawRequest } from '../test/helpers/raw-http.ts';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SignJWT } from 'jose';
import { SERVICE_AUDIENCE, SERVICE_ISSUER } from '../protocol/index.ts';

const ROOT = join(import.meta.dirname, '..');
const MODEL = join(ROOT, 'test', 'fixtures', 'models', 'llama');
const KEY = 'cli-test-service-key-0123456789abcdef-0123';
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf-8')) as { version: string }).version;

function npx(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync('npx', ['--no-install', 'switchboard', ...args], { cwd: ROOT, encoding: 'utf-8', env: { ...process.env, ...env }, timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Holds a loopback port so that a server asked to listen there fails. */
async function occupyPort(): Promise<{ port: number; server: Server }> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { port: (server.address() as { port: number }).port, server };
}

/** Starts the CLI, resolves with its URL once it listens; stderr is collected for the test. */
function startCli(args: string[], env: NodeJS.ProcessEnv = {}) {
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'switchboard.mjs'), ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const url = new Promise<string>((resolve, reject) => {
    child.stderr.on('data', () => {
      const m = /listening on (http:\/\/[^\s"]+)/.exec(stderr);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${stderr}`)));
  });
  return {
    url,
    stderr: () => stderr,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

const oneLine = (s: string) => s.trim().split('\n').filter((l) => !/^\[(switchboard|gateway)\]/.test(l));

describe('switchboard through npx', () => {
  it('serve --help lists the options, secrets from files first', () => {
    const r = npx(['serve', '--help']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Usage: switchboard serve --model-id/);
    assert.match(r.stdout, /--service-key-file/);
    assert.match(r.stdout, /--json-output/);
  });

  it('--version prints the package version', () => {
    for (const args of [['--version'], ['serve', '--version'], ['gateway', '--version']]) {
      const r = npx(args);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `switchboard ${VERSION}\n`, args.join(' '));
    }
  });

  it('gateway --help, and the command list without arguments', () => {
    const g = npx(['gateway', '--help']);
    assert.equal(g.code, 0, g.stderr);
    assert.match(g.stdout, /^Usage: switchboard gateway --backend/);
    assert.match(g.stdout, /--admin-token-file/);
    const top = npx([]);
    assert.equal(top.code, 0);
    assert.match(top.stdout, /serve\s+run the inference server/);
    const bad = npx(['srve']);
    assert.equal(bad.code, 2);
    assert.equal(bad.stderr, 'switchboard: unknown command "srve" (try: switchboard --help)\n');
  });
});

describe('start-up failures are one line', () => {
  let held: { port: number; server: Server };
  before(async () => (held = await occupyPort()));
  after(() => held.server.close());

  it('serve: a port in use names the port and --port, before the model loads', () => {
    const t0 = performance.now();
    const r = npx(['serve', '--model-id', MODEL, '--port', String(held.port)]);
    assert.equal(r.code, 1);
    assert.deepEqual(oneLine(r.stderr), [`switchboard: port ${held.port} is already in use on 127.0.0.1: stop what holds it or pick another with --port (or PORT)`]);
    assert.doesNotMatch(r.stderr, /loading weights|tokenizer/, 'the port is bound before anything loads');
    assert.ok(performance.now() - t0 < 30_000);
  });

  it('gateway: a port in use, a short service key, a missing secret file', () => {
    const key = mkdtempSync(join(tmpdir(), 'sb-cli-'));
    try {
      writeFileSync(join(key, 'k'), `${KEY}\n`);
      const port = npx(['gateway', '--backend', 'http://127.0.0.1:9', '--service-key-file', join(key, 'k'), '--port', String(held.port), '--health-interval-ms', '60000']);
      assert.equal(port.code, 2);
      assert.deepEqual(oneLine(port.stderr), [`switchboard gateway: port ${held.port} is already in use on 127.0.0.1: stop what holds it or pick another with --port (or PORT)`]);
      const short = npx(['gateway', '--backend', 'http://127.0.0.1:9', '--port', '0'], { SWITCHBOARD_SERVICE_KEY: 'short' });
      assert.equal(short.code, 1);
      assert.deepEqual(oneLine(short.stderr), ['switchboard gateway: service key: a shared secret must be at least 32 bytes']);
      const missing = npx(['gateway', '--backend', 'http://127.0.0.1:9', '--service-key-file', join(key, 'nope')]);
      assert.equal(missing.code, 2);
      assert.deepEqual(oneLine(missing.stderr), [`switchboard gateway: --service-key-file: cannot read ${join(key, 'nope')}: ENOENT`]);
    } finally {
      rmSync(key, { recursive: true, force: true });
    }
  });
});

describe('a running server', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'sb-cli-'));
    writeFileSync(join(dir, 'service-key'), `${KEY}\n`);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const token = () =>
    new SignJWT({ tenant: 'acme', scope: 'generate' })
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer(SERVICE_ISSUER)
      .setAudience(SERVICE_AUDIENCE)
      .setIssuedAt()
      .setExpirationTime('1m')
      .sign(new TextEncoder().encode(KEY));

  it('reads --service-key-file without a warning, warns once for --service-key, and logs each request without secrets', async () => {
    const s = startCli(['serve', '--model-id', MODEL, '--port', '0', '--service-key-file', join(dir, 'service-key'), '--threads', '1']);
    try {
      const url = await s.url;
      assert.doesNotMatch(s.stderr(), /warning/);
      const unsigned = await fetch(`${url}/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ inputs: 'x' }) });
      assert.equal(unsigned.status, 401, 'the key from the file is in force');
      const jwt = await token();
      const ok = await fetch(`${url}/generate`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${jwt}` }, body: JSON.stringify({ inputs: 'Hello', parameters: { max_new_tokens: 3, api_token: 'hf_secret_in_body' } }) });
      assert.equal(ok.status, 200, await ok.clone().text());
      const streamed = await fetch(`${url}/generate_stream`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${jwt}` }, body: JSON.stringify({ inputs: 'Hello', parameters: { max_new_tokens: 2 } }) });
      await streamed.text();
      await fetch(`${url}/info`, { headers: { authorization: `Bearer ${jwt}` } });
      await new Promise((r) => setTimeout(r, 200));
      const lines = s.stderr().split('\n');
      assert.ok(lines.some((l) => /^\[switchboard\] POST \/generate 401 [\d.]+ms$/.test(l)), s.stderr());
      assert.ok(lines.some((l) => /^\[switchboard\] POST \/generate 200 in=\d+ out=3 [\d.]+ms$/.test(l)), s.stderr());
      assert.ok(lines.some((l) => /^\[switchboard\] POST \/generate_stream 200 in=\d+ out=2 [\d.]+ms \(stream\)$/.test(l)), s.stderr());
      assert.ok(lines.some((l) => /^\[switchboard\] GET \/info 200 [\d.]+ms$/.test(l)), s.stderr());
      for (const secret of [KEY, jwt, 'hf_secret_in_body']) assert.ok(!s.stderr().includes(secret), 'no secret in the log');
    } finally {
      await s.stop();
    }
    const warned = startCli(['serve', '--model-id', MODEL, '--port', '0', '--service-key', KEY, '--threads', '1', '--json-output']);
    try {
      await warned.url;
      assert.equal(warned.stderr().match(/shows in `ps`/g)?.length, 1, warned.stderr());
      await fetch(`${await warned.url}/info`, { headers: { authorization: `Bearer ${await token()}` } });
      await new Promise((r) => setTimeout(r, 200));
      const entry = warned
        .stderr()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .find((e) => e.msg === 'request');
      assert.deepEqual({ ...entry, time: 0, duration_ms: 0 }, { time: 0, level: 'info', msg: 'request', method: 'GET', route: '/info', status: 200, adapter: null, tokens_in: null, tokens_out: null, duration_ms: 0, stream: false });
    } finally {
      await warned.stop();
    }
  });

  it('takes the service key from SWITCHBOARD_SERVICE_KEY_FILE', async () => {
    const s = startCli(['serve', '--model-id', MODEL, '--port', '0', '--threads', '1'], { SWITCHBOARD_SERVICE_KEY_FILE: join(dir, 'service-key') });
    try {
      const url = await s.url;
      const r = await fetch(`${url}/generate`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${await token()}` }, body: JSON.stringify({ inputs: 'Hello', parameters: { max_new_tokens: 1 } }) });
      assert.equal(r.status, 200);
      assert.doesNotMatch(s.stderr(), /warning/);
      // Host is optional in HTTP/1.0 (and probes omit it): answered, not Node's empty 400.
      assert.match(await rawRequest(url, 'GET /health HTTP/1.0\r\n\r\n'), /^HTTP\/1\.1 200 [^]*\{"status":"ok"\}$/);
    } finally {
      await s.stop();
    }
  });
});
