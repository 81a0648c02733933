// Registering a tenant's private adapters (used by the tenant API /v1/adapters and by the admin
// API): PEFT uploads are written to every backend replica (docs/gateway-backend-contract.md:
// PUT /adapters/tenants/<tenant>/<name>/<file>, token scope adapters:write) and the adapter is
// usable once both files are on all of them; hub references keep the repo and the tenant's hub
// token (sealed at rest) and are forwarded as adapter_source "hub" with that api_token.
// Uploads stream through to the replicas (never held whole in memory), a few per tenant at once.
import type { AdapterResolver } from './adapters.ts';
import { GatewayError } from './errors.ts';
import type { Router } from './routing.ts';
import type { ServiceTokenSigner } from './service-token.ts';
import { ADAPTER_FILES, ADAPTERS_WRITE_SCOPE, isAdapterFile, isAdapterName, TENANTS_DIR, type AdapterFile } from '../protocol/index.ts';
import { jsonTooDeep, MAX_JSON_DEPTH } from '../protocol/json-depth.ts';
import { readBytes } from './body.ts';
import { uploadReplicas, type GatewayStore, type TenantAdapterRecord } from './store/types.ts';
import type { SecretBox } from './lib/crypto.ts';

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

/** adapter_config.json is read whole (to check it before it reaches any replica); real ones are a few KiB. */
export const MAX_CONFIG_BYTES = 1024 * 1024;
/** Uploads one tenant may have in flight through this gateway instance at once (429 past it). */
export const DEFAULT_MAX_UPLOADS_PER_TENANT = 2;

/**
 * One stream per replica from one source, in lockstep: the next chunk is read only when every
 * replica still receiving has taken the last one, so at most a chunk or two per replica is ever
 * held (tee() would buffer whatever the slowest replica lags behind: up to the whole file). A
 * replica that fails drops out; the others go on. An error of the source reaches every branch.
 */
export function fanOut(source: ReadableStream<Uint8Array>, n: number): ReadableStream<Uint8Array>[] {
  if (n === 1) return [source];
  const pipes = Array.from({ length: n }, () => new TransformStream<Uint8Array, Uint8Array>(undefined, { highWaterMark: 1 }, { highWaterMark: 1 }));
  let writers = pipes.map((p) => p.writable.getWriter());
  void (async () => {
    const reader = source.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        const alive: typeof writers = [];
        await Promise.all(
          writers.map(async (w) => {
            try {
              await w.ready;
              void w.write(value).catch(() => {});
              alive.push(w);
            } catch {
              // this replica's request failed: it no longer takes chunks
            }
          }),
        );
        writers = alive;
        if (writers.length === 0) {
          // Left unread rather than cancelled: a cancel would reset the client's connection
          // before it reads the answer.
          reader.releaseLock();
          return;
        }
      }
      await Promise.all(writers.map((w) => w.close().catch(() => {})));
    } catch (err) {
      await Promise.all(writers.map((w) => w.abort(err).catch(() => {})));
    }
  })();
  return pipes.map((p) => p.readable);
}

/** A replica answered an upload with an error status. */
class ReplicaRefusal extends Error {
  readonly reason: string;
  constructor(
    url: string,
    readonly status: number,
    text: string,
  ) {
    super(`${url} answered ${status}: ${text.slice(0, 200)}`);
    let reason = text.slice(0, 500);
    try {
      const j = JSON.parse(text) as { error?: unknown };
      if (typeof j.error === 'string') reason = j.error;
    } catch {
      // not JSON: keep the text
    }
    this.reason = reason;
  }
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
  /** Uploads per tenant in flight at once (default DEFAULT_MAX_UPLOADS_PER_TENANT). */
  maxUploadsPerTenant?: number;
}

export class AdapterManager {
  private readonly f: typeof fetch;
  private readonly uploading = new Map<string, number>();
  private readonly maxUploadsPerTenant: number;
  constructor(private readonly deps: AdapterManagerDeps) {
    this.f = deps.fetch ?? ((...a) => fetch(...a));
    this.maxUploadsPerTenant = deps.maxUploadsPerTenant ?? DEFAULT_MAX_UPLOADS_PER_TENANT;
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

  /**
   * Streams one adapter file to every healthy replica without holding it in memory (the weights
   * may be gigabytes; adapter_config.json, small, is read whole to check it). `req` is the client's
   * request: its body is read once, counted against `maxBytes` as it flows (413 past it).
   */
  async uploadFile(tenant: string, name: string, file: string, req: Request, maxBytes: number): Promise<AdapterView> {
    checkAdapterName(name);
    if (!isAdapterFile(file)) {
      throw new GatewayError(400, `file must be one of ${ADAPTER_FILES.join(', ')}`, { param: 'file', code: 'invalid_value' });
    }
    const busy = this.uploading.get(tenant) ?? 0;
    if (busy >= this.maxUploadsPerTenant) {
      throw new GatewayError(429, `${busy} uploads of this tenant are already in progress; retry when one finishes`, {
        code: 'too_many_uploads',
        loraxType: 'overloaded',
        headers: { 'retry-after': '1' },
      });
    }
    this.uploading.set(tenant, busy + 1);
    try {
      return await this.upload(tenant, name, file as AdapterFile, req, maxBytes);
    } finally {
      const n = (this.uploading.get(tenant) ?? 1) - 1;
      if (n > 0) this.uploading.set(tenant, n);
      else this.uploading.delete(tenant);
    }
  }

  private async upload(tenant: string, name: string, file: AdapterFile, req: Request, maxBytes: number): Promise<AdapterView> {
    let body: Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array>;
    let overflow = false;
    // The rest of the body is left unread: the client must not reuse the connection after this.
    const tooLarge = (limit: number) => new GatewayError(413, `adapter file is larger than ${limit} bytes`, { code: 'request_too_large', headers: { connection: 'close' } });
    if (file === 'adapter_config.json') {
      body = await readBytes(req, Math.min(maxBytes, MAX_CONFIG_BYTES), 'adapter_config.json');
      try {
        const text = new TextDecoder().decode(body);
        if (jsonTooDeep(text)) throw new Error(`nests more than ${MAX_JSON_DEPTH} levels deep`);
        const cfg = JSON.parse(text) as { peft_type?: unknown };
        if (cfg === null || typeof cfg !== 'object') throw new Error('not an object');
      } catch (err) {
        throw new GatewayError(400, `adapter_config.json is not a JSON object: ${(err as Error).message}`, { code: 'invalid_value' });
      }
    } else {
      const declared = Number(req.headers.get('content-length') ?? 'NaN');
      if (Number.isFinite(declared) && declared > maxBytes) throw tooLarge(maxBytes);
      let seen = 0;
      // Counts bytes as they pass; past the limit the stream errors, which fails the uploads.
      const counter = new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, ctl) {
          seen += chunk.byteLength;
          if (seen > maxBytes) {
            overflow = true;
            ctl.error(new Error('adapter file too large'));
            return;
          }
          ctl.enqueue(chunk);
        },
      });
      body = (req.body ?? new ReadableStream<Uint8Array>({ start: (c) => c.close() })).pipeThrough(counter);
    }
    const existing = await this.deps.store.getAdapter(tenant, name);
    if (existing && existing.source !== 'upload') {
      throw new GatewayError(409, `adapter "${name}" already exists as a hub reference; delete it first`, { code: 'adapter_exists' });
    }
    const token = await this.deps.signer.token(tenant, ADAPTERS_WRITE_SCOPE);
    const path = `/adapters/${TENANTS_DIR}/${encodeURIComponent(tenant)}/${encodeURIComponent(name)}/${file}`;
    // Every healthy replica gets the file (a replica that is down now does not: the adapter is
    // then served only by the replicas that have it, see `replicas`).
    const healthy = this.deps.router.backends.filter((b) => b.healthy);
    const targets = healthy.length > 0 ? healthy : this.deps.router.backends;
    const bodies: (Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array>)[] =
      body instanceof ReadableStream ? fanOut(body, targets.length) : targets.map(() => body);
    const results = await Promise.allSettled(
      targets.map(async (b, i) => {
        const res = await this.f(`${b.url}${path}`, {
          method: 'PUT',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' },
          body: bodies[i]!,
          ...(bodies[i] instanceof ReadableStream ? { duplex: 'half' } : {}),
        } as RequestInit);
        const text = await res.text();
        if (!res.ok) throw new ReplicaRefusal(b.url, res.status, text);
      }),
    );
    if (overflow) throw tooLarge(maxBytes);
    const failed = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as Error] : []));
    if (failed.length > 0) {
      // The same 4xx from every replica is about the file (a config the backend refuses, a
      // file too large, too many uploads at once): the client's answer, with the backend's reason.
      const refusals = failed.filter((e): e is ReplicaRefusal => e instanceof ReplicaRefusal && e.status >= 400 && e.status < 500);
      if (refusals.length === failed.length && failed.length === results.length && new Set(refusals.map((r) => r.status)).size === 1) {
        const r = refusals[0]!;
        throw new GatewayError(r.status === 403 ? 502 : r.status, r.reason, {
          code: r.status === 429 ? 'too_many_uploads' : r.status === 413 ? 'request_too_large' : 'invalid_value',
          ...(r.status === 403 ? { type: 'server_error' as const } : {}),
        });
      }
      throw new GatewayError(502, `upload of ${file} failed on ${failed.length} of ${results.length} backend replica(s): ${failed.map((e) => e.message).join('; ')}`, {
        type: 'server_error',
        code: 'upload_failed',
      });
    }
    // Read again: another file of this adapter may have landed while this one streamed.
    const latest = (await this.deps.store.getAdapter(tenant, name)) ?? existing;
    if (latest && latest.source !== 'upload') {
      throw new GatewayError(409, `adapter "${name}" already exists as a hub reference; delete it first`, { code: 'adapter_exists' });
    }
    const now = new Date().toISOString();
    const files = [...new Set([...(latest?.files ?? []), file as AdapterFile])].sort() as AdapterFile[];
    const replicas = { ...(latest?.replicas ?? {}), [file]: targets.map((b) => b.url) };
    const rec: TenantAdapterRecord = {
      tenant,
      name,
      source: 'upload',
      status: 'pending',
      files,
      repo: null,
      token_sealed: null,
      replicas,
      created_at: latest?.created_at ?? now,
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
