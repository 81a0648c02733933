// The shared store: every gateway instance talks to one Redis. Runtime-agnostic: it speaks
// Redis through a `RedisLike` (one command in, one reply out), which is ioredis on Node
// (store/ioredis-client.ts) and an Upstash-style REST client on Workers (store/rest-client.ts).
// Rate limits and usage are Lua scripts (store/redis-scripts.ts), so they are atomic across
// instances.
//
// Redis down: every call fails fast with StoreUnavailableError (the app answers 503, fail
// closed), except settlements, which are queued in memory (bounded) and replayed when Redis
// answers again, so usage is not lost and leases are released (or expire on their own).
import { limitValue, rateInfo } from '../limits.ts';
import { sha1Hex } from '../lib/crypto.ts';
import { ACQUIRE, RENEW, SETTLE } from './redis-scripts.ts';
import {
  StoreUnavailableError,
  type AcquireRequest,
  type AcquireResult,
  type ApiKeyRecord,
  type GatewayStore,
  type LimitScope,
  type SettleRequest,
  type SharedAdapterRecord,
  type TenantAdapterRecord,
  type TenantRecord,
  type UsageCounters,
  type UsageReport,
} from './types.ts';

/** An error Redis itself answered (a bad command, NOSCRIPT...), as opposed to no answer at all. */
export class RedisReplyError extends Error {}

export interface RedisLike {
  /**
   * Runs one command. Throws RedisReplyError for error replies, anything else when unreachable.
   * `deferrable`: nobody waits for the reply (settlements), so a client may hold the command a few
   * milliseconds to send it with the next batch instead of a write of its own.
   */
  command(args: Array<string | number>, opts?: { deferrable?: boolean }): Promise<unknown>;
  close(): Promise<void>;
}

class Script {
  private sha: string | null = null;
  private pendingSha: Promise<string> | null = null;
  constructor(readonly source: string) {}

  async run(redis: RedisLike, keys: string[], args: Array<string | number>, opts?: { deferrable?: boolean }): Promise<unknown> {
    // The digest is awaited once; every later call reads it without a promise of its own.
    const sha = this.sha ?? (this.sha = await (this.pendingSha ??= sha1Hex(this.source)));
    try {
      return await redis.command(['EVALSHA', sha, keys.length, ...keys, ...args], opts);
    } catch (err) {
      if (err instanceof RedisReplyError && /NOSCRIPT/.test(err.message)) {
        return redis.command(['EVAL', this.source, keys.length, ...keys, ...args], opts);
      }
      throw err;
    }
  }
}

const acquireScript = new Script(ACQUIRE);
const settleScript = new Script(SETTLE);
const renewScript = new Script(RENEW);

function flatToObject(reply: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (Array.isArray(reply)) {
    for (let i = 0; i + 1 < reply.length; i += 2) out[String(reply[i])] = String(reply[i + 1]);
  } else if (reply && typeof reply === 'object') {
    for (const [k, v] of Object.entries(reply)) out[k] = String(v);
  }
  return out;
}

function counters(h: Record<string, string>, prefix = ''): UsageCounters {
  const p = Number(h[`${prefix}prompt_tokens`] ?? 0);
  const c = Number(h[`${prefix}completion_tokens`] ?? 0);
  return { requests: Number(h[`${prefix}requests`] ?? 0), prompt_tokens: p, completion_tokens: c, total_tokens: p + c };
}

export interface RedisStoreOptions {
  /** Key prefix (several deployments may share one Redis). */
  prefix?: string;
  /** How long per-day usage is kept. */
  usageDays?: number;
  /** Settlements kept while Redis is down. */
  maxPendingSettles?: number;
  log?: (msg: string) => void;
}

export class RedisStore implements GatewayStore {
  readonly kind = 'redis' as const;
  private readonly p: string;
  private readonly usageTtlSec: number;
  private readonly pending: SettleRequest[] = [];
  private readonly maxPending: number;
  private flushing: Promise<void> | null = null;
  private flushTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly log: (msg: string) => void;
  /** Settlements dropped because the queue was full while Redis was down. */
  droppedSettles = 0;

  constructor(
    private readonly redis: RedisLike,
    opts: RedisStoreOptions = {},
  ) {
    this.p = opts.prefix ?? 'sb';
    this.usageTtlSec = (opts.usageDays ?? 400) * 86400;
    this.maxPending = opts.maxPendingSettles ?? 10_000;
    this.log = opts.log ?? (() => {});
  }

  /** Settlements waiting for Redis to come back. */
  get pendingSettles(): number {
    return this.pending.length;
  }

  private async cmd(args: Array<string | number>): Promise<unknown> {
    try {
      return await this.redis.command(args);
    } catch (err) {
      throw this.wrap(err);
    }
  }

  private async script(s: Script, keys: string[], args: Array<string | number>, opts?: { deferrable?: boolean }): Promise<unknown> {
    try {
      return await s.run(this.redis, keys, args, opts);
    } catch (err) {
      throw this.wrap(err);
    }
  }

  private wrap(err: unknown): Error {
    if (err instanceof RedisReplyError) return err;
    if (err instanceof StoreUnavailableError) return err;
    return new StoreUnavailableError(`redis unavailable: ${(err as Error)?.message ?? String(err)}`);
  }

  private async getJson<T>(key: string): Promise<T | null> {
    const v = await this.cmd(['GET', key]);
    return typeof v === 'string' ? (JSON.parse(v) as T) : null;
  }

  // --- keys -------------------------------------------------------------------------------

  private keyHashKey(hash: string) {
    return `${this.p}:key:h:${hash}`;
  }
  private keyIdKey(id: string) {
    return `${this.p}:key:id:${id}`;
  }

  async createKey(hash: string, record: ApiKeyRecord): Promise<void> {
    await this.cmd(['SET', this.keyIdKey(record.id), JSON.stringify({ hash, record })]);
    await this.cmd(['SADD', `${this.p}:keys`, record.id]);
    await this.cmd(['SADD', `${this.p}:tenant-keys:${record.tenant}`, record.id]);
    await this.cmd(['SET', this.keyHashKey(hash), JSON.stringify(record)]);
  }

  async findKeyByHash(hash: string): Promise<ApiKeyRecord | null> {
    return this.getJson<ApiKeyRecord>(this.keyHashKey(hash));
  }

  async getKey(id: string): Promise<ApiKeyRecord | null> {
    return (await this.getJson<{ record: ApiKeyRecord }>(this.keyIdKey(id)))?.record ?? null;
  }

  async listKeys(tenant?: string): Promise<ApiKeyRecord[]> {
    const ids = (await this.cmd(['SMEMBERS', tenant ? `${this.p}:tenant-keys:${tenant}` : `${this.p}:keys`])) as string[];
    const out = await Promise.all(ids.map((id) => this.getKey(id)));
    return out.filter((r): r is ApiKeyRecord => r !== null).sort((a, b) => a.created_at.localeCompare(b.created_at));
  }

  async revokeKey(id: string, at: string): Promise<ApiKeyRecord | null> {
    const e = await this.getJson<{ hash: string; record: ApiKeyRecord }>(this.keyIdKey(id));
    if (!e) return null;
    // The revoked mark goes first: from that moment on no reservation takes the key, even on an
    // instance that cached its record; then the hash entry: no fresh lookup finds it.
    await this.cmd(['SADD', `${this.t(e.record.tenant)}:revoked`, id]);
    await this.cmd(['DEL', this.keyHashKey(e.hash)]);
    if (!e.record.revoked_at) e.record.revoked_at = at;
    await this.cmd(['SET', this.keyIdKey(id), JSON.stringify(e)]);
    return e.record;
  }

  // --- tenants ----------------------------------------------------------------------------

  async getTenant(id: string): Promise<TenantRecord | null> {
    return this.getJson<TenantRecord>(`${this.p}:tenant:${id}`);
  }

  async putTenant(record: TenantRecord): Promise<void> {
    await this.cmd(['SET', `${this.p}:tenant:${record.id}`, JSON.stringify(record)]);
    await this.cmd(['SADD', `${this.p}:tenants`, record.id]);
  }

  async listTenants(): Promise<TenantRecord[]> {
    const ids = (await this.cmd(['SMEMBERS', `${this.p}:tenants`])) as string[];
    const out = await Promise.all(ids.map((id) => this.getTenant(id)));
    return out.filter((r): r is TenantRecord => r !== null).sort((a, b) => a.id.localeCompare(b.id));
  }

  // --- adapters ---------------------------------------------------------------------------

  async getAdapter(tenant: string, name: string): Promise<TenantAdapterRecord | null> {
    const v = await this.cmd(['HGET', `${this.p}:adapters:${tenant}`, name]);
    return typeof v === 'string' ? (JSON.parse(v) as TenantAdapterRecord) : null;
  }

  async putAdapter(record: TenantAdapterRecord): Promise<void> {
    await this.cmd(['HSET', `${this.p}:adapters:${record.tenant}`, record.name, JSON.stringify(record)]);
  }

  async deleteAdapter(tenant: string, name: string): Promise<boolean> {
    return Number(await this.cmd(['HDEL', `${this.p}:adapters:${tenant}`, name])) > 0;
  }

  async listAdapters(tenant: string): Promise<TenantAdapterRecord[]> {
    const h = flatToObject(await this.cmd(['HGETALL', `${this.p}:adapters:${tenant}`]));
    return Object.values(h)
      .map((v) => JSON.parse(v) as TenantAdapterRecord)
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  async getShared(name: string): Promise<SharedAdapterRecord | null> {
    const v = await this.cmd(['HGET', `${this.p}:shared-adapters`, name]);
    return typeof v === 'string' ? (JSON.parse(v) as SharedAdapterRecord) : null;
  }

  async putShared(record: SharedAdapterRecord): Promise<void> {
    await this.cmd(['HSET', `${this.p}:shared-adapters`, record.name, JSON.stringify(record)]);
  }

  async deleteShared(name: string): Promise<boolean> {
    return Number(await this.cmd(['HDEL', `${this.p}:shared-adapters`, name])) > 0;
  }

  async listShared(): Promise<SharedAdapterRecord[]> {
    const h = flatToObject(await this.cmd(['HGETALL', `${this.p}:shared-adapters`]));
    return Object.values(h)
      .map((v) => JSON.parse(v) as SharedAdapterRecord)
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  // --- limits -----------------------------------------------------------------------------

  private t(tenant: string) {
    return `${this.p}:{${tenant}}`;
  }

  async acquire(req: AcquireRequest): Promise<AcquireResult> {
    if (this.pending.length > 0) void this.flushPending();
    const keys: string[] = [];
    const args: Array<string | number> = [req.scopes.length, Math.max(0, Math.ceil(req.tokens)), req.leaseId ?? '', req.leaseTtlMs];
    for (const s of req.scopes) {
      keys.push(`${this.t(req.tenant)}:b:${s.id}:rpm`, `${this.t(req.tenant)}:b:${s.id}:tpm`, `${this.t(req.tenant)}:l:${s.id}`);
      args.push(limitValue(s.limits.rpm), limitValue(s.limits.tpm), limitValue(s.limits.concurrent_streams));
    }
    keys.push(`${this.t(req.tenant)}:revoked`);
    args.push(req.keyId ?? '');
    const r = (await this.script(acquireScript, keys, args)) as Array<string | number>;
    if (String(r[1]) === 'revoked') return { ok: false, reason: 'revoked', scope: '', limit: 0, retryAfterMs: 0 };
    if (Number(r[0]) !== 1) {
      return {
        ok: false,
        reason: String(r[1]) as 'rpm' | 'tpm' | 'concurrency',
        scope: req.scopes[Number(r[2]) - 1]!.id,
        retryAfterMs: Number(r[3]),
        limit: Number(r[4]),
      };
    }
    const info = (limit: unknown, level: unknown) => (limit === '' || limit === null || limit === undefined ? null : rateInfo(Number(level), Number(limit)));
    return { ok: true, requests: info(r[1], r[2]), tokens: info(r[3], r[4]) };
  }

  async settle(req: SettleRequest): Promise<void> {
    try {
      await this.runSettle(req);
    } catch (err) {
      if (!(err instanceof StoreUnavailableError)) throw err;
      this.queueSettle(req);
    }
  }

  private async runSettle(req: SettleRequest): Promise<void> {
    const keys: string[] = [];
    const t = this.t(req.tenant);
    for (const s of req.scopes) keys.push(`${t}:b:${s.id}:tpm`, `${t}:l:${s.id}`);
    keys.push(`${t}:u`, `${t}:u:${req.day}`);
    const args: Array<string | number> = [
      req.scopes.length,
      Math.round(req.reserved - req.used),
      req.leaseId ?? '',
      this.usageTtlSec,
      req.usage.keyId ?? '',
      Math.max(0, Math.round(req.usage.promptTokens)),
      Math.max(0, Math.round(req.usage.completionTokens)),
      ...req.scopes.map((s) => limitValue(s.limits.tpm)),
    ];
    // Settled after the answer, in the background: it may ride with the next batch of commands.
    await this.script(settleScript, keys, args, { deferrable: true });
  }

  private queueSettle(req: SettleRequest): void {
    if (this.pending.length >= this.maxPending) {
      this.pending.shift();
      this.droppedSettles++;
    }
    this.pending.push(req);
    this.log(`redis unavailable: settlement queued (${this.pending.length} waiting)`);
    this.scheduleFlush();
  }

  /** Retries the queued settlements in a second (once: a pending retry is not doubled). */
  private scheduleFlush(): void {
    if (this.flushTimer) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      void this.flushPending();
    }, 1000);
    (this.flushTimer as { unref?: () => void }).unref?.();
  }

  /** Replays queued settlements (in order) once Redis answers again. */
  flushPending(): Promise<void> {
    this.flushing ??= (async () => {
      try {
        while (this.pending.length > 0) {
          const next = this.pending[0]!;
          try {
            await this.runSettle(next);
          } catch (err) {
            if (err instanceof StoreUnavailableError) {
              this.scheduleFlush();
              return;
            }
            this.log(`dropping a settlement redis refused: ${(err as Error).message}`);
          }
          this.pending.shift();
        }
      } finally {
        this.flushing = null;
      }
    })();
    return this.flushing;
  }

  async renewLease(tenant: string, scopes: LimitScope[], leaseId: string, ttlMs: number): Promise<void> {
    const keys = scopes.filter((s) => limitValue(s.limits.concurrent_streams) > 0).map((s) => `${this.t(tenant)}:l:${s.id}`);
    if (keys.length === 0) return;
    await this.script(renewScript, keys, [leaseId, ttlMs]);
  }

  async getUsage(tenant: string, days: string[]): Promise<UsageReport> {
    const t = this.t(tenant);
    const [total, ...perDay] = await Promise.all([
      this.cmd(['HGETALL', `${t}:u`]).then(flatToObject),
      ...days.map((d) => this.cmd(['HGETALL', `${t}:u:${d}`]).then(flatToObject)),
    ]);
    const keyIds = new Set<string>();
    for (const f of Object.keys(total!)) {
      const m = /^k:(.+):requests$/.exec(f);
      if (m) keyIds.add(m[1]!);
    }
    return {
      tenant,
      total: counters(total!),
      days: days.map((day, i) => ({ day, ...counters(perDay[i]!) })),
      keys: [...keyIds].sort().map((id) => ({ key_id: id, ...counters(total!, `k:${id}:`) })),
    };
  }

  async ping(): Promise<boolean> {
    try {
      return (await this.redis.command(['PING'])) === 'PONG';
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    await this.redis.close();
  }
}
