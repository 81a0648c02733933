// Each API's error body: LoRAX's `{error, error_type}` and OpenAI's `{error: {message, type, param,
// code}}`, for any failure and for a failed request parse (issues formatted by issue-format.ts).
import type { z } from 'zod';
import { formatPath, formatZodError, isTypeMismatch, REQUIRED_MESSAGE, unwrapUnion, type Issue, type SimpleIssue } from './issue-format.ts';
import type { ErrorResponse } from './lorax.ts';
import type { OpenAIErrorResponse } from './openai.ts';

// ---------------------------------------------------------------------------
// LoRAX
// ---------------------------------------------------------------------------

/** LoRAX error body. `errorType` defaults to "validation" (the one clients map to ValidationError). */
export function loraxError(message: string, errorType: string = 'validation'): ErrorResponse {
  return { error: message, error_type: errorType };
}

/**
 * Validation failure in LoRAX's wording: LoRAX prefixes every validation
 * message with "Input validation error: " (router/src/infer.rs).
 */
export function loraxValidationError(error: z.ZodError | readonly (Issue | SimpleIssue)[]): ErrorResponse {
  return loraxError(`Input validation error: ${formatZodError(error)}`, 'validation');
}

// ---------------------------------------------------------------------------
// OpenAI
// ---------------------------------------------------------------------------

/** OpenAI error body: `{error: {message, type, param, code}}`. */
export function openaiError(
  message: string,
  type: string = 'invalid_request_error',
  param: string | null = null,
  code: string | null = null,
): OpenAIErrorResponse {
  return { error: { message, type, param, code } };
}

function openaiCode(issue: Issue | SimpleIssue): string {
  if (issue.message === REQUIRED_MESSAGE || issue.message.startsWith(`${REQUIRED_MESSAGE};`)) {
    return 'missing_required_parameter';
  }
  switch (issue.code) {
    case 'invalid_type':
      return 'invalid_type';
    case 'unrecognized_keys':
      return 'unknown_parameter';
    case 'invalid_union':
      return isTypeMismatchUnion(issue as Issue) ? 'invalid_type' : 'invalid_value';
    default:
      return 'invalid_value';
  }
}

function isTypeMismatchUnion(issue: Issue): boolean {
  return issue.code === 'invalid_union' && issue.errors.length > 0 && issue.errors.every(isTypeMismatch);
}

/**
 * OpenAI-style 400 body for a failed parse: `param` is the path of the first
 * issue (e.g. "messages[0].role"), `code` one of missing_required_parameter,
 * invalid_type, invalid_value, unknown_parameter.
 */
export function openaiValidationError(error: z.ZodError | readonly (Issue | SimpleIssue)[]): OpenAIErrorResponse {
  const issues = Array.isArray(error) ? error : (error as z.ZodError).issues;
  const top = issues[0];
  // Point `param` at the field the first message names, not at the union around it.
  const first = top ? (unwrapUnion(top as Issue)?.[0] ?? top) : undefined;
  const param = first ? formatPath(first.path) || null : null;
  return openaiError(formatZodError(issues), 'invalid_request_error', param, first ? openaiCode(first) : null);
}
