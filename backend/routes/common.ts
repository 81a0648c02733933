// Pieces every route module shares: reading a JSON body with a size limit, mapping errors to a
// status, and the adapter choice a request names.
import type { Context } from 'hono';
import { BASE_MODEL_ADAPTER_ID, isServedAdapterSource, SERVED_ADAPTER_SOURCES, type GenerateParameters } from '../../protocol/index.ts';
import type { AdapterChoice } from '../adapters/resolve.ts';
import type { AdapterSourceName } from '../adapters/source.ts';
import { RequestError } from '../errors.ts';
import type { Runtime } from '../runtime.ts';
import type { AuthEnv } from '../auth.ts';
import { checkLocalAdapterId } from '../../protocol/adapter-id.ts';
import { bodyStats, JsonBodyError, parseJsonBodyAsync, readJsonStream, type BodyCheck, type CheckOutcome, type LargeText, type NodeBodyStream } from '../json-body.ts';
import { parseNamedRequest, type ErrorResponse, type NamedRequest, type OpenAIErrorResponse, type RequestSchemaName } from '../../protocol/index.ts';
import { requestRefusal, type RequestRefusal } from '../request-limits.ts';
import { SchemaJson, schemaSlot } from '../structured/schema-json.ts';

export type Ctx = Context<AuthEnv>;

export const MAX_BODY_BYTES = 4 * 1024 * 1024;

/**
 * Reads a request body with the size limit enforced while reading (a chunked body has no
 * Content-Length to trust). Past the limit it stops reading without cancelling the stream: a
 * cancel would tear the socket down and the client would see a reset instead of the 413.
 */
function bodyTooLarge(c: Context<AuthEnv>, maxBytes: number, what = 'request body'): RequestError {
  // The rest of the body is never read, so the connection must not be reused after the answer.
  c.header('connection', 'close');
  return new RequestError(`${what} is larger than ${maxBytes} bytes`, 413);
}

export async function readBodyBytes(c: Context<AuthEnv>, maxBytes: number, what = 'request body'): Promise<Uint8Array> {
  const tooLarge = () => bodyTooLarge(c, maxBytes, what);
  const len = Number(c.req.header('content-length') ?? 'NaN');
  if (Number.isFinite(len) && len > maxBytes) throw tooLarge();
  const body = c.req.raw.body;
  if (!body) return new Uint8Array(0);
  const reader = body.getReader();
  const parts: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      reader.releaseLock();
      throw tooLarge();
    }
    parts.push(value);
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.byteLength;
  }
  return out;
}

/**
 * Parses the JSON body; 413 past the limit, 400 for bad JSON or nesting deeper than
 * MAX_JSON_DEPTH. Large bodies are gathered, decoded and parsed off the event loop (json-body.ts).
 */
export async function readJsonBody(c: Context<AuthEnv>): Promise<unknown> {
  return (await readBody(c, null, null)).value;
}

/**
 * readJsonBody for a route whose prompt is the top-level field `keep`: in a large body, a long
 * string there stays on the parser thread (json-body.ts's LargeText, released when the response
 * closes) and `value` holds a stand-in the schema accepts as it would the prompt. Use `prompt`
 * (when not null) in its place.
 */
export async function readPromptBody(c: Context<AuthEnv>, keep: string | null): Promise<{ value: unknown; prompt: LargeText | null }> {
  const { value, prompt } = await readBody(c, keep, null);
  return { value, prompt };
}

/**
 * A request body read, parsed and validated with the named schema and the server's limits
 * (request-limits.ts), on the parser thread for a large body and here for a small one, with the
 * same answers: `invalid` carries the schema's error body and status (the route answers it as it
 * is), a limit's refusal is thrown as the RequestError the route would throw. `prompt` as in
 * readPromptBody.
 */
export async function readRequest<N extends RequestSchemaName>(
  c: Context<AuthEnv>,
  name: N,
  rt: Pick<Runtime, 'limits' | 'tokenizePool'>,
  keep: string | null = null,
): Promise<{ ok: true; data: NamedRequest<N>; prompt: LargeText | null } | { ok: false; status: number; error: ErrorResponse | OpenAIErrorResponse }> {
  const { maxInputLength, maxConcurrentRequests } = rt.limits;
  const check: BodyCheck = { name, limits: { maxInputLength, maxConcurrentRequests, maxCharsPerToken: rt.tokenizePool.maxCharsPerToken } };
  const body = await readBody(c, keep, check);
  let outcome: CheckOutcome | null = body.checked;
  let data: unknown = body.value;
  if (!outcome) {
    bodyStats.checkedOnLoop++;
    const parsed = parseNamedRequest(name, body.value);
    if (!parsed.success) outcome = { kind: 'invalid', status: parsed.status, error: parsed.error };
    else {
      data = parsed.data;
      const refusal = requestRefusal(name, data, check.limits);
      outcome = refusal ? { kind: 'refused', refusal } : { kind: 'valid' };
    }
  }
  if (outcome.kind !== 'valid') body.prompt?.release();
  if (outcome.kind === 'invalid') return { ok: false, status: outcome.status, error: outcome.error };
  if (outcome.kind === 'refused') throw refusalError(outcome.refusal);
  if (body.schemaJson !== null) {
    const slot = schemaSlot(name, data);
    if (slot) slot.owner[slot.key] = new SchemaJson(body.schemaJson);
    bodyStats.schemaTexts++;
  }
  return { ok: true, data: data as NamedRequest<N>, prompt: body.prompt };
}

function refusalError(r: RequestRefusal): RequestError {
  return new RequestError(r.message, r.status, 'validation', r.param !== undefined ? { param: r.param } : {});
}

async function readBody(c: Context<AuthEnv>, keep: string | null, check: BodyCheck | null): Promise<{ value: unknown; prompt: LargeText | null; checked: CheckOutcome | null; schemaJson: string | null }> {
  try {
    // On Node, straight from the IncomingMessage: a large body's chunks go to the parser thread as
    // they arrive (never gathered on the loop, nor copied again by a web stream).
    const incoming = (c.env as { incoming?: Partial<NodeBodyStream> } | undefined)?.incoming;
    if (incoming && typeof incoming.on === 'function' && typeof incoming.pause === 'function' && incoming.readableEnded === false) {
      const declared = Number(c.req.header('content-length') ?? 'NaN');
      if (Number.isFinite(declared) && declared > MAX_BODY_BYTES) throw bodyTooLarge(c, MAX_BODY_BYTES);
      const { value, kept, checked, schemaJson } = await readJsonStream(incoming as NodeBodyStream, {
        maxBytes: MAX_BODY_BYTES,
        declaredBytes: Number.isFinite(declared) ? declared : null,
        tooLarge: () => bodyTooLarge(c, MAX_BODY_BYTES),
        keep,
        check,
      });
      if (kept) {
        const outgoing = (c.env as { outgoing?: { destroyed?: boolean; once(ev: 'close', fn: () => void): unknown } } | undefined)?.outgoing;
        if (!outgoing) {
          // Nothing says when the request ends: the text comes to the loop now.
          const text = await kept.text().finally(() => kept.release());
          if (checked && checked.kind !== 'valid') return { value, prompt: null, checked, schemaJson };
          return { value: Object.assign(value as Record<string, unknown>, { [keep!]: text }), prompt: null, checked, schemaJson };
        }
        // Closed already (the client left while the body was parsed): nobody will use it.
        if (outgoing.destroyed === true) kept.release();
        else outgoing.once('close', () => kept.release());
      }
      return { value, prompt: kept, checked, schemaJson };
    }
    return { ...(await parseJsonBodyAsync(await readBodyBytes(c, MAX_BODY_BYTES), check)), prompt: null };
  } catch (err) {
    if (err instanceof JsonBodyError) throw new RequestError(err.message, err.status);
    throw err;
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
  const s = source ?? rt.config.defaultAdapterSource ?? rt.config.adapterSource;
  if (s === 'pbase') {
    throw new RequestError('adapter_source "pbase" is Predibase\'s hosted adapter registry, reachable only from Predibase\'s own deployments; download the adapter and serve it with adapter_source "hub", "s3" or "local"', 422);
  }
  if (!isServedAdapterSource(s)) throw new RequestError(`adapter_source "${s}" is not supported by this server (use ${SERVED_ADAPTER_SOURCES.map((x) => `"${x}"`).join(' or ')})`, 422);
  return s;
}

/** Whether a model / adapter name means the base model. */
export function isBaseModelName(rt: Runtime, name: string | undefined): boolean {
  return !name || name === BASE_MODEL_ADAPTER_ID || name === rt.modelName || name === rt.config.modelId;
}

/**
 * Tenancy is decided on the canonical id: a local id in any other spelling, or one under another
 * tenant's directory, answers exactly like an adapter that does not exist (LocalSource refuses the
 * same ids again, and anything outside the adapter root, with the same words).
 */
function checkTenant(c: Ctx, id: string, source: AdapterSourceName): void {
  if (source !== 'local') return;
  const canonical = checkLocalAdapterId(id);
  const caller = c.get('caller');
  if (!canonical.ok || (canonical.tenant !== null && caller && caller.tenant !== null && canonical.tenant !== caller.tenant)) {
    throw new RequestError(`adapter "${id}" not found`, 404, 'adapter');
  }
}

export function loraxAdapterChoice(rt: Runtime, c: Ctx, p: GenerateParameters): AdapterChoice {
  const apiToken = apiTokenOf(c, p.api_token);
  if (p.merged_adapters) {
    const m = p.merged_adapters;
    const source = servedSource(p.adapter_source, rt);
    for (const id of m.ids) checkTenant(c, id, source);
    // Each id carries its own token when the request says which (the gateway always does); a
    // request-wide api_token is the caller's own and goes with every id, as in LoRAX.
    const tokenOf = (i: number): string | undefined => (m.api_tokens ? (m.api_tokens[i] ?? undefined) : apiToken);
    return {
      kind: 'merged',
      refs: m.ids.map((id, i) => {
        const t = tokenOf(i);
        return { id, source, ...(t ? { apiToken: t } : {}) };
      }),
      weights: m.weights,
      strategy: m.merge_strategy,
      density: m.density,
      majoritySignMethod: m.majority_sign_method,
    };
  }
  if (isBaseModelName(rt, p.adapter_id)) return { kind: 'base' };
  const source = servedSource(p.adapter_source, rt);
  checkTenant(c, p.adapter_id!, source);
  return { kind: 'single', ref: { id: p.adapter_id!, source, ...(apiToken ? { apiToken } : {}) } };
}

export function openaiAdapterChoice(rt: Runtime, c: Ctx, model: string, sourceName: string | undefined, bodyToken: string | undefined): AdapterChoice {
  if (isBaseModelName(rt, model)) return { kind: 'base' };
  const source = servedSource(sourceName, rt);
  checkTenant(c, model, source);
  const apiToken = apiTokenOf(c, bodyToken);
  return { kind: 'single', ref: { id: model, source, ...(apiToken ? { apiToken } : {}) } };
}
