// Parsing a request body in one call: the schema, protocol/issue-format.ts's messages, and on
// failure the status and error body the API's own clients expect.
import type { z } from 'zod';
import { loraxValidationError, openaiValidationError } from './error-bodies.ts';
import { protocolErrorMap, type Issue } from './issue-format.ts';
import type { ErrorResponse } from './lorax.ts';
import type { OpenAIErrorResponse } from './openai.ts';

/** HTTP status each API uses for a request that fails validation. */
export const LORAX_VALIDATION_STATUS = 422;
export const OPENAI_INVALID_REQUEST_STATUS = 400;

export type ParseResult<T, E> =
  | { success: true; data: T }
  | { success: false; status: number; error: E; issues: Issue[] };

/** Parse a LoRAX request body; on failure, the 422 body LoRAX clients expect. */
export function parseLoraxRequest<S extends z.ZodType>(
  schema: S,
  body: unknown,
): ParseResult<z.output<S>, ErrorResponse> {
  const result = schema.safeParse(body, { error: protocolErrorMap });
  if (result.success) return { success: true, data: result.data };
  return {
    success: false,
    status: LORAX_VALIDATION_STATUS,
    error: loraxValidationError(result.error),
    issues: result.error.issues,
  };
}

/** Parse an OpenAI request body; on failure, the 400 body OpenAI SDKs expect. */
export function parseOpenAIRequest<S extends z.ZodType>(
  schema: S,
  body: unknown,
): ParseResult<z.output<S>, OpenAIErrorResponse> {
  const result = schema.safeParse(body, { error: protocolErrorMap });
  if (result.success) return { success: true, data: result.data };
  return {
    success: false,
    status: OPENAI_INVALID_REQUEST_STATUS,
    error: openaiValidationError(result.error),
    issues: result.error.issues,
  };
}
