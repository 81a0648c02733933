// The forwarded inference routes (LoRAX: /generate, /generate_stream, /; OpenAI: /v1/chat/completions,
// /v1/completions), behind the auth middleware. Per request: read and validate the body (the
// route's endpoints/ module; JSON Schema checks) -> resolve the tenant's adapter names -> reserve
// quota (rpm, token budget, stream slot) -> forward to a replica by adapter affinity -> relay the
// answer, counting tokens -> settle the quota with the real count, however the request ends.
import type { Handler } from 'hono';
import { loraxError, openaiError } from '../../protocol/index.ts';
import { replicasOf, scrubIds, type AdapterSelection } from '../adapters.ts';
import type { LoraxRoute } from '../endpoints/lorax.ts';
import type { ParsedRequest, ParseOutcome, TokenUsage, Validated } from '../endpoints/types.ts';
import type { RequestSchemaName } from '../../protocol/request-schemas.ts';
import { GatewayError, jsonResponse, ShapedError, type ApiKind } from '../errors.ts';
import { callUpstream, relayStream, type StreamInspector, type StreamOutcome, type Upstream } from '../forward.ts';
import { checkJsonSchema } from '../json-schema.ts';
import { randomId } from '../lib/crypto.ts';
import { oversizedFor } from '../limits.ts';
import { reserve } from '../quota.ts';
import type { GatewayContext, GatewayEnv, Services } from '../services.ts';
import { endSpan, SpanKind, startSpan, type ActiveSpan } from '../telemetry.ts';

export type { LoraxRoute };

function schemaError(api: ApiKind, path: string, message: string): ShapedError {
  return api === 'lorax'
    ? new ShapedError(422, loraxError(`Input validation error: ${path}: ${message}`, 'validation'))
    : new ShapedError(400, openaiError(`${path}: ${message}`, 'invalid_request_error', path, 'invalid_value'));
}

function adapterLabel(sel: AdapterSelection): string | null {
  return sel.kind === 'single' ? sel.target.name : sel.kind === 'merged' ? sel.targets.map((t) => t.name).join('+') : null;
}

/** A handler for one inference route: `parse` is its endpoints/ parser. */
/** An endpoint's parser: the body, and its schema's result when the JSON thread validated it already. */
export type EndpointParse = (raw: unknown, valid?: Validated) => ParseOutcome;

export function inference(svc: Services, api: ApiKind, path: string, schema: RequestSchemaName, parse: EndpointParse): Handler<GatewayEnv> {
  return async (c) => {
    const principal = c.get('principal');
    // Until the reservation (which re-checks the key atomically), any answer confirms a cached key first.
    let before: Awaited<ReturnType<typeof admit>>;
    try {
      before = await admit(svc, c, api, path, schema, parse);
    } catch (err) {
      await svc.confirmKey(principal);
      throw err;
    }
    if (before instanceof Response) {
      await svc.confirmKey(principal);
      return before;
    }
    const { req, sel, budget, reservation } = before;
    // From here on the reservation is settled exactly once, however the request ends.
    const settle = (u: TokenUsage) => reservation.settle(u);

    const fwd = startSpan('gateway.forward', c.get('otel'), { 'switchboard.route': path, 'switchboard.stream': req.stream }, SpanKind.CLIENT);
    let up: Upstream;
    try {
      up = await forward(svc, c, path, req, sel, fwd);
    } catch (err) {
      endSpan(fwd, err);
      settle({ promptTokens: 0, completionTokens: 0 });
      throw err;
    }
    fwd.span.setAttributes({ 'switchboard.backend': up.backend.index, 'http.response.status_code': up.res.status });
    const headers: Record<string, string> = { ...reservation.headers };
    if (svc.opts.exposeBackend) headers['x-switchboard-backend'] = String(up.backend.index);

    if (!up.res.ok) return upstreamError(svc, up, sel, headers, fwd, settle);
    if (req.stream && up.reader) return relay(up, req, sel, headers, fwd, settle, budget.promptGuess);
    return finishJson(svc, c, up, req, sel, headers, fwd, settle, budget.promptGuess);
  };
}

/** Body, validation, adapter names, token budget and the reservation: an answer instead when the request goes no further. */
async function admit(svc: Services, c: GatewayContext, api: ApiKind, path: string, schema: RequestSchemaName, parse: EndpointParse) {
  const principal = c.get('principal');
  const body = await svc.readRequest(c, schema);
  const parsed = parse(body.raw, body.valid ?? undefined);
  if (!parsed.ok) return jsonResponse(parsed.error, parsed.status);
  const req = parsed.req;
  for (const s of req.schemas) {
    const problem = checkJsonSchema(s.schema, svc.opts.schemaLimits);
    if (problem) throw schemaError(api, s.path, problem);
  }
  const bi = await svc.backendInfo.get(principal.tenant, c.get('otel'));
  const sel = await svc.resolver.select(principal.tenant, bi, req.single, req.merged);
  const budget = req.budget(bi, { promptBytesPerToken: svc.opts.promptBytesPerToken });
  const scopes = await svc.quota.of(principal);
  const big = oversizedFor(scopes, budget.reserve);
  if (big) {
    const msg = `this request may use up to ${budget.reserve} tokens (prompt + max tokens for every sequence), more than the ${big.limit} tokens per minute allowed; lower ${api === 'lorax' ? 'parameters.max_new_tokens' : 'max_tokens'}`;
    throw api === 'lorax' ? new ShapedError(422, loraxError(`Input validation error: ${msg}`, 'validation')) : new GatewayError(400, msg, { code: 'tokens_exceed_limit' });
  }
  const onUsage = svc.deps.onUsage;
  const reservation = await reserve(svc, c, principal, scopes, budget.reserve, {
    leaseId: req.stream ? randomId('lease') : null,
    onSettle: onUsage ? (u) => onUsage(c.req.raw, { tenant: principal.tenant, adapter: adapterLabel(sel), ...u }) : undefined,
  });
  return { req, sel, budget, reservation };
}

async function forward(svc: Services, c: GatewayContext, path: string, req: ParsedRequest, sel: AdapterSelection, fwd: ActiveSpan): Promise<Upstream> {
  const body = await svc.encodeBody(c, req.forwardBody(sel));
  const accept = req.stream ? 'text/event-stream' : 'application/json';
  return callUpstream(
    svc.router,
    {
      path,
      method: 'POST',
      body,
      headers: await svc.serviceHeaders(c.get('principal').tenant, fwd.ctx, { 'content-type': 'application/json', accept }),
      affinity: sel.kind === 'base' ? null : sel.affinity,
      only: replicasOf(sel),
      signal: svc.clientSignal(c),
      waitFirstByte: req.stream,
      maxAttempts: svc.opts.maxAttempts,
      onAttempt: (b, i) => fwd.span.addEvent('attempt', { 'switchboard.backend': b.index, 'switchboard.attempt': i }),
    },
    svc.fetch,
  );
}

/** A streamed answer, relayed event by event while its tokens are counted. */
function relay(up: Upstream, req: ParsedRequest, sel: AdapterSelection, headers: Record<string, string>, fwd: ActiveSpan, settle: (u: TokenUsage) => void, promptGuess: number): Response {
  const base = req.inspector(sel);
  // Error events go through event() (their ids are scrubbed): the endpoints' quick paths never take them.
  const inspector: StreamInspector = {
    event: (d: string) => base.event(d.startsWith('{"error"') ? scrubIds(d, sel) : d),
    end: (failure: string | null) => base.end(failure),
  };
  if (base.quick) inspector.quick = base.quick.bind(base);
  const body = relayStream(up, inspector, {
    onFinish: (outcome: StreamOutcome) => {
      // Exact counts from the backend when the stream finished; otherwise what was seen.
      settle(base.usage() ?? { promptTokens: promptGuess, completionTokens: base.events });
      fwd.span.setAttribute('switchboard.stream_outcome', outcome);
      endSpan(fwd, outcome === 'failed' ? 'stream failed' : undefined);
    },
  });
  return new Response(body, {
    status: up.res.status,
    headers: {
      'content-type': up.res.headers.get('content-type') ?? 'text/event-stream',
      'cache-control': 'no-cache',
      'x-accel-buffering': 'no',
      ...headers,
    },
  });
}

/** A JSON answer: counted, trimmed of what the gateway asked for beyond the client. */
async function finishJson(
  svc: Services,
  c: GatewayContext,
  up: Upstream,
  req: ParsedRequest,
  sel: AdapterSelection,
  headers: Record<string, string>,
  fwd: ActiveSpan,
  settle: (u: TokenUsage) => void,
  promptGuess: number,
): Promise<Response> {
  let text: string;
  try {
    text = await up.res.text();
  } catch (err) {
    up.end();
    endSpan(fwd, err);
    settle({ promptTokens: promptGuess, completionTokens: 0 });
    if (svc.clientSignal(c).aborted) throw new GatewayError(499, 'client closed the request');
    throw new GatewayError(502, `the backend connection failed before the answer was complete (${(err as Error).message})`, { type: 'server_error', code: 'backend_error', loraxType: 'generation' });
  }
  up.end();
  endSpan(fwd);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    settle({ promptTokens: promptGuess, completionTokens: 0 });
    throw new GatewayError(502, 'the backend answered something that is not JSON', { type: 'server_error', code: 'backend_error', loraxType: 'generation' });
  }
  const done = req.finishJson(json, sel);
  settle(done.usage ?? { promptTokens: promptGuess, completionTokens: 0 });
  return jsonResponse(done.body, up.res.status, headers);
}

async function upstreamError(svc: Services, up: Upstream, sel: AdapterSelection, headers: Record<string, string>, fwd: ActiveSpan, settle: (u: TokenUsage) => void): Promise<Response> {
  let text = '';
  try {
    text = await up.res.text();
  } catch {
    // keep the status
  }
  up.end();
  settle({ promptTokens: 0, completionTokens: 0 });
  endSpan(fwd, up.res.status >= 500 ? `backend answered ${up.res.status}` : undefined);
  if (up.res.status === 401) {
    // The backend refused the gateway itself (it refuses service tokens with 401 only): a
    // service key mismatch, not the client's fault. A 403 is the hub refusing the tenant's own
    // hub token for its adapter: passed on below as the client's 4xx, naming the adapter.
    svc.log(`backend ${up.backend.url} refused the service token (401): ${text.slice(0, 200)}`);
    throw new GatewayError(502, 'the backend refused the gateway (service key mismatch)', { type: 'server_error', code: 'backend_auth', loraxType: 'generation' });
  }
  const isJson = (up.res.headers.get('content-type') ?? '').includes('json');
  if (!isJson) {
    throw new GatewayError(up.res.status >= 500 ? 502 : up.res.status, `backend error ${up.res.status}`, { type: up.res.status >= 500 ? 'server_error' : undefined });
  }
  return new Response(scrubIds(text, sel), { status: up.res.status, headers: { 'content-type': 'application/json', ...headers } });
}
