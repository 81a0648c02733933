// Replica choice: rendezvous hashing (stable, even, minimal movement), bounded load, health.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import { Router } from './routing.ts';

const urls = ['http://10.0.0.1:8080', 'http://10.0.0.2:8080', 'http://10.0.0.3:8080', 'http://10.0.0.4:8080'];

describe('rendezvous hashing with bounded load', () => {
  it('is deterministic and spreads adapters evenly', () => {
    const r = new Router(urls);
    const counts = new Map<string, number>();
    for (let i = 0; i < 4000; i++) {
      const key = `local:adapter-${i}`;
      const first = r.plan(key)[0]!.url;
      assert.equal(r.plan(key)[0]!.url, first);
      counts.set(first, (counts.get(first) ?? 0) + 1);
    }
    for (const u of urls) assert.ok((counts.get(u) ?? 0) > 800 && (counts.get(u) ?? 0) < 1200, `${u}: ${counts.get(u)}`);
  });

  it('losing a replica moves only the adapters that lived on it', () => {
    const all = new Router(urls);
    const three = new Router(urls.slice(0, 3));
    let moved = 0;
    for (let i = 0; i < 2000; i++) {
      const key = `hub:org/a${i}`;
      const before = all.plan(key)[0]!.url;
      const after = three.plan(key)[0]!.url;
      if (before !== urls[3]) assert.equal(after, before);
      else moved++;
    }
    assert.ok(moved > 350 && moved < 650, String(moved));
  });

  it('an unhealthy replica is skipped, and tried last', () => {
    const r = new Router(urls);
    const key = 'local:x';
    const preferred = r.plan(key)[0]!;
    r.reportFailure(preferred, 'connection refused');
    const plan = r.plan(key);
    assert.notEqual(plan[0], preferred);
    assert.equal(plan.at(-1), preferred);
    r.reportSuccess(preferred);
    assert.equal(r.plan(key)[0], preferred);
  });

  it('an overloaded replica passes its adapter to the next one in the adapter order', () => {
    const r = new Router(urls, { loadFactor: 1.25, minLoad: 2 });
    const key = 'local:hot';
    const order = r.rendezvous(key);
    // 8 requests in flight, all on the preferred replica: its cap is ceil(1.25 * 9 / 4) = 3.
    order[0]!.inFlight = 8;
    assert.equal(r.plan(key)[0], order[1]);
    order[0]!.inFlight = 2;
    order[1]!.inFlight = 6;
    assert.equal(r.plan(key)[0], order[0], 'within its bound it keeps the adapter');
    // Below minLoad a replica is never "overloaded", whatever the others do.
    const calm = new Router(urls, { loadFactor: 1.25, minLoad: 16 });
    const o2 = calm.rendezvous(key);
    o2[0]!.inFlight = 15;
    assert.equal(calm.plan(key)[0], o2[0]);
    o2[0]!.inFlight = 16;
    assert.equal(calm.plan(key)[0], o2[1]);
  });

  it('base-model requests go to the least loaded replica', () => {
    const r = new Router(urls);
    r.backends[0]!.inFlight = 3;
    r.backends[1]!.inFlight = 1;
    r.backends[2]!.inFlight = 0;
    r.backends[3]!.inFlight = 2;
    assert.equal(r.plan(null)[0], r.backends[2]);
  });
});

describe('health checks', () => {
  const servers: Server[] = [];
  after(() => Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r())))));
  const serve = async (status: number) => {
    const s = createServer((req, res) => res.writeHead(req.url === '/health' ? status : 404).end('{}'));
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
    return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
  };

  it('GET /health marks replicas up and down', async () => {
    const up = await serve(200);
    const sick = await serve(503);
    const closed = await serve(200);
    await new Promise<void>((r) => servers.pop()!.close(() => r()));
    const r = new Router([up, sick, closed], { healthTimeoutMs: 500 });
    await r.checkAll();
    // Nothing listening: down at once. An error status: only after 3 probes in a row.
    assert.deepEqual(r.backends.map((b) => b.healthy), [true, true, false]);
    await r.checkAll();
    await r.checkAll();
    assert.deepEqual(r.backends.map((b) => b.healthy), [true, false, false]);
    assert.match(r.backends[1]!.lastError ?? '', /503/);
    assert.equal(r.healthyCount, 1);
  });

  it('one slow probe under load does not take the only replica out; answered requests count as liveness', async () => {
    // A replica whose /health stalls now and then (as under a burst of large prompts).
    let stall = 0;
    const s = createServer((req, res) => {
      if (req.url === '/health' && stall > 0) {
        stall--;
        setTimeout(() => res.writeHead(200).end('{}'), 400);
        return;
      }
      res.writeHead(200).end('{}');
    });
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
    const url = `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
    const r = new Router([url], { healthTimeoutMs: 100, healthIntervalMs: 10_000 });
    stall = 2;
    await r.checkAll();
    await r.checkAll();
    assert.equal(r.healthyCount, 1, 'two slow probes in a row are not an outage');
    await r.checkAll();
    assert.equal(r.backends[0]!.consecutiveFailures, 0, 'a good probe resets the count');
    // Proxied requests answered recently outvote failing probes.
    r.reportAnswer(r.backends[0]!);
    stall = 5;
    for (let i = 0; i < 5; i++) await r.checkAll();
    assert.equal(r.healthyCount, 1);
    // Without recent answers, three failures in a row do take it out, and one good probe brings it back.
    r.backends[0]!.lastAnswerAt = 0;
    stall = 3;
    for (let i = 0; i < 3; i++) await r.checkAll();
    assert.equal(r.healthyCount, 0);
    await r.checkAll();
    assert.equal(r.healthyCount, 1);
  });
});
