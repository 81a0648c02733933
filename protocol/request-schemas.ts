// Request schemas by name, for code that validates a body where the schema object cannot be sent:
// the backend's JSON parser thread (and the gateway's parse worker) get a name in a message and
// validate with the same zod schema and the same parse*Request call the route would use inline, so
// a body gets the same answer on either side. The schemas stay defined in lorax.ts / openai.ts.
import { CompatGenerateRequest, GenerateRequest, GenerateStreamRequest, TokenizeRequest } from './lorax.ts';
import { ChatCompletionRequest, CompletionRequest } from './openai.ts';
import { parseLoraxRequest, parseOpenAIRequest, type ParseResult } from './parse-request.ts';
import type { ErrorResponse } from './lorax.ts';
import type { OpenAIErrorResponse } from './openai.ts';

export const REQUEST_SCHEMAS = {
  'lorax.generate': { api: 'lorax', schema: GenerateRequest },
  'lorax.generate_stream': { api: 'lorax', schema: GenerateStreamRequest },
  'lorax.compat': { api: 'lorax', schema: CompatGenerateRequest },
  'lorax.tokenize': { api: 'lorax', schema: TokenizeRequest },
  'openai.chat': { api: 'openai', schema: ChatCompletionRequest },
  'openai.completion': { api: 'openai', schema: CompletionRequest },
} as const;

export type RequestSchemaName = keyof typeof REQUEST_SCHEMAS;
type Schemas = typeof REQUEST_SCHEMAS;
/** The validated request a name stands for. */
export type NamedRequest<N extends RequestSchemaName> = import('zod').output<Schemas[N]['schema']>;

export function isRequestSchemaName(s: unknown): s is RequestSchemaName {
  return typeof s === 'string' && Object.hasOwn(REQUEST_SCHEMAS, s);
}

/** parseLoraxRequest / parseOpenAIRequest with the named schema. */
export function parseNamedRequest<N extends RequestSchemaName>(name: N, body: unknown): ParseResult<NamedRequest<N>, ErrorResponse | OpenAIErrorResponse> {
  const entry = REQUEST_SCHEMAS[name];
  return (entry.api === 'lorax' ? parseLoraxRequest(entry.schema, body) : parseOpenAIRequest(entry.schema, body)) as ParseResult<NamedRequest<N>, ErrorResponse | OpenAIErrorResponse>;
}
