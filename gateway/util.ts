// Small runtime-agnostic helpers (Web Crypto, base64url, hashing): the same code runs on Node 20
// and on Workers, so nothing here touches node: modules or Buffer.
const enc = new TextEncoder();
const dec = new TextDecoder();

export type Bytes = Uint8Array<ArrayBuffer>;

export function utf8(text: string): Bytes {
  return enc.encode(text) as Bytes;
}

/** UTF-8 byte length without allocating for ASCII-only strings. */
export function utf8Length(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

export function base64url(bytes: Uint8Array): string {
  let bin = '';
  for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]!);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

export function fromBase64url(text: string): Bytes {
  const b64 = text.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (text.length % 4)) % 4);
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function hex(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += bytes[i]!.toString(16).padStart(2, '0');
  return s;
}

export function randomBytes(n: number): Bytes {
  return crypto.getRandomValues(new Uint8Array(n));
}

/** URL-safe random token of `bytes` bytes of entropy. */
export function randomToken(bytes = 24): string {
  return base64url(randomBytes(bytes));
}

export function randomId(prefix: string, bytes = 9): string {
  return `${prefix}_${hex(randomBytes(bytes))}`;
}

// On Node (20.16+), node:crypto's synchronous hash, reached without an import so that bundles
// for Workers stay free of node: modules; elsewhere Web Crypto.
type NodeHash = { createHash(alg: string): { update(s: string): { digest(enc: 'hex'): string } } };
const nodeCrypto: NodeHash | null = (() => {
  try {
    const p = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
    return (p?.getBuiltinModule?.('node:crypto') as NodeHash | undefined) ?? null;
  } catch {
    return null;
  }
})();

export async function sha256Hex(text: string): Promise<string> {
  if (nodeCrypto) return nodeCrypto.createHash('sha256').update(text).digest('hex');
  return hex(new Uint8Array(await crypto.subtle.digest('SHA-256', utf8(text))));
}

export async function sha1Hex(text: string): Promise<string> {
  return hex(new Uint8Array(await crypto.subtle.digest('SHA-1', utf8(text))));
}

/** Compares two secrets in time independent of where they differ (via their digests). */
export async function secretEquals(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([
    crypto.subtle.digest('SHA-256', utf8(a)),
    crypto.subtle.digest('SHA-256', utf8(b)),
  ]);
  const u = new Uint8Array(x);
  const v = new Uint8Array(y);
  let diff = 0;
  for (let i = 0; i < u.length; i++) diff |= u[i]! ^ v[i]!;
  return diff === 0;
}

/**
 * Seals small secrets (tenants' hub tokens) at rest with AES-256-GCM under a key derived from a
 * gateway secret, so a store dump alone does not reveal them.
 */
export class SecretBox {
  private constructor(private readonly key: CryptoKey) {}

  static async fromSecret(secret: string): Promise<SecretBox> {
    const material = await crypto.subtle.digest('SHA-256', utf8(`switchboard-gateway/secret-box/v1\u0000${secret}`));
    const key = await crypto.subtle.importKey('raw', material, { name: 'AES-GCM' }, false, ['encrypt', 'decrypt']);
    return new SecretBox(key);
  }

  async seal(plain: string): Promise<string> {
    const iv = randomBytes(12);
    const ct = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv }, this.key, utf8(plain)));
    return `v1.${base64url(iv)}.${base64url(ct)}`;
  }

  async open(sealed: string): Promise<string> {
    const [v, iv, ct] = sealed.split('.');
    if (v !== 'v1' || !iv || !ct) throw new Error('sealed secret: unknown format');
    const plain = await crypto.subtle.decrypt({ name: 'AES-GCM', iv: fromBase64url(iv) }, this.key, fromBase64url(ct));
    return dec.decode(plain);
  }
}

/** cyrb53: a fast, well-mixed 53-bit string hash (for rendezvous hashing; not cryptographic). */
export function hash53(text: string, seed = 0): number {
  let h1 = 0xdeadbeef ^ seed;
  let h2 = 0x41c6ce57 ^ seed;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507);
  h1 ^= Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507);
  h2 ^= Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}

/** A tiny time-bounded cache (tenant records, shared adapters) to spare the store a round trip. */
export class TtlCache<V> {
  private readonly map = new Map<string, { value: V; until: number }>();
  constructor(
    private readonly ttlMs: number,
    private readonly max = 10_000,
  ) {}

  get(key: string): V | undefined {
    const e = this.map.get(key);
    if (!e) return undefined;
    if (e.until < Date.now()) {
      this.map.delete(key);
      return undefined;
    }
    return e.value;
  }

  set(key: string, value: V): void {
    if (this.ttlMs <= 0) return;
    if (this.map.size >= this.max) this.map.delete(this.map.keys().next().value as string);
    this.map.set(key, { value, until: Date.now() + this.ttlMs });
  }

  delete(key: string): void {
    this.map.delete(key);
  }

  clear(): void {
    this.map.clear();
  }
}

/** "2025-01-31" (UTC) for usage buckets. */
export function utcDay(ms = Date.now()): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** Shared adapters may look like hub repos ("org/name"). */
export const SHARED_ADAPTER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(\/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$/;
