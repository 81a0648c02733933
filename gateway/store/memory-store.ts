// In-process store: one gateway instance (no Redis configured), tests, and a Worker without a
// Redis binding. Every method runs to completion without awaiting, so acquire/settle are atomic
// with respect to each other just like the Redis Lua scripts.
import { bucketLevel, limitValue, rateInfo, tighter, waitMs, type BucketState } from '../limits.ts';
import type {
  AcquireRequest,
  AcquireResult,
  ApiKeyRecord,
  GatewayStore,
  LimitScope,
  RateInfo,
  SettleRequest,
  SharedAdapterRecord,
  TenantAdapterRecord,
  TenantRecord,
  UsageCounters,
  UsageReport,
} from './types.ts';

const clone = <T>(v: T): T => structuredClone(v);

function emptyCounters(): UsageCounters {
  return { requests: 0, prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };
}

export class MemoryStore implements GatewayStore {
  readonly kind = 'memory' as const;
  private readonly keysByHash = new Map<string, string>();
  private readonly keys = new Map<string, { hash: string; record: ApiKeyRecord }>();
  private readonly tenants = new Map<string, TenantRecord>();
  private readonly adapters = new Map<string, Map<string, TenantAdapterRecord>>();
  private readonly shared = new Map<string, SharedAdapterRecord>();
  private readonly buckets = new Map<string, BucketState>();
  private readonly leases = new Map<string, Map<string, number>>();
  private readonly usage = new Map<string, Map<string, UsageCounters>>();

  constructor(private readonly now: () => number = Date.now) {}

  async createKey(hash: string, record: ApiKeyRecord): Promise<void> {
    this.keysByHash.set(hash, record.id);
    this.keys.set(record.id, { hash, record: clone(record) });
  }

  async findKeyByHash(hash: string): Promise<ApiKeyRecord | null> {
    const id = this.keysByHash.get(hash);
    const e = id ? this.keys.get(id) : undefined;
    return e ? clone(e.record) : null;
  }

  async getKey(id: string): Promise<ApiKeyRecord | null> {
    const e = this.keys.get(id);
    return e ? clone(e.record) : null;
  }

  async listKeys(tenant?: string): Promise<ApiKeyRecord[]> {
    return [...this.keys.values()].map((e) => clone(e.record)).filter((r) => !tenant || r.tenant === tenant);
  }

  async revokeKey(id: string, at: string): Promise<ApiKeyRecord | null> {
    const e = this.keys.get(id);
    if (!e) return null;
    this.keysByHash.delete(e.hash);
    if (!e.record.revoked_at) e.record.revoked_at = at;
    return clone(e.record);
  }

  async getTenant(id: string): Promise<TenantRecord | null> {
    const t = this.tenants.get(id);
    return t ? clone(t) : null;
  }

  async putTenant(record: TenantRecord): Promise<void> {
    this.tenants.set(record.id, clone(record));
  }

  async listTenants(): Promise<TenantRecord[]> {
    return [...this.tenants.values()].map(clone);
  }

  async getAdapter(tenant: string, name: string): Promise<TenantAdapterRecord | null> {
    const a = this.adapters.get(tenant)?.get(name);
    return a ? clone(a) : null;
  }

  async putAdapter(record: TenantAdapterRecord): Promise<void> {
    let m = this.adapters.get(record.tenant);
    if (!m) this.adapters.set(record.tenant, (m = new Map()));
    m.set(record.name, clone(record));
  }

  async deleteAdapter(tenant: string, name: string): Promise<boolean> {
    return this.adapters.get(tenant)?.delete(name) ?? false;
  }

  async listAdapters(tenant: string): Promise<TenantAdapterRecord[]> {
    return [...(this.adapters.get(tenant)?.values() ?? [])].map(clone);
  }

  async getShared(name: string): Promise<SharedAdapterRecord | null> {
    const s = this.shared.get(name);
    return s ? clone(s) : null;
  }

  async putShared(record: SharedAdapterRecord): Promise<void> {
    this.shared.set(record.name, clone(record));
  }

  async deleteShared(name: string): Promise<boolean> {
    return this.shared.delete(name);
  }

  async listShared(): Promise<SharedAdapterRecord[]> {
    return [...this.shared.values()].map(clone);
  }

  private bucketKey(tenant: string, scope: string, kind: 'rpm' | 'tpm'): string {
    return `${tenant}\u0000${scope}\u0000${kind}`;
  }

  private leaseSet(tenant: string, scope: string, now: number): Map<string, number> {
    const key = `${tenant}\u0000${scope}`;
    let m = this.leases.get(key);
    if (!m) this.leases.set(key, (m = new Map()));
    for (const [id, exp] of m) if (exp <= now) m.delete(id);
    return m;
  }

  async acquire(req: AcquireRequest): Promise<AcquireResult> {
    if (req.keyId && this.keys.get(req.keyId)?.record.revoked_at) return { ok: false, reason: 'revoked', scope: '', limit: 0, retryAfterMs: 0 };
    const now = this.now();
    const levels: Array<{ rpm?: number; tpm?: number }> = [];
    // Check every scope first; take from none unless all pass.
    for (const s of req.scopes) {
      const rpm = limitValue(s.limits.rpm);
      const tpm = limitValue(s.limits.tpm);
      const conc = limitValue(s.limits.concurrent_streams);
      const lv: { rpm?: number; tpm?: number } = {};
      if (rpm > 0) {
        lv.rpm = bucketLevel(this.buckets.get(this.bucketKey(req.tenant, s.id, 'rpm')), rpm, now);
        if (lv.rpm < 1) return { ok: false, reason: 'rpm', scope: s.id, limit: rpm, retryAfterMs: waitMs(lv.rpm, 1, rpm) };
      }
      if (tpm > 0) {
        lv.tpm = bucketLevel(this.buckets.get(this.bucketKey(req.tenant, s.id, 'tpm')), tpm, now);
        const need = Math.min(req.tokens, tpm);
        if (req.tokens > 0 && lv.tpm < need) return { ok: false, reason: 'tpm', scope: s.id, limit: tpm, retryAfterMs: waitMs(lv.tpm, need, tpm) };
      }
      if (conc > 0 && req.leaseId) {
        const set = this.leaseSet(req.tenant, s.id, now);
        if (set.size >= conc) return { ok: false, reason: 'concurrency', scope: s.id, limit: conc, retryAfterMs: 1000 };
      }
      levels.push(lv);
    }
    let requests: RateInfo | null = null;
    let tokens: RateInfo | null = null;
    req.scopes.forEach((s, i) => {
      const lv = levels[i]!;
      const rpm = limitValue(s.limits.rpm);
      const tpm = limitValue(s.limits.tpm);
      if (lv.rpm !== undefined) {
        const after = lv.rpm - 1;
        this.buckets.set(this.bucketKey(req.tenant, s.id, 'rpm'), { tokens: after, ts: now });
        requests = tighter(requests, rateInfo(after, rpm));
      }
      if (lv.tpm !== undefined) {
        const after = lv.tpm - req.tokens;
        this.buckets.set(this.bucketKey(req.tenant, s.id, 'tpm'), { tokens: after, ts: now });
        tokens = tighter(tokens, rateInfo(after, tpm));
      }
      if (limitValue(s.limits.concurrent_streams) > 0 && req.leaseId) {
        this.leaseSet(req.tenant, s.id, now).set(req.leaseId, now + req.leaseTtlMs);
      }
    });
    return { ok: true, requests, tokens };
  }

  async settle(req: SettleRequest): Promise<void> {
    const now = this.now();
    const refund = req.reserved - req.used;
    for (const s of req.scopes) {
      const tpm = limitValue(s.limits.tpm);
      if (tpm > 0 && refund !== 0) {
        const key = this.bucketKey(req.tenant, s.id, 'tpm');
        const level = Math.min(tpm, bucketLevel(this.buckets.get(key), tpm, now) + refund);
        this.buckets.set(key, { tokens: level, ts: now });
      }
      if (req.leaseId) this.leaseSet(req.tenant, s.id, now).delete(req.leaseId);
    }
    this.recordUsage(req);
  }

  private recordUsage(req: SettleRequest): void {
    let m = this.usage.get(req.tenant);
    if (!m) this.usage.set(req.tenant, (m = new Map()));
    const bump = (field: string) => {
      let c = m.get(field);
      if (!c) m.set(field, (c = emptyCounters()));
      c.requests += 1;
      c.prompt_tokens += req.usage.promptTokens;
      c.completion_tokens += req.usage.completionTokens;
      c.total_tokens += req.usage.promptTokens + req.usage.completionTokens;
    };
    bump('total');
    bump(`day:${req.day}`);
    if (req.usage.keyId) bump(`key:${req.usage.keyId}`);
  }

  async renewLease(tenant: string, scopes: LimitScope[], leaseId: string, ttlMs: number): Promise<void> {
    const now = this.now();
    for (const s of scopes) {
      const set = this.leaseSet(tenant, s.id, now);
      if (set.has(leaseId)) set.set(leaseId, now + ttlMs);
    }
  }

  async getUsage(tenant: string, days: string[]): Promise<UsageReport> {
    const m = this.usage.get(tenant) ?? new Map<string, UsageCounters>();
    const keys: UsageReport['keys'] = [];
    for (const [field, c] of m) if (field.startsWith('key:')) keys.push({ key_id: field.slice(4), ...c });
    return {
      tenant,
      total: { ...(m.get('total') ?? emptyCounters()) },
      days: days.map((day) => ({ day, ...(m.get(`day:${day}`) ?? emptyCounters()) })),
      keys,
    };
  }

  async ping(): Promise<boolean> {
    return true;
  }

  async close(): Promise<void> {}
}
