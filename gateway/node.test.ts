// The Node entry: `switchboard gateway` flags (and their environment variables), and the CLI
// serving for real (a child process talking to a stand-in backend on loopback).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { request } from 'node:http';
import { describe, it } from 'node:test';
import { startStandIn } from '../test/gateway/helpers/standin.ts';
import { rawRequest } from '../test/helpers/raw-http.ts';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { formatGatewayAccess, GatewayConfigError, gatewayHelp, parseGatewayArgs, startGateway, type GatewayAccessEntry } from './node.ts';

const KEY = 'cli-service-key-0123456789abcdef-0123456789';

describe('switchboard gateway (CLI)', () => {
  it('parses flags, repeated and comma-separated backends, and environment fallbacks', () => {
    const o = parseGatewayArgs(['--backend', 'http://a:1,http://b:2', '--backend=http://c:3', '--port', '9000', '--service-key', KEY, '--default-rpm', '60', '--jwt-issuer', 'https://idp', '--jwt-audience', 'gw', '--jwt-secret', 's'.repeat(32)], {});
    assert.deepEqual(o.backends, ['http://a:1', 'http://b:2', 'http://c:3']);
    assert.equal(o.port, 9000);
    assert.equal(o.hostname, '127.0.0.1');
    assert.equal(o.redisUrl, null);
    assert.deepEqual(o.options?.defaultTenantLimits, { rpm: 60 });
    assert.equal(o.jwt?.issuer, 'https://idp');
    assert.equal(o.metricsPort, null, 'no metrics unless asked');
    const e = parseGatewayArgs([], { SWITCHBOARD_BACKENDS: 'http://x:1', SWITCHBOARD_SERVICE_KEY: KEY, REDIS_URL: 'redis://127.0.0.1:6379', SWITCHBOARD_ADMIN_TOKEN: 'adm', SWITCHBOARD_GATEWAY_METRICS_PORT: '9100' });
    assert.equal(e.metricsPort, 9100);
    assert.deepEqual(e.backends, ['http://x:1']);
    assert.equal(e.port, 8000);
    assert.equal(e.redisUrl, 'redis://127.0.0.1:6379');
    assert.equal(e.adminToken, 'adm');
  });

  it('says what is wrong', () => {
    assert.throws(() => parseGatewayArgs(['--service-key', KEY], {}), /--backend/);
    assert.throws(() => parseGatewayArgs(['--backend', 'http://a:1'], {}), /--service-key/);
    assert.throws(() => parseGatewayArgs(['--backend', 'not a url', '--service-key', KEY], {}), GatewayConfigError);
    assert.throws(() => parseGatewayArgs(['--bakend', 'http://a:1'], {}), /unknown option --bakend/);
    assert.throws(() => parseGatewayArgs(['--backend', 'http://a:1', '--service-key', KEY, '--port', '-1'], {}), /--port/);
    assert.throws(() => parseGatewayArgs(['--backend', 'http://a:1', '--service-key', KEY, '--jwt-issuer', 'x'], {}), /--jwt-audience/);
    assert.match(gatewayHelp(), /--redis-url/);
    assert.throws(() => parseGatewayArgs(['--backend', 'http://a:1', '--service-key', KEY, '--max-uploads-per-tenant', '0'], {}), /--max-uploads-per-tenant: must be at least 1/);
    assert.throws(() => parseGatewayArgs(['--backend', 'http://a:1', '--service-key', KEY, '--json-threads', 'two'], {}), /--json-threads/);
  });

  it('--max-uploads-per-tenant and --json-threads (and their environment variables)', () => {
    const base = ['--backend', 'http://a:1', '--service-key', KEY];
    const d = parseGatewayArgs(base, {});
    assert.equal(d.options?.maxUploadsPerTenant, undefined, 'the default (2) applies');
    assert.equal(d.jsonOffload, undefined, 'the default pool applies');
    const f = parseGatewayArgs([...base, '--max-uploads-per-tenant', '5', '--json-threads', '3'], {});
    assert.equal(f.options?.maxUploadsPerTenant, 5);
    assert.deepEqual(f.jsonOffload, { threads: 3 });
    assert.equal(parseGatewayArgs([...base, '--json-threads', '0'], {}).jsonOffload, null, '0: every body inline');
    const e = parseGatewayArgs(base, { SWITCHBOARD_MAX_UPLOADS_PER_TENANT: '1', SWITCHBOARD_GATEWAY_JSON_THREADS: '2' });
    assert.equal(e.options?.maxUploadsPerTenant, 1);
    assert.deepEqual(e.jsonOffload, { threads: 2 });
    assert.match(gatewayHelp(), /--max-uploads-per-tenant[^]*SWITCHBOARD_MAX_UPLOADS_PER_TENANT/);
  });

  it('--max-uploads-per-tenant 1: a second upload while one is in flight gets 429', async () => {
    const up = await startStandIn();
    const parsed = parseGatewayArgs(['--backend', up.url, '--service-key', KEY, '--admin-token', 'adm', '--port', '0', '--max-uploads-per-tenant', '1'], {});
    const gw = await startGateway({ ...parsed, log: () => {} });
    try {
      const k = await fetch(`${gw.url}/admin/keys`, { method: 'POST', headers: { authorization: 'Bearer adm' }, body: JSON.stringify({ tenant: 'acme' }) });
      const key = ((await k.json()) as { key: string }).key;
      const u = new URL(gw.url);
      let finish!: () => void;
      const held = new Promise<number>((resolve, reject) => {
        const req = request({ host: u.hostname, port: u.port, method: 'PUT', path: '/v1/adapters/one/adapter_model.safetensors', headers: { authorization: `Bearer ${key}`, 'transfer-encoding': 'chunked' } }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
        req.write(Buffer.alloc(1024));
        finish = () => req.end(Buffer.alloc(1024));
      });
      // The first upload is in flight once the stand-in sees it.
      for (let i = 0; i < 100 && !up.hits.get('/adapters/tenants/acme/one/adapter_model.safetensors'); i++) await new Promise((r) => setTimeout(r, 20));
      const second = await fetch(`${gw.url}/v1/adapters/two/adapter_model.safetensors`, { method: 'PUT', headers: { authorization: `Bearer ${key}` }, body: new Uint8Array(16) });
      assert.equal(second.status, 429, await second.clone().text());
      assert.equal(((await second.json()) as { error: { code: string } }).error.code, 'too_many_uploads');
      finish();
      await held;
    } finally {
      await gw.close();
      await up.close();
    }
  });

  it('takes secrets from files and the environment first, and warns once for each on the command line', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sb-gw-secrets-'));
    try {
      writeFileSync(join(dir, 'key'), `${KEY}\n`);
      writeFileSync(join(dir, 'admin'), 'adm-from-file');
      const warnings: string[] = [];
      const f = parseGatewayArgs(['--backend', 'http://a:1', '--service-key-file', join(dir, 'key'), '--admin-token-file', join(dir, 'admin')], {}, (m) => warnings.push(m));
      assert.equal(f.serviceKey, KEY, 'the trailing newline of the file is not part of the key');
      assert.equal(f.adminToken, 'adm-from-file');
      assert.equal(warnings.length, 0);
      const e = parseGatewayArgs(['--backend', 'http://a:1'], { SWITCHBOARD_SERVICE_KEY_FILE: join(dir, 'key'), SWITCHBOARD_ADMIN_TOKEN: 'adm-env' }, (m) => warnings.push(m));
      assert.equal(e.serviceKey, KEY);
      assert.equal(e.adminToken, 'adm-env');
      assert.equal(warnings.length, 0);
      parseGatewayArgs(['--backend', 'http://a:1', '--service-key', KEY, '--admin-token', 'adm'], {}, (m) => warnings.push(m));
      assert.equal(warnings.length, 2);
      assert.match(warnings[0]!, /--service-key on the command line shows in `ps`.*--service-key-file/);
      assert.throws(() => parseGatewayArgs(['--backend', 'http://a:1', '--service-key-file', join(dir, 'none')], {}), /--service-key-file: cannot read .*ENOENT/);
      assert.equal(parseGatewayArgs(['--version'], {}).version, true);
      writeFileSync(join(dir, 'redis'), 'redis://:pw@127.0.0.1:6379\n');
      const before = warnings.length;
      assert.equal(parseGatewayArgs(['--backend', 'http://a:1', '--redis-url-file', join(dir, 'redis')], { SWITCHBOARD_SERVICE_KEY: KEY }, (m) => warnings.push(m)).redisUrl, 'redis://:pw@127.0.0.1:6379');
      parseGatewayArgs(['--backend', 'http://a:1', '--redis-url', 'redis://127.0.0.1:6379'], { SWITCHBOARD_SERVICE_KEY: KEY }, (m) => warnings.push(m));
      assert.equal(warnings.length, before, 'a Redis URL without a password is no secret');
      parseGatewayArgs(['--backend', 'http://a:1', '--redis-url', 'redis://:pw@127.0.0.1:6379'], { SWITCHBOARD_SERVICE_KEY: KEY }, (m) => warnings.push(m));
      assert.equal(warnings.length, before + 1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('writes one access log line per request, never a credential', async () => {
    const up = await startStandIn();
    const entries: GatewayAccessEntry[] = [];
    const gw = await startGateway({ backends: [up.url], serviceKey: KEY, adminToken: 'adm-secret', port: 0, log: () => {}, accessLog: (e) => entries.push(e) });
    try {
      const k = await fetch(`${gw.url}/admin/keys`, { method: 'POST', headers: { authorization: 'Bearer adm-secret' }, body: JSON.stringify({ tenant: 'acme' }) });
      const key = ((await k.json()) as { key: string }).key;
      await (await fetch(`${gw.url}/generate`, { method: 'POST', headers: { authorization: `Bearer ${key}` }, body: JSON.stringify({ inputs: 'ok' }) })).text();
      await (await fetch(`${gw.url}/v1/adapters/secret-name/adapter_config.json`, { method: 'PUT', body: '{}' })).text();
      assert.deepEqual(
        entries.map((e) => `${e.method} ${e.route} ${e.status}`),
        ['POST /admin/* 201', 'POST /generate 200', 'PUT /v1/adapters/:name/:file 401'],
      );
      const text = entries.map((e) => formatGatewayAccess(e, false)).join('\n') + entries.map((e) => formatGatewayAccess(e, true)).join('\n');
      for (const secret of [key, 'adm-secret', KEY, 'secret-name']) assert.ok(!text.includes(secret), secret);
      // The generation's line names its tenant and the tokens the backend reported (the stand-in's usage).
      assert.equal(entries[1]!.tenant, 'acme');
      assert.equal(entries[1]!.adapter, null);
      assert.ok(entries[1]!.tokensIn! > 0 && entries[1]!.tokensOut! > 0, JSON.stringify(entries[1]));
      assert.equal(entries[0]!.tenant, null, 'the admin call is no generation');
      assert.match(formatGatewayAccess(entries[1]!, false), /^\[gateway\] POST \/generate 200 tenant=acme in=\d+ out=\d+ [\d.]+ms$/);
      assert.deepEqual(Object.keys(JSON.parse(formatGatewayAccess(entries[1]!, true)) as object), ['time', 'level', 'msg', 'method', 'route', 'status', 'tenant', 'adapter', 'tokens_in', 'tokens_out', 'duration_ms', 'stream']);
    } finally {
      await gw.close();
      await up.close();
    }
  });

  it('serves: gateway/node.ts as a command', async () => {
    const up = await startStandIn();
    const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'node.ts'), 'gateway', '--backend', up.url, '--service-key', KEY, '--admin-token', 'adm', '--port', '0'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let err = '';
        child.stderr!.on('data', (d: Buffer) => {
          err += d.toString();
          const m = /listening on (\S+)/.exec(err);
          if (m) resolve(m[1]!);
        });
        child.once('exit', (code) => reject(new Error(`exited ${code}: ${err}`)));
      });
      const h = await fetch(`${url}/health`);
      assert.equal(h.status, 200);
      // Host is optional in HTTP/1.0: answered in JSON, not with Node's empty 400.
      assert.match(await rawRequest(url, 'GET /health HTTP/1.0\r\n\r\n'), /^HTTP\/1\.1 200 [^]*\r\n\r\n\{/);
      const k = await fetch(`${url}/admin/keys`, { method: 'POST', headers: { authorization: 'Bearer adm' }, body: JSON.stringify({ tenant: 'acme' }) });
      const key = ((await k.json()) as { key: string }).key;
      const g = await fetch(`${url}/generate`, { method: 'POST', headers: { authorization: `Bearer ${key}` }, body: JSON.stringify({ inputs: 'ok' }) });
      assert.equal(g.status, 200);
    } finally {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
      await up.close();
    }
  });
});
