// What the gateway keeps: API keys (hashes only), tenants and their limits, tenant adapters,
// shared public adapters, usage, and the rate-limit counters. Two implementations share this
// interface: MemoryStore (one instance, tests, dev) and RedisStore (every instance, atomic Lua).
import { ADAPTER_FILES, type AdapterFile } from '../../protocol/index.ts';

/** Per-minute limits; null/absent means unlimited. */
export interface Limits {
  /** Requests per minute. */
  rpm?: number | null;
  /** Tokens (prompt + generated) per minute. */
  tpm?: number | null;
  /** Streaming requests open at once. */
  concurrent_streams?: number | null;
}

export interface ApiKeyRecord {
  id: string;
  tenant: string;
  name: string | null;
  /** null: every tenant scope. */
  scopes: string[] | null;
  /** Limits of this key (on top of the tenant's). */
  limits: Limits | null;
  /** The first characters of the key, to recognise it in listings. */
  prefix: string;
  created_at: string;
  expires_at: string | null;
  revoked_at: string | null;
}

export interface TenantRecord {
  id: string;
  limits: Limits | null;
  created_at: string;
}


export interface TenantAdapterRecord {
  tenant: string;
  name: string;
  /** upload: files on every backend under tenants/<tenant>/<name>; hub: a hub repo. */
  source: 'upload' | 'hub';
  /** ready once usable (uploads: both files on every backend). */
  status: 'pending' | 'ready';
  files: AdapterFile[];
  repo: string | null;
  /** Hub token, sealed with the gateway's SecretBox. */
  token_sealed: string | null;
  /** Uploads: the backend replicas (URLs) holding the latest version of each file. */
  replicas?: Partial<Record<AdapterFile, string[]>>;
  created_at: string;
  updated_at: string;
}

/** Replicas holding every file of an upload (null: not an upload, any replica will do). */
export function uploadReplicas(r: TenantAdapterRecord): string[] | null {
  if (r.source !== 'upload') return null;
  const lists = ADAPTER_FILES.map((f) => r.replicas?.[f] ?? []);
  return lists.reduce((a, b) => a.filter((u) => b.includes(u)));
}

export interface SharedAdapterRecord {
  name: string;
  source: 'hub' | 'local' | 's3';
  adapter_id: string;
  token_sealed: string | null;
  created_at: string;
}

/** One set of limits a request is counted against (its key's, its tenant's). */
export interface LimitScope {
  /** "tenant" or "key:<id>". */
  id: string;
  limits: Limits;
}

export interface AcquireRequest {
  tenant: string;
  scopes: LimitScope[];
  /** Tokens reserved up front (prompt estimate + max new tokens). */
  tokens: number;
  /** A concurrency lease (streams); null for requests that take no stream slot. */
  leaseId: string | null;
  leaseTtlMs: number;
  /**
   * The API key the request came with (null: a JWT): refused with reason "revoked" when it was
   * revoked, checked in the same atomic step as the reservation, so a key record cached by an
   * instance can never outlive a revocation on a request that reserves.
   */
  keyId?: string | null;
}

export interface RateInfo {
  limit: number;
  remaining: number;
  /** Milliseconds until the bucket is full again. */
  resetMs: number;
}

export type AcquireResult =
  | { ok: true; requests: RateInfo | null; tokens: RateInfo | null }
  | { ok: false; reason: 'rpm' | 'tpm' | 'concurrency'; scope: string; limit: number; retryAfterMs: number }
  | { ok: false; reason: 'revoked'; scope: ''; limit: 0; retryAfterMs: 0 };

export interface UsageDelta {
  keyId: string | null;
  promptTokens: number;
  completionTokens: number;
}

export interface SettleRequest {
  tenant: string;
  scopes: LimitScope[];
  /** What acquire reserved. */
  reserved: number;
  /** What the request really used (refund = reserved - used; may be negative). */
  used: number;
  leaseId: string | null;
  usage: UsageDelta;
  /** UTC day of the request, "YYYY-MM-DD". */
  day: string;
}

export interface UsageCounters {
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface UsageReport {
  tenant: string;
  total: UsageCounters;
  days: Array<{ day: string } & UsageCounters>;
  keys: Array<{ key_id: string } & UsageCounters>;
}

export interface GatewayStore {
  readonly kind: 'memory' | 'redis';

  // API keys: stored under the SHA-256 of the secret; the secret itself is never kept.
  createKey(hash: string, record: ApiKeyRecord): Promise<void>;
  findKeyByHash(hash: string): Promise<ApiKeyRecord | null>;
  getKey(id: string): Promise<ApiKeyRecord | null>;
  listKeys(tenant?: string): Promise<ApiKeyRecord[]>;
  /** Revoked keys stop authenticating at once; returns the updated record (null: unknown id). */
  revokeKey(id: string, at: string): Promise<ApiKeyRecord | null>;

  getTenant(id: string): Promise<TenantRecord | null>;
  putTenant(record: TenantRecord): Promise<void>;
  listTenants(): Promise<TenantRecord[]>;

  getAdapter(tenant: string, name: string): Promise<TenantAdapterRecord | null>;
  putAdapter(record: TenantAdapterRecord): Promise<void>;
  deleteAdapter(tenant: string, name: string): Promise<boolean>;
  listAdapters(tenant: string): Promise<TenantAdapterRecord[]>;

  getShared(name: string): Promise<SharedAdapterRecord | null>;
  putShared(record: SharedAdapterRecord): Promise<void>;
  deleteShared(name: string): Promise<boolean>;
  listShared(): Promise<SharedAdapterRecord[]>;

  /** Atomically checks every scope's limits and, only if all pass, takes from all of them. */
  acquire(req: AcquireRequest): Promise<AcquireResult>;
  /** Returns unused reserved tokens, releases the lease and records usage. */
  settle(req: SettleRequest): Promise<void>;
  /** Keeps a long stream's lease alive. */
  renewLease(tenant: string, scopes: LimitScope[], leaseId: string, ttlMs: number): Promise<void>;

  getUsage(tenant: string, days: string[]): Promise<UsageReport>;

  /** Whether the store answers (health). */
  ping(): Promise<boolean>;
  close(): Promise<void>;
}

/** "2025-01-31" (UTC) for usage buckets. */
// The day of the last call and where it ends: every settlement asks, formatting a date each time is wasted.
let dayStart = 0;
let dayEnd = -1;
let dayName = '';

export function utcDay(ms = Date.now()): string {
  if (ms >= dayStart && ms < dayEnd) return dayName;
  dayStart = ms - (((ms % 86_400_000) + 86_400_000) % 86_400_000);
  dayEnd = dayStart + 86_400_000;
  dayName = new Date(dayStart).toISOString().slice(0, 10);
  return dayName;
}

/** The store (Redis) cannot be reached: the app fails closed with a 503 (see gateway/README.md). */
export class StoreUnavailableError extends Error {}
