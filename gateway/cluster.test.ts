// `switchboard gateway --workers N` for real: the CLI as a child process with 2 workers on a real
// redis-server in front of a stand-in backend; limits are the gateway's total, /metrics sums the
// workers, every worker logs, a killed worker is replaced, SIGTERM stops them all, a port in use is
// one line.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { Agent, request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { freePort, startRedis, type TestRedis } from '../test/gateway/helpers/redis.ts';
import { startStandIn, type StandIn } from '../test/gateway/helpers/standin.ts';
import { parseGatewayArgs } from './node.ts';

const KEY = 'cluster-service-key-0123456789abcdef-012345';

function launch(args: string[]): { child: ChildProcess; out: () => string; waitFor: (re: RegExp) => Promise<RegExpExecArray> } {
  const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'node.ts'), 'gateway', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const waiters: Array<() => void> = [];
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
    for (const w of waiters.splice(0)) w();
  });
  const waitFor = (re: RegExp) =>
    new Promise<RegExpExecArray>((resolve, reject) => {
      const check = () => {
        const m = re.exec(err);
        if (m) return resolve(m);
        if (child.exitCode !== null) return reject(new Error(`exited ${child.exitCode}: ${err}`));
        waiters.push(check);
      };
      child.once('exit', () => setTimeout(check, 50));
      check();
    });
  return { child, out: () => err, waitFor };
}

/** Pids of a process's children (Linux /proc). */
async function childPids(pid: number): Promise<number[]> {
  const { readFileSync } = await import('node:fs');
  return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
}

describe('switchboard gateway --workers', () => {
  let redis: TestRedis;
  let up: StandIn;
  before(async () => {
    redis = await startRedis();
    up = await startStandIn();
  });
  after(async () => {
    await up.close();
    await redis.stop();
  });

  it('parses --workers and refuses more than one without Redis', () => {
    const base = ['--backend', 'http://a:1', '--service-key', KEY];
    assert.equal(parseGatewayArgs(base, {}).workers, 1);
    assert.throws(() => parseGatewayArgs([...base, '--workers', '2'], {}), /more than one worker needs --redis-url/);
    assert.throws(() => parseGatewayArgs([...base, '--workers', '0', '--redis-url', 'redis://x'], {}), /--workers/);
    assert.equal(parseGatewayArgs([...base, '--workers', '2', '--redis-url', 'redis://x'], {}).workers, 2);
    assert.ok(parseGatewayArgs([...base, '--redis-url', 'redis://x'], { SWITCHBOARD_GATEWAY_WORKERS: 'auto' }).workers >= 1);
  });

  it('2 workers: requests spread over both, an rpm limit is the total, /metrics sums, a dead worker is replaced, SIGTERM stops all', async () => {
    const metricsPort = await freePort();
    const g = launch(['--backend', up.url, '--service-key', KEY, '--admin-token', 'adm', '--port', '0', '--redis-url', redis.url, '--workers', '2', '--metrics-port', String(metricsPort)]);
    try {
      const url = (await g.waitFor(/listening on (\S+) .*2 workers/))[1]!;
      const workers = await childPids(g.child.pid!);
      assert.equal(workers.length, 2, g.out());
      const adm = { authorization: 'Bearer adm', 'content-type': 'application/json' };
      assert.equal((await fetch(`${url}/admin/tenants/acme`, { method: 'PUT', headers: adm, body: JSON.stringify({ limits: { rpm: 10 } }) })).status, 200);
      const key = ((await (await fetch(`${url}/admin/keys`, { method: 'POST', headers: adm, body: JSON.stringify({ tenant: 'acme' }) })).json()) as { key: string }).key;
      // Fresh connections each time, so the primary hands them to both workers in turn.
      const agent = new Agent({ keepAlive: false });
      const statuses: number[] = [];
      for (let i = 0; i < 16; i++) {
        statuses.push(
          await new Promise<number>((resolve, reject) => {
            const u = new URL(`${url}/generate`);
            const req = request({ agent, host: u.hostname, port: u.port, path: u.pathname, method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' } }, (res) => {
              res.resume();
              res.on('end', () => resolve(res.statusCode!));
            });
            req.on('error', reject);
            req.end(JSON.stringify({ inputs: 'hi', parameters: { max_new_tokens: 1 } }));
          }),
        );
      }
      assert.equal(statuses.filter((s) => s === 200).length, 10, `rpm 10 across both workers: ${statuses}`);
      assert.equal(statuses.filter((s) => s === 429).length, 6);
      // Both workers answered (each writes its own access log lines, to the same stderr).
      await g.waitFor(/(POST \/generate 429[^]*){6}/);
      const m = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      const count = (status: number) => Number(new RegExp(`switchboard_gateway_requests_total\\{[^}]*route="/generate"[^}]*status="${status}"[^}]*\\} (\\d+)`).exec(m)?.[1] ?? 0);
      assert.equal(count(200), 10, m.slice(0, 2000));
      assert.equal(count(429), 6);
      // A worker that dies is logged and replaced.
      process.kill(workers[0]!, 'SIGKILL');
      await g.waitFor(new RegExp(`worker ${workers[0]} exited \\(SIGKILL\\): starting another`));
      await g.waitFor(/is serving again/);
      assert.equal((await childPids(g.child.pid!)).length, 2);
      assert.equal((await fetch(`${url}/health`)).status, 200);
      const now = await childPids(g.child.pid!);
      const exited = new Promise<number | null>((r) => g.child.once('exit', (code) => r(code)));
      g.child.kill('SIGTERM');
      assert.equal(await exited, 0, g.out());
      for (const pid of now) assert.throws(() => process.kill(pid, 0), /ESRCH/, `worker ${pid} still runs`);
    } finally {
      if (g.child.exitCode === null) g.child.kill('SIGKILL');
    }
  });

  it('a port in use is one line, and no worker stays', async () => {
    const held = createServer();
    await new Promise<void>((r) => held.listen(0, '127.0.0.1', () => r()));
    const port = (held.address() as { port: number }).port;
    const g = launch(['--backend', up.url, '--service-key', KEY, '--port', String(port), '--redis-url', redis.url, '--workers', '2']);
    try {
      const code = await new Promise<number | null>((r) => g.child.once('exit', (c) => r(c)));
      assert.equal(code, 2, g.out());
      const lines = g.out().split('\n').filter((l) => l.includes('already in use'));
      assert.equal(lines.length, 1, g.out());
      assert.match(lines[0]!, /^switchboard gateway: port \d+ is already in use on 127\.0\.0\.1: .*--port/);
    } finally {
      held.close();
    }
  });

  it('a metrics port in use is one line naming --metrics-port, exit 2', async () => {
    const held = createServer();
    await new Promise<void>((r) => held.listen(0, '127.0.0.1', () => r()));
    const port = (held.address() as { port: number }).port;
    const g = launch(['--backend', up.url, '--service-key', KEY, '--port', '0', '--redis-url', redis.url, '--workers', '2', '--metrics-port', String(port)]);
    try {
      const code = await new Promise<number | null>((r) => g.child.once('exit', (c) => r(c)));
      assert.equal(code, 2, g.out());
      const lines = g.out().split('\n').filter((l) => l.includes('already in use'));
      assert.equal(lines.length, 1, g.out());
      assert.match(lines[0]!, new RegExp(`^switchboard gateway: port ${port} is already in use on 127\\.0\\.0\\.1: .*--metrics-port$`));
    } finally {
      held.close();
    }
  });
});
