// Refusals that depend on the server's limits and need nothing but the validated request: decided
// right after the schema, wherever the schema ran (on the loop for a small body, on the JSON parser
// thread for a large one: json-body.ts), so a request too big to serve is refused before a big
// value crosses to the loop, with the same words whatever the body's size. The routes call
// requestRefusal() after validating inline; the parser thread calls it after validating there.
import { completionPrompts, contentToText, type NamedRequest, type RequestSchemaName } from '../protocol/index.ts';
import type { Limits } from './runtime.ts';

/** A refusal, as the route would throw it (a RequestError of kind 'validation'). */
export interface RequestRefusal {
  message: string;
  status: number;
  param?: string;
}

/**
 * The limits a refusal depends on: plain numbers, sent to the parser thread with each body.
 * maxCharsPerToken: the longest text one token can stand for (tokenize-pool.ts), so a text's
 * length alone can prove it too long; null where the tokenizer admits no such bound.
 */
export type RefusalLimits = Pick<Limits, 'maxInputLength' | 'maxConcurrentRequests'> & { maxCharsPerToken: number | null };

/** The fewest tokens a text of `chars` UTF-16 units can encode to (0 where no bound holds). */
export function tokensAtLeast(chars: number, maxCharsPerToken: number | null): number {
  return maxCharsPerToken ? Math.ceil(chars / maxCharsPerToken) : 0;
}

/** The refusal for a text whose length alone proves it has more tokens than the input bound, or null. */
function tooLongByLength(limits: RefusalLimits, chars: number): RequestRefusal | null {
  const atLeast = tokensAtLeast(chars, limits.maxCharsPerToken);
  return atLeast > limits.maxInputLength ? tooManyTokens(limits, `at least ${atLeast}`) : null;
}

/** LoRAX's words for a prompt over the input bound (`given`: a count, or "at least N"), for every place that refuses one. */
export const inputTooLongMessage = (maxInputLength: number, given: number | string): string =>
  `Input validation error: \`inputs\` must have less than ${maxInputLength} tokens. Given: ${given}`;

const tooManyTokens = (limits: RefusalLimits, given: string): RequestRefusal => ({ message: inputTooLongMessage(limits.maxInputLength, given), status: 422 });

/** The first refusal of a validated request, in the order the route checked them before, or null. */
export function requestRefusal(name: RequestSchemaName, data: unknown, limits: RefusalLimits): RequestRefusal | null {
  if (name === 'openai.completion') {
    const r = data as NamedRequest<'openai.completion'>;
    const n = r.n ?? 1;
    if (r.best_of !== undefined && r.best_of !== n) return { message: 'best_of other than n is not supported', status: 400 };
    if (r.max_tokens === 0) return { message: 'max_tokens 0 (prompt scoring) is not supported yet', status: 400 };
    const prompts = completionPrompts(r.prompt);
    // Every prompt x choice is a generation in flight: more than the server ever admits at once
    // could only end in 429s that no retry fixes, so it is the request's fault, said up front.
    const limit = limits.maxConcurrentRequests;
    if (prompts.length * n > limit) {
      return { message: `${prompts.length} prompts x n=${n} is more than this server runs at once (--max-concurrent-requests ${limit}); send fewer per request`, status: 400, param: 'prompt' };
    }
    // Token ids are the prompt as it is (no tokenizer, no BOS): prepareInput's bound, decided here;
    // a text by its length, as prepareInput would before encoding it.
    for (const p of prompts) {
      const refusal = typeof p !== 'string' ? (p.length > limits.maxInputLength ? tooManyTokens(limits, String(p.length)) : null) : tooLongByLength(limits, p.length);
      if (refusal) return refusal;
    }
    return null;
  }
  if (name === 'openai.chat') {
    const r = data as NamedRequest<'openai.chat'>;
    if (r.tools && r.tools.length > 0) return { message: 'tools are not supported by this server yet', status: 400 };
    // Each message renders to at least one token with every chat template we ship (each writes a
    // turn marker, a role header or an end-of-turn token per message, empty content included;
    // request-limits.test.ts renders every fixture's template to check it), so more
    // messages than the input bound can only end in the tokenizer's refusal, said here instead.
    if (r.messages.length > limits.maxInputLength) return tooManyTokens(limits, `at least ${r.messages.length}`);
    // The users' words appear in every template's rendering (some trim them; some rewrite earlier
    // assistant turns, so only user turns count): their length alone can prove the prompt too long.
    let chars = 0;
    for (const m of r.messages) if (m.role === 'user') chars += contentToText(m.content).trim().length;
    return tooLongByLength(limits, chars);
  }
  if (name === 'lorax.tokenize') return tooLongByLength(limits, (data as NamedRequest<'lorax.tokenize'>).inputs.length);
  return null;
}
