// API keys: `sk-sb-` + 32 random bytes (base64url). Shown once at issue; the store keeps only the
// SHA-256 of the key (a fast hash is right for 256-bit random secrets: there is nothing to
// brute-force), so a store dump cannot be replayed. Lookup is by hash, so verification takes
// one store read and no comparison that could leak timing.
import type { GatewayStore, ApiKeyRecord, Limits } from '../store/types.ts';
import { randomId, randomToken, sha256Hex } from '../lib/crypto.ts';

export const KEY_PREFIX = 'sk-sb-';

/** The one answer for a key that is unknown, revoked or expired (nothing tells them apart). */
export const INVALID_KEY = 'invalid API key (unknown, revoked or expired)';

/** Scopes a key or tenant JWT may carry; a key without scopes has all of them. */
export const SCOPES = ['inference', 'adapters:read', 'adapters:write'] as const;
export type Scope = (typeof SCOPES)[number];

export function looksLikeApiKey(token: string): boolean {
  return token.startsWith(KEY_PREFIX);
}

export function hashKey(key: string): Promise<string> {
  return sha256Hex(key);
}

export interface IssueKeyInput {
  tenant: string;
  name?: string | null;
  scopes?: string[] | null;
  limits?: Limits | null;
  expiresAt?: string | null;
}

export async function issueKey(store: GatewayStore, input: IssueKeyInput): Promise<{ key: string; record: ApiKeyRecord }> {
  const key = `${KEY_PREFIX}${randomToken(32)}`;
  const record: ApiKeyRecord = {
    id: randomId('key'),
    tenant: input.tenant,
    name: input.name ?? null,
    scopes: input.scopes ?? null,
    limits: input.limits ?? null,
    prefix: key.slice(0, KEY_PREFIX.length + 6),
    created_at: new Date().toISOString(),
    expires_at: input.expiresAt ?? null,
    revoked_at: null,
  };
  await store.createKey(await hashKey(key), record);
  return { key, record };
}

/** The key's record if it is known, not revoked and not expired; null otherwise. */
export async function verifyKey(store: GatewayStore, key: string, now = Date.now()): Promise<ApiKeyRecord | null> {
  if (!looksLikeApiKey(key) || key.length > 200) return null;
  return verifyKeyHash(store, await hashKey(key), now);
}

/** verifyKey by the key's hash. */
export async function verifyKeyHash(store: GatewayStore, hash: string, now = Date.now()): Promise<ApiKeyRecord | null> {
  return usable(await store.findKeyByHash(hash), now);
}

function usable(record: ApiKeyRecord | null, now: number): ApiKeyRecord | null {
  if (!record || record.revoked_at) return null;
  if (record.expires_at && Date.parse(record.expires_at) <= now) return null;
  return record;
}

/**
 * verifyKey through a per-instance cache of known keys' records (never of unknown ones), for
 * routes whose reservation re-checks revocation atomically (AcquireRequest.keyId): one store
 * round trip less per request. `cached`: the record came from the cache, not from the store now.
 */
export async function verifyKeyCached(
  store: GatewayStore,
  key: string,
  cache: { get(h: string): ApiKeyRecord | undefined; set(h: string, r: ApiKeyRecord): void },
  now = Date.now(),
): Promise<{ record: ApiKeyRecord; hash: string; cached: boolean } | null> {
  if (!looksLikeApiKey(key) || key.length > 200) return null;
  const hash = await hashKey(key);
  const hit = cache.get(hash);
  if (hit) {
    const record = usable(hit, now);
    return record ? { record, hash, cached: true } : null;
  }
  const record = usable(await store.findKeyByHash(hash), now);
  if (!record) return null;
  cache.set(hash, record);
  return { record, hash, cached: false };
}
