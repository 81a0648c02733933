// Admin API (Authorization: Bearer <admin token>), OpenAI-shaped errors:
//   POST   /admin/keys                      issue a key {tenant, name?, scopes?, limits?, expires_at?} (the key is shown once)
//   GET    /admin/keys[?tenant=]            list keys (never the secret)
//   GET    /admin/keys/:id
//   DELETE /admin/keys/:id                  revoke
//   GET    /admin/tenants                   list tenants
//   GET    /admin/tenants/:tenant           a tenant and its limits
//   PUT    /admin/tenants/:tenant           {limits}
//   GET    /admin/tenants/:tenant/usage[?days=30]
//   GET|POST /admin/tenants/:tenant/adapters, GET|DELETE .../adapters/:name, PUT .../adapters/:name/:file
//   GET    /admin/shared-adapters, PUT|DELETE /admin/shared-adapters/:name   (public adapters every tenant may use)
import { Hono, type Context } from 'hono';
import { checkLocalAdapterId } from '../../protocol/adapter-id.ts';
import { TENANT_ID, TENANTS_DIR } from '../../protocol/index.ts';
import { issueKey } from '../auth/api-keys.ts';
import { GatewayError } from '../errors.ts';
import { adminAuth } from '../middleware/auth.ts';
import type { Services } from '../services.ts';
import { utcDay, type ApiKeyRecord, type GatewayStore, type Limits, type SharedAdapterRecord } from '../store/types.ts';
import { HubAdapterInput, IssueKeyInput, parseInput, SHARED_ADAPTER_NAME, SharedAdapterInput, TenantInput } from './inputs.ts';

function keyView(r: ApiKeyRecord) {
  return { object: 'api_key', ...r };
}

function tenantParam(c: Context): string {
  const t = c.req.param('tenant') ?? '';
  if (!TENANT_ID.test(t)) throw new GatewayError(400, `tenant "${t}" must be 1-63 lowercase letters, digits or "-"`, { param: 'tenant' });
  return t;
}

async function ensureTenant(store: GatewayStore, id: string): Promise<void> {
  if (!(await store.getTenant(id))) await store.putTenant({ id, limits: null, created_at: new Date().toISOString() });
}

/** The admin API as a sub-app mounted at /admin (its own auth middleware: the admin token). */
export function adminRoutes(svc: Services): Hono {
  const app = new Hono();
  const deps = { store: svc.store, adapters: svc.adapters, resolver: svc.resolver, box: svc.box, maxAdapterBytes: svc.opts.maxAdapterBytes };
  app.use('*', adminAuth(svc.deps.adminToken ?? null));

  // --- keys ---
  app.post('/keys', async (c) => {
    const input = parseInput(IssueKeyInput, await svc.readBody(c));
    await ensureTenant(deps.store, input.tenant);
    const { key, record } = await issueKey(deps.store, {
      tenant: input.tenant,
      name: input.name ?? null,
      scopes: input.scopes ?? null,
      limits: (input.limits as Limits | null | undefined) ?? null,
      expiresAt: input.expires_at ?? null,
    });
    return c.json({ ...keyView(record), key }, 201);
  });
  app.get('/keys', async (c) => {
    const tenant = c.req.query('tenant');
    return c.json({ object: 'list', data: (await deps.store.listKeys(tenant || undefined)).map(keyView) });
  });
  app.get('/keys/:id', async (c) => {
    const r = await deps.store.getKey(c.req.param('id'));
    if (!r) throw new GatewayError(404, `key "${c.req.param('id')}" not found`);
    return c.json(keyView(r));
  });
  app.delete('/keys/:id', async (c) => {
    const r = await deps.store.revokeKey(c.req.param('id'), new Date().toISOString());
    if (!r) throw new GatewayError(404, `key "${c.req.param('id')}" not found`);
    return c.json(keyView(r));
  });

  // --- tenants ---
  app.get('/tenants', async (c) => c.json({ object: 'list', data: await deps.store.listTenants() }));
  app.get('/tenants/:tenant', async (c) => {
    const t = tenantParam(c);
    const r = await deps.store.getTenant(t);
    if (!r) throw new GatewayError(404, `tenant "${t}" not found`);
    return c.json(r);
  });
  app.put('/tenants/:tenant', async (c) => {
    const t = tenantParam(c);
    const input = parseInput(TenantInput, await svc.readBody(c));
    const prev = await deps.store.getTenant(t);
    const rec = { id: t, limits: (input.limits as Limits | null) ?? null, created_at: prev?.created_at ?? new Date().toISOString() };
    await deps.store.putTenant(rec);
    svc.quota.invalidate(t);
    return c.json(rec);
  });
  app.get('/tenants/:tenant/usage', async (c) => {
    const t = tenantParam(c);
    const n = Math.min(400, Math.max(1, Number(c.req.query('days') ?? '30') || 30));
    const today = Date.now();
    const days = Array.from({ length: n }, (_, i) => utcDay(today - i * 86_400_000));
    return c.json(await deps.store.getUsage(t, days));
  });

  // --- a tenant's adapters, on its behalf ---
  app.get('/tenants/:tenant/adapters', async (c) => c.json({ object: 'list', data: await deps.adapters.list(tenantParam(c)) }));
  app.post('/tenants/:tenant/adapters', async (c) => {
    const t = tenantParam(c);
    const input = parseInput(HubAdapterInput, await svc.readBody(c));
    await ensureTenant(deps.store, t);
    return c.json(await deps.adapters.registerHub(t, input), 201);
  });
  app.get('/tenants/:tenant/adapters/:name', async (c) => c.json(await deps.adapters.get(tenantParam(c), c.req.param('name'))));
  app.delete('/tenants/:tenant/adapters/:name', async (c) => c.json(await deps.adapters.remove(tenantParam(c), c.req.param('name'))));
  app.put('/tenants/:tenant/adapters/:name/:file', async (c) => {
    const t = tenantParam(c);
    await ensureTenant(deps.store, t);
    return c.json(await deps.adapters.uploadFile(t, c.req.param('name'), c.req.param('file'), c.req.raw, deps.maxAdapterBytes));
  });

  // --- shared public adapters ---
  const sharedView = (r: SharedAdapterRecord) => ({ name: r.name, source: r.source, adapter_id: r.adapter_id, has_token: r.token_sealed !== null, created_at: r.created_at });
  app.get('/shared-adapters', async (c) => c.json({ object: 'list', data: (await deps.store.listShared()).map(sharedView) }));
  app.put('/shared-adapters/:name{.+}', async (c) => {
    const name = c.req.param('name');
    if (!SHARED_ADAPTER_NAME.test(name)) throw new GatewayError(400, `shared adapter name "${name}" must be letters, digits, ".", "_", "-" (optionally "owner/name")`, { param: 'name' });
    const input = parseInput(SharedAdapterInput, await svc.readBody(c));
    if (input.source === 'local') {
      // Decided on the canonical spelling only: "./tenants/a/x", "tenants//a/x" and the like would
      // otherwise pass a prefix check and hand every tenant another tenant's weights.
      const id = checkLocalAdapterId(input.adapter_id);
      if (!id.ok || id.kind !== 'relative' || id.tenant !== null || id.segments[0]!.toLowerCase() === TENANTS_DIR) {
        throw new GatewayError(400, `a shared local adapter must be a canonical path inside the backend adapter root ("dir/name": letters, digits, "._-@+=", no ".", "..", empty or leading-dot segments), outside ${TENANTS_DIR}/`, {
          param: 'adapter_id',
        });
      }
    }
    const prev = await deps.store.getShared(name);
    const rec: SharedAdapterRecord = {
      name,
      source: input.source,
      adapter_id: input.adapter_id,
      token_sealed: input.api_token ? await deps.box.seal(input.api_token) : null,
      created_at: prev?.created_at ?? new Date().toISOString(),
    };
    await deps.store.putShared(rec);
    deps.resolver.invalidateShared(name);
    return c.json(sharedView(rec), prev ? 200 : 201);
  });
  app.delete('/shared-adapters/:name{.+}', async (c) => {
    const name = c.req.param('name');
    if (!(await deps.store.deleteShared(name))) throw new GatewayError(404, `shared adapter "${name}" not found`);
    deps.resolver.invalidateShared(name);
    return c.json({ name, deleted: true });
  });

  app.notFound(() => {
    throw new GatewayError(404, 'no such admin route');
  });
  return app;
}

