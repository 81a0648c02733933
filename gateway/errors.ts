// Every error the gateway itself produces, in the shape of the API the client speaks: OpenAI's
// `{error: {message, type, param, code}}` under /v1 (and for the admin API), LoRAX's
// `{error, error_type}` everywhere else. Bodies come from protocol/ so the shapes never drift.
import { loraxError, openaiError } from '../protocol/index.ts';
import { StoreUnavailableError } from './store/types.ts';

export type ApiKind = 'lorax' | 'openai';

export function apiKindOf(path: string): ApiKind {
  return path.startsWith('/v1/') || path === '/v1' || path.startsWith('/admin') ? 'openai' : 'lorax';
}

const OPENAI_TYPE: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  409: 'invalid_request_error',
  413: 'invalid_request_error',
  415: 'invalid_request_error',
  422: 'invalid_request_error',
  429: 'rate_limit_error',
};

const LORAX_TYPE: Record<number, string> = {
  400: 'validation',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  409: 'validation',
  413: 'validation',
  415: 'validation',
  422: 'validation',
  429: 'overloaded',
  502: 'overloaded',
  503: 'overloaded',
};

export interface GatewayErrorOptions {
  /** OpenAI `error.type` (default from the status). */
  type?: string;
  /** OpenAI `error.code`. */
  code?: string | null;
  /** OpenAI `error.param`. */
  param?: string | null;
  /** LoRAX `error_type` (default from the status). */
  loraxType?: string;
  headers?: Record<string, string>;
}

export class GatewayError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly opts: GatewayErrorOptions = {},
  ) {
    super(message);
  }

  body(kind: ApiKind): unknown {
    if (kind === 'lorax') return loraxError(this.message, this.opts.loraxType ?? LORAX_TYPE[this.status] ?? 'generation');
    return openaiError(
      this.message,
      this.opts.type ?? OPENAI_TYPE[this.status] ?? 'server_error',
      this.opts.param ?? null,
      this.opts.code ?? null,
    );
  }

  response(kind: ApiKind, extraHeaders: Record<string, string> = {}): Response {
    return jsonResponse(this.body(kind), this.status, { ...extraHeaders, ...this.opts.headers });
  }
}

export function jsonResponse(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json', ...headers },
  });
}

/** A JSON body already in the API's error shape (from protocol's parse helpers). */
export class ShapedError extends Error {
  constructor(
    readonly status: number,
    readonly shaped: unknown,
  ) {
    super('request failed validation');
  }
}

export function toGatewayError(err: unknown): GatewayError | ShapedError {
  if (err instanceof GatewayError || err instanceof ShapedError) return err;
  if (err instanceof StoreUnavailableError) {
    return new GatewayError(503, 'the gateway cannot reach its rate-limit store; retry shortly', {
      type: 'server_error',
      code: 'store_unavailable',
      loraxType: 'overloaded',
      headers: { 'retry-after': '1' },
    });
  }
  return new GatewayError(500, 'internal gateway error', { type: 'server_error', loraxType: 'generation' });
}

export function errorResponseFor(kind: ApiKind, err: unknown, extraHeaders: Record<string, string> = {}): Response {
  const e = toGatewayError(err);
  if (e instanceof ShapedError) return jsonResponse(e.shaped, e.status, extraHeaders);
  return e.response(kind, extraHeaders);
}
