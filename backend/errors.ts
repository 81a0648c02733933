// The backend's one error type and its one mapping to each API's error shape. Routes, middleware
// and generate.ts throw RequestError; the app's onError (server.ts) answers with errorResponse():
// OpenAI's `{error: {message, type, param, code}}` under /v1/, LoRAX's `{error, error_type}`
// elsewhere. Mid-stream failures use errorBody() for the SSE error event.
import type { Context } from 'hono';
import { LORAX_ERROR_STATUS, loraxError, openaiError, type ErrorResponse, type OpenAIErrorResponse } from '../protocol/index.ts';

/**
 * What went wrong, which decides each API's error type. A kind missing from the tables below does
 * not compile, and neither does a kind that is not listed here.
 */
export type RequestErrorKind =
  /** The request is malformed or asks for what this server cannot do (400/413/422). */
  | 'validation'
  /** No or bad credentials, or a credential without the right scope (401/403). */
  | 'unauthorized'
  /** No such route. */
  | 'not_found'
  /** The adapter a request names is missing, not allowed, or malformed (the AdapterError's status). */
  | 'adapter'
  /** Too many requests in flight (429). */
  | 'overloaded'
  /** Generation started and failed (an engine step, an adapter slot load): LoRAX 424, OpenAI 500. */
  | 'generation';

/** A failure with a known cause; anything else reaching errorResponse() is a bug (500, logged). */
export class RequestError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly kind: RequestErrorKind = 'validation',
    readonly opts: { param?: string; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'RequestError';
  }
}

export type ApiShape = 'lorax' | 'openai';

/** OpenAI's routes live under /v1/; everything else speaks LoRAX (TGI). */
export function apiShapeOf(path: string): ApiShape {
  return path.startsWith('/v1/') ? 'openai' : 'lorax';
}

type Mapped<B> = { status: number; body: B };

/** OpenAI's `type` from the status, for kinds whose status varies. */
function openaiTypeOf(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status === 429) return 'rate_limit_error';
  return 'invalid_request_error';
}

// OpenAI SDKs expect every invalid request as 400, where LoRAX answers 422.
const openaiStatus = (status: number) => (status === 422 ? 400 : status);

const LORAX: { [K in RequestErrorKind]: (e: RequestError) => Mapped<ErrorResponse> } = {
  validation: (e) => ({ status: e.status, body: loraxError(e.message, 'validation') }),
  unauthorized: (e) => ({ status: e.status, body: loraxError(e.message, 'unauthorized') }),
  not_found: (e) => ({ status: 404, body: loraxError(e.message, 'not_found') }),
  adapter: (e) => ({ status: e.status, body: loraxError(e.message, 'adapter') }),
  overloaded: (e) => ({ status: LORAX_ERROR_STATUS.overloaded, body: loraxError(e.message, 'overloaded') }),
  generation: (e) => ({ status: LORAX_ERROR_STATUS.generation, body: loraxError(e.message, 'generation') }),
};

const OPENAI: { [K in RequestErrorKind]: (e: RequestError) => Mapped<OpenAIErrorResponse> } = {
  validation: (e) => ({ status: openaiStatus(e.status), body: openaiError(e.message, openaiTypeOf(e.status), e.opts.param ?? null) }),
  unauthorized: (e) => ({ status: e.status, body: openaiError(e.message, openaiTypeOf(e.status)) }),
  not_found: (e) => ({ status: 404, body: openaiError(e.message, 'not_found_error') }),
  adapter: (e) => ({ status: openaiStatus(e.status), body: openaiError(e.message, openaiTypeOf(e.status)) }),
  overloaded: (e) => ({ status: 429, body: openaiError(e.message, 'rate_limit_error') }),
  generation: (e) => ({ status: 500, body: openaiError(e.message, 'server_error') }),
};

/** Status and body of `err` in an API's shape; an error of unknown cause says only "internal error". */
export function mapError(shape: ApiShape, err: unknown): Mapped<ErrorResponse | OpenAIErrorResponse> {
  if (err instanceof RequestError) return shape === 'openai' ? OPENAI[err.kind](err) : LORAX[err.kind](err);
  return shape === 'openai'
    ? { status: 500, body: openaiError('internal error', 'server_error') }
    : { status: 500, body: loraxError('internal error', 'generation') };
}

/** The body of an SSE error event: what a failure mid-stream tells the client. */
export function errorBody(shape: ApiShape, err: unknown): ErrorResponse | OpenAIErrorResponse {
  return mapError(shape, err).body;
}

/** The answer to a failed request, in the shape of the API its path belongs to. */
export function errorResponse(c: Context, err: unknown): Response {
  if (!(err instanceof RequestError)) console.error(`unhandled error on ${c.req.method} ${c.req.path}:`, err);
  const { status, body } = mapError(apiShapeOf(c.req.path), err);
  return c.json(body, status as 400);
}
