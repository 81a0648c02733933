// The GatewayStore contract, run against MemoryStore and against RedisStore on a real
// redis-server; plus what only Redis can show: two clients (two gateway instances) sharing
// limits without overshoot, and behaviour while Redis is down.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startRedis, type TestRedis } from '../../test/gateway/helpers/redis.ts';
import { StoreUnavailableError } from './types.ts';
import { IoRedisClient } from './ioredis-client.ts';
import { MemoryStore } from './memory-store.ts';
import { RedisReplyError, RedisStore } from './redis-store.ts';
import type { ApiKeyRecord, GatewayStore, LimitScope, SettleRequest } from './types.ts';

const keyRecord = (id: string, tenant: string): ApiKeyRecord => ({
  id,
  tenant,
  name: null,
  scopes: null,
  limits: null,
  prefix: 'sk-sb-abc',
  created_at: new Date().toISOString(),
  expires_at: null,
  revoked_at: null,
});

const settleReq = (tenant: string, scopes: LimitScope[], reserved: number, used: number, leaseId: string | null = null): SettleRequest => ({
  tenant,
  scopes,
  reserved,
  used,
  leaseId,
  usage: { keyId: 'key_1', promptTokens: Math.floor(used / 2), completionTokens: used - Math.floor(used / 2) },
  day: '2026-01-02',
});

function contract(name: string, make: () => Promise<GatewayStore>) {
  describe(`${name}: store contract`, () => {
    let store: GatewayStore;
    let n = 0;
    // Each test gets its own tenant so counters never leak between tests.
    const tenant = () => `t${++n}-${Math.random().toString(36).slice(2, 8)}`;
    before(async () => {
      store = await make();
    });
    after(async () => {
      await store.close();
    });

    it('keys: create, find by hash, list, revoke', async () => {
      const t = tenant();
      await store.createKey('h1' + t, keyRecord('key_a' + t, t));
      await store.createKey('h2' + t, keyRecord('key_b' + t, t));
      assert.equal((await store.findKeyByHash('h1' + t))?.id, 'key_a' + t);
      assert.equal((await store.listKeys(t)).length, 2);
      const revoked = await store.revokeKey('key_a' + t, '2026-01-01T00:00:00Z');
      assert.equal(revoked?.revoked_at, '2026-01-01T00:00:00Z');
      assert.equal(await store.findKeyByHash('h1' + t), null);
      assert.equal((await store.getKey('key_a' + t))?.revoked_at, '2026-01-01T00:00:00Z');
      assert.equal((await store.findKeyByHash('h2' + t))?.id, 'key_b' + t);
      assert.equal(await store.revokeKey('nope', 'x'), null);
    });

    it('a reservation naming a revoked key is refused (reason "revoked"), with or without limits; other keys and JWTs are not', async () => {
      const t = tenant();
      await store.createKey('h1' + t, keyRecord('key_a' + t, t));
      await store.createKey('h2' + t, keyRecord('key_b' + t, t));
      const limited = [{ id: 'tenant', limits: { rpm: 10 } }];
      for (const scopes of [[], limited]) {
        assert.equal((await store.acquire({ tenant: t, scopes, tokens: 1, leaseId: null, leaseTtlMs: 0, keyId: 'key_a' + t })).ok, true);
      }
      await store.revokeKey('key_a' + t, '2026-01-01T00:00:00Z');
      for (const scopes of [[], limited]) {
        const r = await store.acquire({ tenant: t, scopes, tokens: 1, leaseId: null, leaseTtlMs: 0, keyId: 'key_a' + t });
        assert.deepEqual(r, { ok: false, reason: 'revoked', scope: '', limit: 0, retryAfterMs: 0 });
        assert.equal((await store.acquire({ tenant: t, scopes, tokens: 1, leaseId: null, leaseTtlMs: 0, keyId: 'key_b' + t })).ok, true);
        assert.equal((await store.acquire({ tenant: t, scopes, tokens: 1, leaseId: null, leaseTtlMs: 0, keyId: null })).ok, true);
      }
    });

    it('tenants, adapters and shared adapters', async () => {
      const t = tenant();
      await store.putTenant({ id: t, limits: { rpm: 5 }, created_at: 'now' });
      assert.deepEqual((await store.getTenant(t))?.limits, { rpm: 5 });
      assert.ok((await store.listTenants()).some((x) => x.id === t));
      const rec = { tenant: t, name: 'a1', source: 'upload' as const, status: 'ready' as const, files: [], repo: null, token_sealed: null, created_at: 'x', updated_at: 'x' };
      await store.putAdapter(rec);
      await store.putAdapter({ ...rec, name: 'a0' });
      assert.deepEqual((await store.listAdapters(t)).map((a) => a.name).sort(), ['a0', 'a1']);
      assert.equal((await store.getAdapter(t, 'a1'))?.name, 'a1');
      assert.equal(await store.getAdapter('other', 'a1'), null);
      assert.equal(await store.deleteAdapter(t, 'a1'), true);
      assert.equal(await store.deleteAdapter(t, 'a1'), false);
      await store.putShared({ name: `org/${t}`, source: 'hub', adapter_id: `org/${t}`, token_sealed: null, created_at: 'x' });
      assert.equal((await store.getShared(`org/${t}`))?.adapter_id, `org/${t}`);
      assert.equal(await store.deleteShared(`org/${t}`), true);
    });

    it('rpm: a bucket of N per minute, then 429 with the wait until the next request', async () => {
      const t = tenant();
      const scopes = [{ id: 'tenant', limits: { rpm: 3 } }];
      for (let i = 0; i < 3; i++) {
        const r = await store.acquire({ tenant: t, scopes, tokens: 0, leaseId: null, leaseTtlMs: 1000 });
        assert.equal(r.ok, true);
        if (r.ok) assert.equal(r.requests?.remaining, 2 - i);
      }
      const r = await store.acquire({ tenant: t, scopes, tokens: 0, leaseId: null, leaseTtlMs: 1000 });
      assert.equal(r.ok, false);
      if (!r.ok) {
        assert.equal(r.reason, 'rpm');
        assert.equal(r.limit, 3);
        assert.ok(r.retryAfterMs > 15_000 && r.retryAfterMs <= 20_000, String(r.retryAfterMs));
      }
    });

    it('tpm: reserve the budget, settle the real count, refund the rest', async () => {
      const t = tenant();
      const scopes = [{ id: 'tenant', limits: { tpm: 100 } }];
      const a = await store.acquire({ tenant: t, scopes, tokens: 60, leaseId: null, leaseTtlMs: 1000 });
      assert.equal(a.ok, true);
      const b = await store.acquire({ tenant: t, scopes, tokens: 60, leaseId: null, leaseTtlMs: 1000 });
      assert.equal(b.ok, false);
      if (!b.ok) assert.equal(b.reason, 'tpm');
      await store.settle(settleReq(t, scopes, 60, 10));
      const c = await store.acquire({ tenant: t, scopes, tokens: 60, leaseId: null, leaseTtlMs: 1000 });
      assert.equal(c.ok, true);
      if (c.ok) assert.ok(c.tokens!.remaining >= 30 && c.tokens!.remaining <= 31, String(c.tokens!.remaining));
      const usage = await store.getUsage(t, ['2026-01-02', '2026-01-03']);
      assert.deepEqual(usage.total, { requests: 1, prompt_tokens: 5, completion_tokens: 5, total_tokens: 10 });
      assert.equal(usage.days[0]!.total_tokens, 10);
      assert.equal(usage.days[1]!.requests, 0);
      assert.deepEqual(usage.keys, [{ key_id: 'key_1', requests: 1, prompt_tokens: 5, completion_tokens: 5, total_tokens: 10 }]);
    });

    it('several scopes: all pass or none is charged', async () => {
      const t = tenant();
      const scopes = [
        { id: 'key:k1', limits: { rpm: 10 } },
        { id: 'tenant', limits: { rpm: 1 } },
      ];
      assert.equal((await store.acquire({ tenant: t, scopes, tokens: 0, leaseId: null, leaseTtlMs: 1000 })).ok, true);
      const r = await store.acquire({ tenant: t, scopes, tokens: 0, leaseId: null, leaseTtlMs: 1000 });
      assert.equal(r.ok, false);
      if (!r.ok) assert.equal(r.scope, 'tenant');
      // The key's bucket was not charged by the refused request: 9 left.
      const k = await store.acquire({ tenant: t, scopes: [scopes[0]!], tokens: 0, leaseId: null, leaseTtlMs: 1000 });
      assert.equal(k.ok && k.requests?.remaining, 8);
    });

    it('concurrent streams: leases, release on settle, expiry', async () => {
      const t = tenant();
      const scopes = [{ id: 'tenant', limits: { concurrent_streams: 2 } }];
      assert.equal((await store.acquire({ tenant: t, scopes, tokens: 0, leaseId: 'l1', leaseTtlMs: 60_000 })).ok, true);
      assert.equal((await store.acquire({ tenant: t, scopes, tokens: 0, leaseId: 'l2', leaseTtlMs: 300 })).ok, true);
      const r = await store.acquire({ tenant: t, scopes, tokens: 0, leaseId: 'l3', leaseTtlMs: 60_000 });
      assert.equal(r.ok, false);
      if (!r.ok) assert.equal(r.reason, 'concurrency');
      // Non-stream requests take no slot.
      assert.equal((await store.acquire({ tenant: t, scopes, tokens: 0, leaseId: null, leaseTtlMs: 0 })).ok, true);
      await store.settle(settleReq(t, scopes, 0, 0, 'l1'));
      assert.equal((await store.acquire({ tenant: t, scopes, tokens: 0, leaseId: 'l3', leaseTtlMs: 60_000 })).ok, true);
      // l2's lease was never renewed: it expires and frees its slot (a gateway that died mid-stream).
      await new Promise((r) => setTimeout(r, 400));
      await store.renewLease(t, scopes, 'l3', 60_000);
      assert.equal((await store.acquire({ tenant: t, scopes, tokens: 0, leaseId: 'l4', leaseTtlMs: 60_000 })).ok, true);
    });
  });
}

contract('MemoryStore', async () => new MemoryStore());

describe('RedisStore on a real redis-server', () => {
  let redis: TestRedis;
  const clients: IoRedisClient[] = [];
  const newStore = async () => {
    const c = new IoRedisClient(redis.url);
    clients.push(c);
    await c.connect();
    return new RedisStore(c);
  };
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis.stop();
  });

  contract('RedisStore', () => newStore());

  it('two instances, one limit: 300 concurrent requests at rpm 50 admit exactly 50', async () => {
    const [a, b] = [await newStore(), await newStore()];
    const scopes = [{ id: 'tenant', limits: { rpm: 50 } }];
    const results = await Promise.all(
      Array.from({ length: 300 }, (_, i) => (i % 2 ? a : b).acquire({ tenant: 'race', scopes, tokens: 0, leaseId: null, leaseTtlMs: 0 })),
    );
    assert.equal(results.filter((r) => r.ok).length, 50);
    await Promise.all([a.close(), b.close()]);
  });

  it('two instances, one token budget: reservations never add up past tpm', async () => {
    const [a, b] = [await newStore(), await newStore()];
    const scopes = [{ id: 'tenant', limits: { tpm: 1000 } }];
    const costs = Array.from({ length: 200 }, (_, i) => 10 + ((i * 37) % 90));
    const results = await Promise.all(costs.map((tokens, i) => (i % 2 ? a : b).acquire({ tenant: 'race-tpm', scopes, tokens, leaseId: null, leaseTtlMs: 0 })));
    const admitted = costs.filter((_, i) => results[i]!.ok).reduce((x, y) => x + y, 0);
    assert.ok(admitted <= 1000 + 1, `admitted ${admitted} tokens`); // +1: refill during the burst
    assert.ok(admitted > 900, `admitted only ${admitted} tokens`);
    await Promise.all([a.close(), b.close()]);
  });

  it('commands of one event-loop turn go out as one pipeline: replies in order, a failing command fails alone, NOSCRIPT falls back per command', async () => {
    const c = new IoRedisClient(redis.url);
    clients.push(c);
    await c.connect();
    await c.command(['SET', 'pipe:str', 'not a number']);
    const incrs = Array.from({ length: 100 }, () => c.command(['INCR', 'pipe:n']));
    const bad = c.command(['INCR', 'pipe:str']);
    const more = c.command(['INCRBY', 'pipe:n', 1000]);
    assert.deepEqual(await Promise.all(incrs), Array.from({ length: 100 }, (_, i) => i + 1));
    await assert.rejects(bad, RedisReplyError);
    assert.equal(await more, 1100);
    // Scripts unknown to a fresh Redis: every EVALSHA of the batch gets NOSCRIPT and retries with EVAL.
    await c.command(['SCRIPT', 'FLUSH']);
    const store = new RedisStore(c);
    const scopes = [{ id: 'tenant', limits: { rpm: 10 } }];
    const results = await Promise.all(Array.from({ length: 15 }, () => store.acquire({ tenant: 'pipe', scopes, tokens: 0, leaseId: null, leaseTtlMs: 0 })));
    assert.equal(results.filter((r) => r.ok).length, 10);
  });

  it('Redis down: calls fail fast with StoreUnavailableError; settlements queue and replay', async () => {
    const store = await newStore();
    const scopes = [{ id: 'tenant', limits: { tpm: 1000 } }];
    assert.equal((await store.acquire({ tenant: 'down', scopes, tokens: 100, leaseId: null, leaseTtlMs: 0 })).ok, true);
    await redis.stop();
    const t0 = performance.now();
    await assert.rejects(store.acquire({ tenant: 'down', scopes, tokens: 1, leaseId: null, leaseTtlMs: 0 }), StoreUnavailableError);
    await assert.rejects(store.findKeyByHash('x'), StoreUnavailableError);
    assert.ok(performance.now() - t0 < 2500, `took ${performance.now() - t0} ms`);
    assert.equal(await store.ping(), false);
    // A request that was in flight when Redis died still settles: queued, not lost.
    await store.settle(settleReq('down', scopes, 100, 40));
    assert.equal(store.pendingSettles, 1);
    await redis.start(); // a fresh, empty Redis (no persistence)
    for (let i = 0; i < 50 && !(await store.ping()); i++) await new Promise((r) => setTimeout(r, 100));
    await store.flushPending();
    assert.equal(store.pendingSettles, 0);
    const usage = await store.getUsage('down', ['2026-01-02']);
    assert.equal(usage.total.total_tokens, 40);
    assert.equal(usage.total.requests, 1);
    await store.close();
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.close().catch(() => {})));
  });
});
