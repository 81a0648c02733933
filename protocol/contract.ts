// The gateway ▶ backend contract as data (docs/gateway-backend-contract.md): what the gateway signs
// and the backend verifies, how tenants and their adapters are named, which files an adapter is
// made of, and how a tenant adapter is addressed. Both sides import these, so a rule changed here
// changes on both at once; nothing here knows HTTP or jose.
import type { AdapterSource } from './lorax.ts';

// ---------------------------------------------------------------------------
// Service token (a JWT the gateway signs on every forwarded request)
// ---------------------------------------------------------------------------

/** `iss` of a service token. */
export const SERVICE_ISSUER = 'switchboard-gateway';
/** `aud` of a service token. */
export const SERVICE_AUDIENCE = 'switchboard-backend';
/** Lifetime the gateway gives a service token (the backend checks `exp`, whatever it is). */
export const SERVICE_TOKEN_TTL_S = 60;
/** The `scope` a token needs to write a tenant's adapter files. */
export const ADAPTERS_WRITE_SCOPE = 'adapters:write';

// ---------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------

/** A tenant id (the token's `tenant` claim): DNS-label-like, so it is safe as a path segment and a key. */
export const TENANT_ID = /^[a-z0-9][a-z0-9-]{0,62}$/;
export function isTenantId(value: unknown): value is string {
  return typeof value === 'string' && TENANT_ID.test(value);
}

/** A tenant's adapter name: one path segment the backend can use as a directory name. */
export const ADAPTER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
export function isAdapterName(value: string): boolean {
  return ADAPTER_NAME.test(value);
}

/** The files of a PEFT LoRA adapter, the only ones uploaded, fetched or versioned. */
export const ADAPTER_FILES = ['adapter_config.json', 'adapter_model.safetensors'] as const;
export type AdapterFile = (typeof ADAPTER_FILES)[number];
export function isAdapterFile(value: string): value is AdapterFile {
  return (ADAPTER_FILES as readonly string[]).includes(value);
}

// ---------------------------------------------------------------------------
// Tenant adapter ids: `tenants/<tenant>/<name>`, a directory under the backend's adapter root
// ---------------------------------------------------------------------------

/** The first path segment of every tenant adapter id (and directory under --adapter-root). */
export const TENANTS_DIR = 'tenants';

/** The `adapter_id` (with `adapter_source: "local"`) under which the backend serves a tenant's upload. */
export function tenantAdapterId(tenant: string, name: string): string {
  return `${TENANTS_DIR}/${tenant}/${name}`;
}

/**
 * The tenant an adapter id belongs to, or null when it is not a tenant adapter. Deliberately
 * loose (anything below `tenants/<t>/` belongs to t), so that a malformed id under another
 * tenant's directory is still refused rather than treated as public.
 */
export function tenantOfAdapter(id: string): string | null {
  const prefix = `${TENANTS_DIR}/`;
  if (!id.startsWith(prefix)) return null;
  const end = id.indexOf('/', prefix.length);
  return end > prefix.length ? id.slice(prefix.length, end) : null;
}

// ---------------------------------------------------------------------------
// Adapter sources
// ---------------------------------------------------------------------------

/**
 * The adapter sources the backend can load, and so the only ones the gateway forwards. LoRAX's
 * `pbase` (Predibase's hosted registry) parses (protocol/lorax.ts) so the backend can refuse it
 * precisely. `s3` reads only the buckets the backend's operator lists (--s3-buckets).
 */
export const SERVED_ADAPTER_SOURCES = ['hub', 'local', 's3'] as const satisfies readonly AdapterSource[];
export type ServedAdapterSource = (typeof SERVED_ADAPTER_SOURCES)[number];
export function isServedAdapterSource(source: string): source is ServedAdapterSource {
  return (SERVED_ADAPTER_SOURCES as readonly string[]).includes(source);
}
