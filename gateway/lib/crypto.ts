// Randomness, digests, constant-time secret comparison and the SecretBox that seals tenants' hub
// tokens at rest: Web Crypto everywhere (node:crypto's synchronous hash only when Node offers it
// without an import), so Workers bundles stay free of node: modules.
import { base64url, fromBase64url, hex, utf8, type Bytes } from './bytes.ts';

const dec = new TextDecoder();

export function randomBytes(n: number): Bytes {
  return crypto.getRandomValues(new Uint8Array(n));
}

/** URL-safe random token of `bytes` bytes of entropy. */
export function randomToken(bytes = 24): string {
  return base64url(randomBytes(bytes));
}

/**
 * Identifiers (stream leases, key ids) take their bytes from a pool refilled 4 KiB at a time: one
 * Web Crypto call costs ~15 µs on Node whatever its size (a job through OpenSSL), which was 4.5% of
 * the gateway's CPU per stream when every lease id made one. The bytes are the same CSPRNG output;
 * secrets (keys, tokens, IVs) still draw their own with randomBytes.
 */
const ID_POOL_BYTES = 4096;
let idPool = new Uint8Array(0);
let idAt = 0;

export function randomId(prefix: string, bytes = 9): string {
  if (idAt + bytes > idPool.length) {
    idPool = randomBytes(Math.max(ID_POOL_BYTES, bytes));
    idAt = 0;
  }
  const id = `${prefix}_${hex(idPool.subarray(idAt, idAt + bytes))}`;
  idAt += bytes;
  return id;
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
