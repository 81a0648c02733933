// Tenant adapter namespaces. A tenant names adapters plainly ("my-adapter"); the gateway looks
// the name up in that tenant's own registry, then among the shared public adapters, and rewrites
// it to what the backend serves:
//   upload -> adapter_source "local", adapter_id "tenants/<tenant>/<name>"
//   hub    -> adapter_source "hub",   adapter_id "<repo>", api_token = the tenant's hub token for
//             that repo (in a merge, merged_adapters.api_tokens: one token per id, never shared)
//   shared -> whatever the admin registered (a hub repo or a local adapter of the backend)
// Nothing else is forwarded: a name that is not in the tenant's registry or the shared list,
// including another tenant's adapter (whose name cannot even be expressed: lookups are always
// within the caller's namespace), gets the same 404, built from the name the client sent.
import { BASE_MODEL_ADAPTER_ID, tenantAdapterId, type ServedAdapterSource } from '../protocol/index.ts';
import { GatewayError } from './errors.ts';
import { uploadReplicas, type GatewayStore, type SharedAdapterRecord, type TenantAdapterRecord } from './store/types.ts';
import type { SecretBox } from './lib/crypto.ts';
import { TtlCache } from './lib/ttl-cache.ts';

export interface BackendInfo {
  /** The backend's model_id (a path or hub id). */
  modelId: string;
  /** What /v1/models calls the base model (the backend's basename of model_id). */
  modelName: string;
  maxTotalTokens: number;
  maxInputLength: number;
}

export interface AdapterTarget {
  /** The name the client used. */
  name: string;
  /** The id the backend gets. */
  id: string;
  source: ServedAdapterSource;
  apiToken: string | null;
  /** Replicas that hold it (uploads); null: every replica can load it. */
  replicas: string[] | null;
}

export type AdapterSelection =
  | { kind: 'base' }
  | { kind: 'single'; target: AdapterTarget; affinity: string }
  | { kind: 'merged'; targets: AdapterTarget[]; source: ServedAdapterSource; affinity: string };

/** The replicas a selection may be sent to (null: any). */
export function replicasOf(sel: AdapterSelection): string[] | null {
  const lists = sel.kind === 'single' ? [sel.target.replicas] : sel.kind === 'merged' ? sel.targets.map((t) => t.replicas) : [];
  const known = lists.filter((l): l is string[] => l !== null);
  if (known.length === 0) return null;
  return known.reduce((a, b) => a.filter((u) => b.includes(u)));
}

export function isBaseName(name: string | undefined | null, info: BackendInfo): boolean {
  return !name || name === BASE_MODEL_ADAPTER_ID || name === info.modelName || name === info.modelId;
}

export function notFound(name: string): GatewayError {
  return new GatewayError(404, `adapter "${name}" not found`, { loraxType: 'adapter', code: 'model_not_found' });
}

export class AdapterResolver {
  private readonly sharedCache: TtlCache<SharedAdapterRecord | null>;

  constructor(
    private readonly store: GatewayStore,
    private readonly box: SecretBox,
    sharedCacheTtlMs = 2000,
  ) {
    this.sharedCache = new TtlCache(sharedCacheTtlMs);
  }

  invalidateShared(name?: string): void {
    if (name) this.sharedCache.delete(name);
    else this.sharedCache.clear();
  }

  private async shared(name: string): Promise<SharedAdapterRecord | null> {
    const hit = this.sharedCache.get(name);
    if (hit !== undefined) return hit;
    const rec = await this.store.getShared(name);
    this.sharedCache.set(name, rec);
    return rec;
  }

  async target(tenant: string, name: string): Promise<AdapterTarget> {
    // Own adapters first: a tenant's name shadows a shared one.
    const [own, shared] = await Promise.all([this.store.getAdapter(tenant, name), this.shared(name)]);
    if (own) return this.ownTarget(own);
    if (shared) {
      return {
        name,
        id: shared.adapter_id,
        source: shared.source,
        apiToken: shared.token_sealed ? await this.box.open(shared.token_sealed) : null,
        replicas: null,
      };
    }
    throw notFound(name);
  }

  private async ownTarget(rec: TenantAdapterRecord): Promise<AdapterTarget> {
    if (rec.status !== 'ready') {
      throw new GatewayError(409, `adapter "${rec.name}" is not ready: upload both adapter_config.json and adapter_model.safetensors`, {
        code: 'adapter_not_ready',
      });
    }
    if (rec.source === 'hub') {
      return { name: rec.name, id: rec.repo!, source: 'hub', apiToken: rec.token_sealed ? await this.box.open(rec.token_sealed) : null, replicas: null };
    }
    return { name: rec.name, id: tenantAdapterId(rec.tenant, rec.name), source: 'local', apiToken: null, replicas: uploadReplicas(rec) };
  }

  async select(tenant: string, info: BackendInfo, single: string | undefined, merged: string[] | undefined): Promise<AdapterSelection> {
    if (merged && merged.length > 0) {
      const targets = await Promise.all(merged.map((n) => this.target(tenant, n)));
      const sources = new Set(targets.map((t) => t.source));
      if (sources.size > 1) {
        throw new GatewayError(422, 'merged_adapters: every adapter of a merge must come from the same source (all uploaded, or all hub)', {
          param: 'parameters.merged_adapters.ids',
        });
      }
      // Each target keeps its own token (forwarded per id as merged_adapters.api_tokens): a token
      // is only ever sent to the hub for the repo it was registered with.
      return {
        kind: 'merged',
        targets,
        source: targets[0]!.source,
        affinity: `merge:${targets.map((t) => `${t.source}:${t.id}`).sort().join('+')}`,
      };
    }
    if (isBaseName(single, info)) return { kind: 'base' };
    const target = await this.target(tenant, single!);
    return { kind: 'single', target, affinity: `${target.source}:${target.id}` };
  }
}

/** Replaces internal ids with the client's names in an error text (never in model output). */
export function scrubIds(text: string, sel: AdapterSelection): string {
  const targets = sel.kind === 'single' ? [sel.target] : sel.kind === 'merged' ? sel.targets : [];
  let out = text;
  for (const t of targets) if (t.id !== t.name) out = out.split(t.id).join(t.name);
  return out;
}
