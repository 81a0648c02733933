// Tenant adapter files, written by the gateway (docs/gateway-backend-contract.md):
// PUT /adapters/tenants/<tenant>/<name>/<file> and DELETE /adapters/tenants/<tenant>/<name>.
// Files land under --adapter-root; a new upload gets a new store key (see resolve.ts), so an
// adapter replaced in place is never served from a stale copy.
import { Hono } from 'hono';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ADAPTER_FILES, ADAPTERS_WRITE_SCOPE, isAdapterFile, isAdapterName, isTenantId, loraxError, tenantAdapterId, TENANTS_DIR } from '../../protocol/index.ts';
import type { AuthEnv } from '../auth.ts';
import type { Runtime } from '../runtime.ts';

export const MAX_ADAPTER_BYTES = 2 * 1024 ** 3;

export function adapterRoutes(rt: Runtime): Hono<AuthEnv> {
  const app = new Hono<AuthEnv>();

  const target = (tenant: string, name: string) => {
    const root = rt.config.adapterRoot;
    if (!root) return null;
    return path.join(path.resolve(root), TENANTS_DIR, tenant, name);
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
    const len = Number(c.req.header('content-length') ?? '0');
    if (len > MAX_ADAPTER_BYTES) return c.json(loraxError('adapter file too large', 'validation'), 413);
    const body = new Uint8Array(await c.req.arrayBuffer());
    if (body.byteLength > MAX_ADAPTER_BYTES) return c.json(loraxError('adapter file too large', 'validation'), 413);
    await mkdir(dir, { recursive: true });
    const tmp = path.join(dir, `.${file}.${process.pid}.${Date.now()}.partial`);
    await writeFile(tmp, body);
    await rename(tmp, path.join(dir, file));
    return c.json({ adapter_id: tenantAdapterId(tenant, name), file, bytes: body.byteLength });
  });

  app.delete('/adapters/tenants/:tenant/:name', async (c) => {
    const { tenant, name } = c.req.param();
    if (!isAdapterName(name)) return c.json(loraxError('bad adapter name', 'validation'), 400);
    const dir = target(tenant, name);
    if (!dir) return c.json(loraxError('this backend has no --adapter-root for tenant adapters', 'validation'), 400);
    await rm(dir, { recursive: true, force: true });
    return c.json({ deleted: tenantAdapterId(tenant, name) });
  });

  return app;
}
