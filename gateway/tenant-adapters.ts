// Registering a tenant's private adapters (used by the tenant API /v1/adapters and by the admin
// API): PEFT uploads are written to every backend replica (docs/gateway-backend-contract.md:
// PUT /adapters/tenants/<tenant>/<name>/<file>, token scope adapters:write) and the adapter is
// usable once both files are on all of them; hub references keep the repo and the tenant's hub
// token (sealed at rest) and are forwarded as adapter_source "hub" with that api_token.
import type { AdapterResolver } from './adapters.ts';
import { GatewayError } from './errors.ts';
import type { Router } from './routing.ts';
import type { ServiceTokenSigner } from './service-token.ts';
import { ADAPTER_FILES, ADAPTERS_WRITE_SCOPE, isAdapterFile, isAdapterName, type AdapterFile } from '../protocol/index.ts';
import { uploadReplicas, type GatewayStore, type TenantAdapterRecord } from './store/types.ts';
import { SecretBox } from './util.ts';

export interface AdapterView {
  name: string;
  source: 'upload' | 'hub';
  status: 'pending' | 'ready';
  files: AdapterFile[];
  repo: string | null;
  has_token: boolean;
  created_at: string;
  updated_at: string;
}

export function adapterView(r: TenantAdapterRecord): AdapterView {
  return {
    name: r.name,
    source: r.source,
    status: r.status,
    files: r.files,
    repo: r.repo,
    has_token: r.token_sealed !== null,
    created_at: r.created_at,
    updated_at: r.updated_at,
  };
}

const HUB_REPO = /^[A-Za-z0-9][A-Za-z0-9._-]{0,95}\/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$/;

export function checkAdapterName(name: string): void {
  if (!isAdapterName(name)) {
    throw new GatewayError(400, `adapter name "${name}" must be 1-128 letters, digits, ".", "_" or "-" (starting with a letter or digit)`, {
      param: 'name',
      code: 'invalid_value',
    });
  }
}

export interface AdapterManagerDeps {
  store: GatewayStore;
  router: Router;
  signer: ServiceTokenSigner;
  box: SecretBox;
  fetch?: typeof fetch;
}

export class AdapterManager {
  private readonly f: typeof fetch;
  constructor(private readonly deps: AdapterManagerDeps) {
    this.f = deps.fetch ?? ((...a) => fetch(...a));
  }

  async list(tenant: string): Promise<AdapterView[]> {
    return (await this.deps.store.listAdapters(tenant)).map(adapterView);
  }

  async get(tenant: string, name: string): Promise<AdapterView> {
    const r = await this.deps.store.getAdapter(tenant, name);
    if (!r) throw new GatewayError(404, `adapter "${name}" not found`, { code: 'adapter_not_found' });
    return adapterView(r);
  }

  async registerHub(tenant: string, input: { name: string; repo: string; token?: string | null }): Promise<AdapterView> {
    checkAdapterName(input.name);
    if (!HUB_REPO.test(input.repo)) throw new GatewayError(400, `repo "${input.repo}" must look like "owner/name"`, { param: 'repo', code: 'invalid_value' });
    const existing = await this.deps.store.getAdapter(tenant, input.name);
    if (existing && existing.source !== 'hub') {
      throw new GatewayError(409, `adapter "${input.name}" already exists as an upload; delete it first`, { code: 'adapter_exists' });
    }
    const now = new Date().toISOString();
    const rec: TenantAdapterRecord = {
      tenant,
      name: input.name,
      source: 'hub',
      status: 'ready',
      files: [],
      repo: input.repo,
      token_sealed: input.token ? await this.deps.box.seal(input.token) : null,
      created_at: existing?.created_at ?? now,
      updated_at: now,
    };
    await this.deps.store.putAdapter(rec);
    return adapterView(rec);
  }

  async uploadFile(tenant: string, name: string, file: string, body: Uint8Array<ArrayBuffer>): Promise<AdapterView> {
    checkAdapterName(name);
    if (!isAdapterFile(file)) {
      throw new GatewayError(400, `file must be one of ${ADAPTER_FILES.join(', ')}`, { param: 'file', code: 'invalid_value' });
    }
    if (file === 'adapter_config.json') {
      try {
        const cfg = JSON.parse(new TextDecoder().decode(body)) as { peft_type?: unknown };
        if (cfg === null || typeof cfg !== 'object') throw new Error('not an object');
      } catch (err) {
        throw new GatewayError(400, `adapter_config.json is not a JSON object: ${(err as Error).message}`, { code: 'invalid_value' });
      }
    }
    const existing = await this.deps.store.getAdapter(tenant, name);
    if (existing && existing.source !== 'upload') {
      throw new GatewayError(409, `adapter "${name}" already exists as a hub reference; delete it first`, { code: 'adapter_exists' });
    }
    const token = await this.deps.signer.token(tenant, ADAPTERS_WRITE_SCOPE);
    const path = `/adapters/tenants/${encodeURIComponent(tenant)}/${encodeURIComponent(name)}/${file}`;
    // Every healthy replica gets the file (a replica that is down now does not: the adapter is
    // then served only by the replicas that have it, see `replicas`).
    const healthy = this.deps.router.backends.filter((b) => b.healthy);
    const targets = healthy.length > 0 ? healthy : this.deps.router.backends;
    const results = await Promise.allSettled(
      targets.map(async (b) => {
        const res = await this.f(`${b.url}${path}`, {
          method: 'PUT',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' },
          body,
        });
        const text = await res.text();
        if (!res.ok) throw new Error(`${b.url} answered ${res.status}: ${text.slice(0, 200)}`);
      }),
    );
    const failed = results.flatMap((r) => (r.status === 'rejected' ? [(r.reason as Error).message] : []));
    if (failed.length > 0) {
      throw new GatewayError(502, `upload of ${file} failed on ${failed.length} of ${results.length} backend replica(s): ${failed.join('; ')}`, {
        type: 'server_error',
        code: 'upload_failed',
      });
    }
    const now = new Date().toISOString();
    const files = [...new Set([...(existing?.files ?? []), file as AdapterFile])].sort() as AdapterFile[];
    const replicas = { ...(existing?.replicas ?? {}), [file]: targets.map((b) => b.url) };
    const rec: TenantAdapterRecord = {
      tenant,
      name,
      source: 'upload',
      status: 'pending',
      files,
      repo: null,
      token_sealed: null,
      replicas,
      created_at: existing?.created_at ?? now,
      updated_at: now,
    };
    rec.status = ADAPTER_FILES.every((f) => files.includes(f)) && (uploadReplicas(rec)?.length ?? 0) > 0 ? 'ready' : 'pending';
    await this.deps.store.putAdapter(rec);
    return adapterView(rec);
  }

  async remove(tenant: string, name: string): Promise<{ name: string; deleted: true }> {
    const rec = await this.deps.store.getAdapter(tenant, name);
    if (!rec) throw new GatewayError(404, `adapter "${name}" not found`, { code: 'adapter_not_found' });
    await this.deps.store.deleteAdapter(tenant, name);
    if (rec.source === 'upload') {
      const token = await this.deps.signer.token(tenant, ADAPTERS_WRITE_SCOPE);
      // Best effort: the registry entry is gone already, so the adapter is unusable either way.
      await Promise.allSettled(
        this.deps.router.backends.map((b) =>
          this.f(`${b.url}/adapters/tenants/${encodeURIComponent(tenant)}/${encodeURIComponent(name)}`, {
            method: 'DELETE',
            headers: { authorization: `Bearer ${token}` },
          }).then((r) => r.body?.cancel()),
        ),
      );
    }
    return { name, deleted: true };
  }
}

export type { AdapterResolver };
