// How a failed field reads: the zod error map that gives every built-in check a short "must ..."
// message, and the formatting of issues as "<json.path>: <message>".
//
// Every message names the offending field by its JSON path
// ("parameters.temperature: must be non-negative",
// "messages[2].content: must be a string or an array, got a number") because
// both LoRAX and OpenAI clients surface `error` / `error.message` verbatim to
// users, who then have to find the field in their own payload.
//
// `parseLoraxRequest` / `parseOpenAIRequest` (parse-request.ts) pass
// `protocolErrorMap`, which replaces zod's generic wording ("Invalid input:
// expected number, received string") with the phrasing used here. Schemas
// carry their own messages for API-specific rules, and those win over the map.
import type { z } from 'zod';

export type Issue = z.core.$ZodIssue;
type PathKey = PropertyKey;

/** Minimal issue shape, so non-zod checks (e.g. checkGenerateLimits) format the same way. */
export interface SimpleIssue {
  path: readonly PathKey[];
  message: string;
  code?: string;
}

/** Message for a missing required field; also how `openaiValidationError` (error-bodies.ts) recognises one. */
export const REQUIRED_MESSAGE = 'is required';

// ---------------------------------------------------------------------------
// Error map
// ---------------------------------------------------------------------------

function article(noun: string): string {
  return /^[aeiou]/.test(noun) ? `an ${noun}` : `a ${noun}`;
}

/** "a string", "an array", "null"... for "got ..." clauses. */
function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return article(typeof value);
}

const EXPECTED_NAMES: Record<string, string> = {
  int: 'an integer',
  record: 'an object',
  object: 'an object',
  array: 'an array',
  null: 'null',
};

function expectedName(expected: string): string {
  return EXPECTED_NAMES[expected] ?? article(expected);
}

/** Short JSON rendering of a user value for "got ..." clauses. */
function preview(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

function oneOf(values: readonly unknown[]): string {
  return values.map((v) => JSON.stringify(v)).join(', ');
}

function plural(n: number | bigint, word: string): string {
  return `${n} ${word}${n === 1 || n === 1n ? '' : 's'}`;
}

// z.int() reports a non-number input as `expected: "number"`; its definition
// carries the integer format.
function isIntegerSchema(inst: unknown): boolean {
  const format = (inst as { _zod?: { def?: { format?: unknown } } } | undefined)?._zod?.def?.format;
  return typeof format === 'string' && /int/.test(format);
}

/**
 * Error map giving every built-in zod check a short "must ..." message. Only
 * consulted for issues whose schema did not set its own `error`.
 */
export const protocolErrorMap: z.core.$ZodErrorMap = (iss) => {
  switch (iss.code) {
    case 'invalid_type': {
      if (iss.input === undefined) return REQUIRED_MESSAGE;
      if (iss.expected === 'int' || isIntegerSchema(iss.inst)) {
        return typeof iss.input === 'number' ? `must be an integer, got ${iss.input}` : `must be an integer, got ${describe(iss.input)}`;
      }
      return `must be ${expectedName(iss.expected)}, got ${describe(iss.input)}`;
    }
    case 'too_small': {
      const min = iss.minimum;
      if (iss.origin === 'string') {
        return Number(min) === 1 ? 'cannot be empty' : `must be at least ${plural(min, 'character')} long`;
      }
      if (iss.origin === 'array' || iss.origin === 'set') {
        return `must contain at least ${plural(min, 'item')}`;
      }
      return iss.inclusive ? `must be >= ${min}` : `must be > ${min}`;
    }
    case 'too_big': {
      const max = iss.maximum;
      if (iss.origin === 'string') return `must be at most ${plural(max, 'character')} long`;
      if (iss.origin === 'array' || iss.origin === 'set') {
        const got = Array.isArray(iss.input) ? `, got ${iss.input.length}` : '';
        return `must contain at most ${plural(max, 'item')}${got}`;
      }
      return iss.inclusive ? `must be <= ${max}` : `must be < ${max}`;
    }
    case 'invalid_value': {
      if (iss.input === undefined) return REQUIRED_MESSAGE;
      const got = preview(iss.input);
      return iss.values.length === 1
        ? `must be ${JSON.stringify(iss.values[0])}, got ${got}`
        : `must be one of ${oneOf(iss.values)}, got ${got}`;
    }
    case 'invalid_union': {
      const raw = iss as typeof iss & { discriminator?: string; options?: unknown[] };
      if (raw.discriminator !== undefined) {
        // The issue's path already ends with the discriminator key.
        const input = iss.input as Record<string, unknown> | undefined;
        const value = input && typeof input === 'object' ? input[raw.discriminator] : undefined;
        const options = raw.options ? `must be one of ${oneOf(raw.options)}` : 'has an unsupported value';
        return value === undefined ? `${REQUIRED_MESSAGE}; ${options}` : `${options}, got ${preview(value)}`;
      }
      if (iss.input === undefined) return REQUIRED_MESSAGE;
      // Plain union where no branch matched the type: list the accepted types.
      // (If a branch matched and failed deeper, formatZodIssue reports that
      // branch's own issues instead of this message.)
      if (iss.errors.length > 0 && iss.errors.every(isTypeMismatch)) {
        const expected = new Set<string>();
        for (const branch of iss.errors) {
          for (const sub of branch) {
            if (sub.code === 'invalid_type') expected.add(expectedName(sub.expected));
            else if (sub.code === 'invalid_value') sub.values.forEach((v) => expected.add(JSON.stringify(v)));
          }
        }
        return `must be ${[...expected].join(' or ')}, got ${describe(iss.input)}`;
      }
      return 'does not match any accepted form';
    }
    case 'invalid_key':
      // Record keys: the key schema's own message says what keys must be.
      return iss.issues[0]?.message ?? 'has an invalid key';
    case 'unrecognized_keys':
      return `unknown field${iss.keys.length === 1 ? '' : 's'}: ${iss.keys.join(', ')}`;
    case 'invalid_format':
      return iss.format === 'regex' ? 'has an invalid format' : `must be a valid ${iss.format}`;
    default:
      return undefined;
  }
};

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

const IDENTIFIER = /^[A-Za-z_$][\w$]*$|^\d+$/;

/** ['messages', 0, 'content'] -> "messages[0].content"; odd keys are bracket-quoted. */
export function formatPath(path: readonly PathKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else if (typeof key === 'string' && IDENTIFIER.test(key)) out += out ? `.${key}` : key;
    else out += `[${JSON.stringify(String(key))}]`;
  }
  return out;
}

// A union branch that failed only because the value had the wrong type
// (or literal) at the union's own level.
export function isTypeMismatch(branch: readonly Issue[]): boolean {
  return (
    branch.length > 0 &&
    branch.every((i) => i.path.length === 0 && (i.code === 'invalid_type' || i.code === 'invalid_value'))
  );
}

/**
 * When a union fails, zod reports one opaque issue. If exactly one branch
 * matched the value's type and failed deeper (e.g. `stop` is an array but
 * has 5 entries), that branch's issues are what the user needs to see.
 */
export function unwrapUnion(issue: Issue): Issue[] | undefined {
  if (issue.code !== 'invalid_union') return undefined;
  if ((issue as { discriminator?: string }).discriminator !== undefined) return undefined;
  const candidates = issue.errors.filter((branch) => !isTypeMismatch(branch));
  if (candidates.length !== 1 || candidates[0]!.length === 0) return undefined;
  return collapseSiblings(candidates[0]!).map((sub) => ({ ...sub, path: [...issue.path, ...sub.path] }) as Issue);
}

// `prompt: [1, 2, 3]` fails once per element with the same message; one
// report (for the first element) says it all.
function collapseSiblings(issues: readonly Issue[]): Issue[] {
  const seen = new Set<string>();
  return issues.filter((issue) => {
    const parent = issue.path.slice(0, -1).map(String).join('\u0000');
    const last = issue.path[issue.path.length - 1];
    const key = typeof last === 'number' ? `${parent}\u0001${issue.code}\u0001${issue.message}` : undefined;
    if (key === undefined) return true;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** "<path>: <message>", or just the message for a problem with the whole body. */
export function formatZodIssue(issue: Issue | SimpleIssue): string {
  const inner = unwrapUnion(issue as Issue);
  if (inner) return inner.map(formatZodIssue).join('; ');
  const path = formatPath(issue.path);
  return path ? `${path}: ${issue.message}` : issue.message;
}

/** All issues of an error, "; "-separated, in the order zod found them. */
export function formatZodError(error: z.ZodError | readonly (Issue | SimpleIssue)[]): string {
  const issues = Array.isArray(error) ? error : (error as z.ZodError).issues;
  return issues.map(formatZodIssue).join('; ');
}
