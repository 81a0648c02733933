// Tenant adapter files, written by the gateway (docs/gateway-backend-contract.md):
// PUT /adapters/tenants/<tenant>/<name>/<file> and DELETE /adapters/tenants/<tenant>/<name>.
// Files land under --adapter-root; a new upload gets a new store key (see resolve.ts), so an
// adapter replaced in place is never served from a stale copy.
//
// A file is streamed to a temporary file outside the adapter's directory (never held in memory),
// then moved into place under a per-adapter lock that DELETE takes too, so an upload and a delete
// of the same adapter at once are ordered instead of racing (the rename never meets a directory
// removed under it). Each tenant has a few uploads in flight at most (429 past that).
// adapter_config.json is validated before it lands (its patterns included): a config the backend
// could never serve is refused at upload with the reason.
import { Hono } from 'hono';
import { randomUUID } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { ADAPTER_FILES, ADAPTERS_WRITE_SCOPE, isAdapterFile, isAdapterName, isTenantId, loraxError, tenantAdapterId, TENANTS_DIR } from '../../protocol/index.ts';
import { jsonTooDeep, MAX_JSON_DEPTH } from '../../protocol/json-depth.ts';
import { compileConfigPatterns, parseAdapterConfig } from '../../native/peft-adapter.ts';
import type { AuthEnv } from '../auth.ts';
import type { Runtime } from '../runtime.ts';

export const MAX_ADAPTER_BYTES = 2 * 1024 ** 3;
/** adapter_config.json is read whole to validate it; real ones are a few KiB. */
export const MAX_ADAPTER_CONFIG_BYTES = 1024 * 1024;
/** Where uploads are written before they are moved into place (not a valid adapter id: it starts with "."). */
const STAGING_DIR = '.uploads';

class UploadError extends Error {
  constructor(
    message: string,
    readonly status: 400 | 413 | 422,
  ) {
    super(message);
  }
}

/** Runs `fn` after every earlier holder of `key` is done (a promise chain per key, dropped when idle). */
class KeyedLock {
  private readonly tails = new Map<string, Promise<void>>();
  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    this.tails.set(key, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}

/** Streams the request body into `file`, at most `maxBytes`; returns the byte count. */
async function streamToFile(body: ReadableStream<Uint8Array> | null, file: string, maxBytes: number, keep: Uint8Array[] | null): Promise<number> {
  const fh = await open(file, 'wx');
  let total = 0;
  try {
    if (!body) return 0;
    const reader = body.getReader();
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch {
        // The sender went away mid-file (the gateway gives up on a body past its own limit):
        // nothing lands, and it is no server error.
        throw new UploadError('the upload was cut off before the end of the file', 400);
      }
      const { done, value } = chunk;
      if (done) break;
      total += value.byteLength;
      if (total > maxBytes) {
        // Not cancelled: that would reset the connection before the 413 is read.
        reader.releaseLock();
        throw new UploadError(`adapter file is larger than ${maxBytes} bytes`, 413);
      }
      keep?.push(value);
      await fh.write(value);
    }
    return total;
  } finally {
    await fh.close();
  }
}

async function removeStale(dir: string, ageMs: number): Promise<void> {
  const names = await readdir(dir).catch(() => [] as string[]);
  for (const n of names) {
    if (!n.endsWith('.partial')) continue;
    const f = path.join(dir, n);
    const st = await stat(f).catch(() => null);
    if (st && Date.now() - st.mtimeMs > ageMs) await rm(f, { force: true }).catch(() => {});
  }
}

async function checkConfig(parts: Uint8Array[]): Promise<void> {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(parts));
  } catch {
    throw new UploadError('adapter_config.json is not valid UTF-8', 400);
  }
  if (jsonTooDeep(text)) throw new UploadError(`adapter_config.json nests more than ${MAX_JSON_DEPTH} levels deep`, 400);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new UploadError(`adapter_config.json is not valid JSON: ${(err as Error).message}`, 400);
  }
  try {
    // Parsed and its patterns compiled (linear-time engine, yielding between patterns): a config
    // this backend could never serve is refused now, with the reason, not at first use.
    await compileConfigPatterns(parseAdapterConfig(json));
  } catch (err) {
    throw new UploadError((err as Error).message, 422);
  }
}

export function adapterRoutes(rt: Runtime): Hono<AuthEnv> {
  const app = new Hono<AuthEnv>();
  const locks = new KeyedLock();
  const uploading = new Map<string, number>();

  const root = () => (rt.config.adapterRoot ? path.resolve(rt.config.adapterRoot) : null);
  // Partial files a crash left behind (a day old: replicas sharing one root may be mid-upload).
  const r0 = root();
  if (r0) void removeStale(path.join(r0, STAGING_DIR), 24 * 3600 * 1000);
  const target = (tenant: string, name: string) => {
    const r = root();
    return r ? path.join(r, TENANTS_DIR, tenant, name) : null;
  };

  // Only the gateway, for the tenant the token names, with the write scope.
  app.use('/adapters/tenants/:tenant/*', async (c, next) => {
    const caller = c.get('caller');
    const tenant = c.req.param('tenant');
    if (!caller.viaGateway || caller.tenant !== tenant || !caller.scopes.has(ADAPTERS_WRITE_SCOPE)) {
      return c.json(loraxError('adapter uploads need a gateway token for this tenant with scope adapters:write', 'unauthorized'), 403);
    }
    if (!isTenantId(tenant)) return c.json(loraxError('bad tenant name', 'validation'), 400);
    return next();
  });

  app.put('/adapters/tenants/:tenant/:name/:file', async (c) => {
    const { tenant, name, file } = c.req.param();
    if (!isAdapterName(name)) return c.json(loraxError(`adapter name "${name}" must be letters, digits, ".", "_" or "-"`, 'validation'), 400);
    if (!isAdapterFile(file)) return c.json(loraxError(`file must be one of ${ADAPTER_FILES.join(', ')}`, 'validation'), 400);
    const dir = target(tenant, name);
    if (!dir) return c.json(loraxError('this backend has no --adapter-root for tenant adapters', 'validation'), 400);
    const isConfig = file === 'adapter_config.json';
    const max = isConfig ? MAX_ADAPTER_CONFIG_BYTES : MAX_ADAPTER_BYTES;
    const len = Number(c.req.header('content-length') ?? 'NaN');
    if (Number.isFinite(len) && len > max) return c.json(loraxError(`adapter file is larger than ${max} bytes`, 'validation'), 413);
    const busy = uploading.get(tenant) ?? 0;
    if (busy >= rt.config.maxUploadsPerTenant) {
      return c.json(loraxError(`tenant ${tenant} already has ${busy} uploads in progress on this backend; retry when one finishes`, 'overloaded'), 429, { 'retry-after': '1' });
    }
    uploading.set(tenant, busy + 1);
    const staging = path.join(root()!, STAGING_DIR);
    const tmp = path.join(staging, `${randomUUID()}.partial`);
    try {
      await mkdir(staging, { recursive: true });
      const kept: Uint8Array[] | null = isConfig ? [] : null;
      const bytes = await streamToFile(c.req.raw.body, tmp, max, kept);
      if (kept) await checkConfig(kept);
      await locks.run(`${tenant}/${name}`, async () => {
        await mkdir(dir, { recursive: true });
        await rename(tmp, path.join(dir, file));
      });
      return c.json({ adapter_id: tenantAdapterId(tenant, name), file, bytes });
    } catch (err) {
      if (err instanceof UploadError) return c.json(loraxError(err.message, 'validation'), err.status);
      throw err;
    } finally {
      const n = (uploading.get(tenant) ?? 1) - 1;
      if (n > 0) uploading.set(tenant, n);
      else uploading.delete(tenant);
      await rm(tmp, { force: true });
    }
  });

  app.delete('/adapters/tenants/:tenant/:name', async (c) => {
    const { tenant, name } = c.req.param();
    if (!isAdapterName(name)) return c.json(loraxError('bad adapter name', 'validation'), 400);
    const dir = target(tenant, name);
    if (!dir) return c.json(loraxError('this backend has no --adapter-root for tenant adapters', 'validation'), 400);
    await locks.run(`${tenant}/${name}`, () => rm(dir, { recursive: true, force: true }));
    return c.json({ deleted: tenantAdapterId(tenant, name) });
  });

  return app;
}
