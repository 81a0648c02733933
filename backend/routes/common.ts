// Pieces every route module shares: reading a JSON body with a size limit, mapping errors to a
// status, and the adapter choice a request names.
import type { Context } from 'hono';
import { BASE_MODEL_ADAPTER_ID, isServedAdapterSource, SERVED_ADAPTER_SOURCES, type GenerateParameters } from '../../protocol/index.ts';
import type { AdapterChoice } from '../adapters/resolve.ts';
import type { AdapterSourceName } from '../adapters/source.ts';
import { RequestError } from '../errors.ts';
import type { Runtime } from '../runtime.ts';
import { mayUseAdapter, type AuthEnv } from '../auth.ts';

export type Ctx = Context<AuthEnv>;

export const MAX_BODY_BYTES = 4 * 1024 * 1024;

/** Parses the JSON body; 413 past the limit, 400 for bad JSON. */
export async function readJsonBody(c: Context<AuthEnv>): Promise<unknown> {
  const len = Number(c.req.header('content-length') ?? '0');
  if (len > MAX_BODY_BYTES) throw new RequestError(`request body is larger than ${MAX_BODY_BYTES} bytes`, 413);
  const buf = await c.req.arrayBuffer();
  if (buf.byteLength > MAX_BODY_BYTES) throw new RequestError(`request body is larger than ${MAX_BODY_BYTES} bytes`, 413);
  const text = new TextDecoder().decode(buf);
  if (text.trim() === '') throw new RequestError('request body must be a JSON object', 400);
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new RequestError(`request body is not valid JSON: ${(err as Error).message}`, 400);
  }
}

/**
 * The api_token of a request: the body's, else (LoRAX) the bearer token of the request, unless
 * a gateway signed the request (then Authorization holds the service token, not a hub token).
 */
export function apiTokenOf(c: Ctx, bodyToken: string | undefined): string | undefined {
  if (bodyToken) return bodyToken;
  if (c.get('caller')?.viaGateway) return undefined;
  const auth = c.req.header('authorization');
  const m = auth && /^Bearer\s+(.+)$/i.exec(auth);
  return m ? m[1] : undefined;
}

function servedSource(source: string | undefined, rt: Runtime): AdapterSourceName {
  const s = source ?? rt.config.adapterSource;
  if (!isServedAdapterSource(s)) throw new RequestError(`adapter_source "${s}" is not supported by this server (use ${SERVED_ADAPTER_SOURCES.map((x) => `"${x}"`).join(' or ')})`, 422);
  return s;
}

/** Whether a model / adapter name means the base model. */
export function isBaseModelName(rt: Runtime, name: string | undefined): boolean {
  return !name || name === BASE_MODEL_ADAPTER_ID || name === rt.modelName || name === rt.config.modelId;
}

/** Another tenant's adapter answers exactly like one that does not exist. */
function checkTenant(c: Ctx, id: string, source: AdapterSourceName): void {
  const caller = c.get('caller');
  if (source === 'local' && caller && !mayUseAdapter(caller, id)) throw new RequestError(`adapter "${id}" not found`, 404, 'adapter');
}

export function loraxAdapterChoice(rt: Runtime, c: Ctx, p: GenerateParameters): AdapterChoice {
  const apiToken = apiTokenOf(c, p.api_token);
  const token = apiToken ? { apiToken } : {};
  if (p.merged_adapters) {
    const m = p.merged_adapters;
    const source = servedSource(p.adapter_source, rt);
    for (const id of m.ids) checkTenant(c, id, source);
    return {
      kind: 'merged',
      refs: m.ids.map((id) => ({ id, source, ...token })),
      weights: m.weights,
      strategy: m.merge_strategy,
      density: m.density,
      majoritySignMethod: m.majority_sign_method,
    };
  }
  if (isBaseModelName(rt, p.adapter_id)) return { kind: 'base' };
  const source = servedSource(p.adapter_source, rt);
  checkTenant(c, p.adapter_id!, source);
  return { kind: 'single', ref: { id: p.adapter_id!, source, ...token } };
}

export function openaiAdapterChoice(rt: Runtime, c: Ctx, model: string, sourceName: string | undefined, bodyToken: string | undefined): AdapterChoice {
  if (isBaseModelName(rt, model)) return { kind: 'base' };
  const source = servedSource(sourceName, rt);
  checkTenant(c, model, source);
  const apiToken = apiTokenOf(c, bodyToken);
  return { kind: 'single', ref: { id: model, source, ...(apiToken ? { apiToken } : {}) } };
}
