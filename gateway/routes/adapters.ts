// A tenant's own adapters, behind the auth middleware (adapters:read / adapters:write):
//   GET /v1/adapters, POST /v1/adapters {name, repo, token?}, GET|DELETE /v1/adapters/:name,
//   PUT /v1/adapters/:name/:file (raw body: adapter_config.json or adapter_model.safetensors).
// The work (registry, fan-out of uploads to every replica) is tenant-adapters.ts's AdapterManager,
// shared with the admin API's on-behalf routes.
import type { Handler } from 'hono';
import type { GatewayEnv, Services } from '../services.ts';
import { HubAdapterInput, parseInput } from './inputs.ts';

export function tenantAdapterRoutes(svc: Services) {
  const { adapters } = svc;
  return {
    list: (async (c) => c.json({ object: 'list', data: await adapters.list(c.get('principal').tenant) })) satisfies Handler<GatewayEnv>,
    register: (async (c) => c.json(await adapters.registerHub(c.get('principal').tenant, parseInput(HubAdapterInput, await svc.readBody(c))), 201)) satisfies Handler<GatewayEnv>,
    get: (async (c) => c.json(await adapters.get(c.get('principal').tenant, c.req.param('name')!))) satisfies Handler<GatewayEnv>,
    remove: (async (c) => c.json(await adapters.remove(c.get('principal').tenant, c.req.param('name')!))) satisfies Handler<GatewayEnv>,
    upload: (async (c) =>
      c.json(await adapters.uploadFile(c.get('principal').tenant, c.req.param('name')!, c.req.param('file')!, c.req.raw, svc.opts.maxAdapterBytes))) satisfies Handler<GatewayEnv>,
  };
}
