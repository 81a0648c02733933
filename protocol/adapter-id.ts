// Canonical local adapter ids (adapter_source "local"), decided the same way by the gateway (which
// ids the admin may register as shared) and the backend (which directory a request may load).
// Tenancy is decided on the id as written, so an id is accepted only in its one canonical spelling:
// anything a path resolver would rewrite ("./x", "a//b", "a/../b", "a/", "a\\b", "%2e", non-ASCII
// look-alikes) is refused outright instead of being normalised into something that passed a check
// meant for another spelling.
import { isAdapterName, isTenantId, TENANTS_DIR } from './contract.ts';

/** One path segment: starts with a letter, digit or "_" (never "." or ".."), ASCII only. */
const SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9._@+=-]{0,254}$/;
/** Longest local adapter id accepted (bytes, every character being ASCII). */
export const MAX_LOCAL_ADAPTER_ID = 1024;
const MAX_SEGMENTS = 32;

export type LocalIdCheck =
  | { ok: true; kind: 'relative' | 'absolute'; segments: string[]; tenant: string | null }
  | { ok: false };

/**
 * Whether `id` is a canonical local adapter id: "seg/seg/..." relative to the adapter root, or
 * "/seg/seg/..." (absolute; whether that is allowed is the backend operator's choice). Ids under
 * `tenants/` must be exactly `tenants/<tenant>/<name>` with a valid tenant and adapter name, and
 * carry that tenant; everything else carries none.
 */
export function checkLocalAdapterId(id: string): LocalIdCheck {
  if (id.length === 0 || id.length > MAX_LOCAL_ADAPTER_ID) return { ok: false };
  const absolute = id.startsWith('/');
  const segments = (absolute ? id.slice(1) : id).split('/');
  if (segments.length > MAX_SEGMENTS || !segments.every((s) => SEGMENT.test(s))) return { ok: false };
  let tenant: string | null = null;
  // A case variant of the tenants directory would alias it on a case-insensitive file system.
  if (!absolute && segments[0]!.toLowerCase() === TENANTS_DIR && segments[0] !== TENANTS_DIR) return { ok: false };
  if (!absolute && segments[0] === TENANTS_DIR) {
    if (segments.length !== 3 || !isTenantId(segments[1]) || !isAdapterName(segments[2]!)) return { ok: false };
    tenant = segments[1]!;
  }
  return { ok: true, kind: absolute ? 'absolute' : 'relative', segments, tenant };
}
