// Pieces every route module shares: reading a JSON body with a size limit, mapping errors to a
// status, and the adapter choice a request names.
import type { Context } from 'hono';
import { BASE_MODEL_ADAPTER_ID, type GenerateParameters } from '../../protocol/index.ts';
import type { AdapterChoice } from '../adapters/resolve.ts';
import type { AdapterSourceName } from '../adapters/source.ts';
import { RequestError } from '../generate.ts';
import type { Runtime } from '../runtime.ts';

export const MAX_BODY_BYTES = 4 * 1024 * 1024;

/** Parses the JSON body; 413 past the limit, 400 for bad JSON. */
export async function readJsonBody(c: Context): Promise<unknown> {
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

/** The api_token of a request: the body's, else (LoRAX) the bearer token of the request. */
export function apiTokenOf(c: Context, bodyToken: string | undefined): string | undefined {
  if (bodyToken) return bodyToken;
  const auth = c.req.header('authorization');
  const m = auth && /^Bearer\s+(.+)$/i.exec(auth);
  return m ? m[1] : undefined;
}

function servedSource(source: string | undefined, rt: Runtime): AdapterSourceName {
  const s = source ?? rt.config.adapterSource;
  if (s !== 'hub' && s !== 'local') throw new RequestError(`adapter_source "${s}" is not supported by this server (use "hub" or "local")`, 422);
  return s;
}

/** Whether a model / adapter name means the base model. */
export function isBaseModelName(rt: Runtime, name: string | undefined): boolean {
  return !name || name === BASE_MODEL_ADAPTER_ID || name === rt.modelName || name === rt.config.modelId;
}

export function loraxAdapterChoice(rt: Runtime, p: GenerateParameters, apiToken: string | undefined): AdapterChoice {
  const token = apiToken ? { apiToken } : {};
  if (p.merged_adapters) {
    const m = p.merged_adapters;
    const source = servedSource(p.adapter_source, rt);
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
  return { kind: 'single', ref: { id: p.adapter_id!, source: servedSource(p.adapter_source, rt), ...token } };
}

export function openaiAdapterChoice(rt: Runtime, model: string, source: string | undefined, apiToken: string | undefined): AdapterChoice {
  if (isBaseModelName(rt, model)) return { kind: 'base' };
  return { kind: 'single', ref: { id: model, source: servedSource(source, rt), ...(apiToken ? { apiToken } : {}) } };
}
