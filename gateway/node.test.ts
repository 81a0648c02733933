// The Node entry: `switchboard gateway` flags (and their environment variables), and the CLI
// serving for real (a child process talking to a stand-in backend on loopback).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { startStandIn } from '../test/gateway/helpers/standin.ts';
import { GatewayConfigError, gatewayHelp, parseGatewayArgs } from './node.ts';

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
