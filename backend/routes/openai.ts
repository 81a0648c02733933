// OpenAI-compatible routes: /v1/chat/completions, /v1/completions (both streaming or not) and
// /v1/models. `model` names the adapter; the base model's name (or "") means no adapter.
import { randomBytes } from 'node:crypto';
import { Hono } from 'hono';
import { mayUseAdapter, type AuthEnv } from '../auth.ts';
import { streamSSE, type SSEStreamingApi } from 'hono/streaming';
import {
  completionPrompts,
  OPENAI_STREAM_DONE,
  chatMaxTokens,
  contentToText,
  type ChatCompletion,
  type ChatCompletionChunk,
  type ChatCompletionTokenLogprob,
  type Completion,
  type CompletionChunk,
  type CompletionLogprobs,
  type ModelList,
  type OpenAIFinishReason,
  type OpenAIResponseFormat,
} from '../../protocol/index.ts';
import { ChatTemplateError, type ChatTurn } from '../text/tokenizer.ts';
import { TooManyTokensError } from '../text/tokenize-pool.ts';
import { errorBody, RequestError } from '../errors.ts';
import { attachTokenTail, generate, prepareInput, type GenerationEvent, type GenerationRequest, type TokenInfo } from '../generate.ts';
import type { FinishReason } from '../scheduler.ts';
import type { Runtime } from '../runtime.ts';
import { openaiConstraint } from '../structured/index.ts';
import { inputTooLongMessage } from '../request-limits.ts';
import { openaiAdapterChoice, readRequest, type Ctx } from './common.ts';
import { LargeText } from '../json-body.ts';

const finish = (r: FinishReason): OpenAIFinishReason => (r === 'length' ? 'length' : 'stop');
const now = () => Math.floor(Date.now() / 1000);
const newId = (prefix: string) => `${prefix}-${randomBytes(12).toString('hex')}`;
// OpenAI seeds are any integer; the engine's are non-negative.
const engineSeed = (s: number | undefined) => (s === undefined ? undefined : ((s % 2 ** 48) + 2 ** 48) % 2 ** 48);

interface Common {
  model: string;
  temperature?: number | undefined;
  top_p?: number | undefined;
  top_k?: number | undefined;
  seed?: number | undefined;
  stop: string[];
  repetition_penalty?: number | undefined;
  presence_penalty?: number | undefined;
  frequency_penalty?: number | undefined;
  logit_bias?: Record<string, number> | undefined;
  ignore_eos_token?: boolean | undefined;
  adapter_source?: string | undefined;
  api_token?: string | undefined;
  response_format?: OpenAIResponseFormat | undefined;
}

async function baseRequest(rt: Runtime, c: Ctx, r: Common, prompt: string | LargeText | number[], maxNewTokens: number | undefined, topLogprobs: number, signal: AbortSignal): Promise<GenerationRequest> {
  const vocab = rt.engine.model.spec.vocabSize;
  let logitBias: Map<number, number> | null = null;
  if (r.logit_bias && Object.keys(r.logit_bias).length > 0) {
    logitBias = new Map();
    for (const [k, v] of Object.entries(r.logit_bias)) {
      const id = Number(k);
      if (!Number.isSafeInteger(id) || id >= vocab) throw new RequestError(`logit_bias: token id ${k} is outside the vocabulary (0..${vocab - 1})`, 400, 'validation', { param: 'logit_bias' });
      logitBias.set(id, v);
    }
  }
  const constraint = await openaiConstraint(rt, r.response_format, r.stop); // 400 naming unsupported schema features; stops never cut a value
  // OpenAI samples at temperature 1 unless told otherwise; 0 (or top_p 0) means greedy.
  const greedy = r.temperature === 0 || r.top_p === 0;
  return {
    prompt,
    adapter: openaiAdapterChoice(rt, c, r.model, r.adapter_source, r.api_token),
    maxNewTokens,
    sampling: greedy
      ? { doSample: false, temperature: 0, repetitionPenalty: r.repetition_penalty }
      : { doSample: true, temperature: r.temperature ?? 1, topP: r.top_p, topK: r.top_k, repetitionPenalty: r.repetition_penalty, seed: engineSeed(r.seed) },
    stop: r.stop,
    includeStopText: false,
    ignoreEos: r.ignore_eos_token ?? false,
    promptLogprobs: false,
    topLogprobs,
    constraint,
    signal,
    cacheSalt: c.get('caller').tenant,
    traceContext: c.get('traceContext'),
    penalties: { frequency: r.frequency_penalty ?? 0, presence: r.presence_penalty ?? 0, logitBias },
  };
}

/** n choices run concurrently: each is its own sequence in the batch, with its own seed. */
function choiceRequests(base: GenerationRequest, n: number): GenerationRequest[] {
  return Array.from({ length: n }, (_, i) => {
    const seed = base.sampling.seed;
    return { ...base, sampling: { ...base.sampling, seed: seed === undefined ? undefined : seed + i } };
  });
}

type End = Extract<GenerationEvent, { type: 'end' }>;

async function runToEnd(rt: Runtime, req: GenerationRequest) {
  const tokens: TokenInfo[] = [];
  let prefill: Extract<GenerationEvent, { type: 'prefill' }>['tokens'] = [];
  let end: End | null = null;
  for await (const e of generate(rt, req)) {
    if (e.type === 'token') tokens.push(e.token);
    else if (e.type === 'prefill') prefill = e.tokens;
    else if (e.type === 'end') end = e;
  }
  if (!end) throw new Error('generation ended without a result');
  attachTokenTail(tokens, end.tokenTail);
  return { tokens, prefill, end };
}

const chatLogprob = (t: TokenInfo): ChatCompletionTokenLogprob => ({
  token: t.text,
  logprob: t.logprob,
  bytes: [...Buffer.from(t.text, 'utf-8')],
  top_logprobs: (t.top ?? []).map((a) => ({ token: a.text, logprob: a.logprob, bytes: [...Buffer.from(a.text, 'utf-8')] })),
});

/**
 * Drives several generations into one SSE stream. Starting them all first means validation and
 * admission errors become a plain HTTP error before any 200 is sent.
 */
async function streamChoices(
  c: Ctx,
  reqs: GenerationRequest[],
  rt: Runtime,
  ac: AbortController,
  write: (stream: SSEStreamingApi, index: number, e: GenerationEvent) => Promise<void>,
  /** The usage chunk sent after every choice ended (stream_options.include_usage), or null. */
  usageChunk: (() => string) | null,
) {
  const its = reqs.map((r) => generate(rt, r));
  const settled = await Promise.allSettled(its.map((it) => it.next()));
  const failed = settled.find((s) => s.status === 'rejected');
  if (failed) {
    ac.abort();
    await Promise.all(its.map((it) => it.return(undefined)));
    throw failed.reason;
  }
  const firsts = settled.map((s) => (s as PromiseFulfilledResult<IteratorResult<GenerationEvent>>).value);
  return streamSSE(c, async (stream) => {
    stream.onAbort(() => ac.abort());
    try {
      await Promise.all(
        its.map(async (it, i) => {
          let r = firsts[i]!;
          while (!r.done && !ac.signal.aborted) {
            await write(stream, i, r.value);
            r = await it.next();
          }
        }),
      );
      if (usageChunk) await stream.writeSSE({ data: usageChunk() });
      await stream.writeSSE({ data: OPENAI_STREAM_DONE });
    } catch (err) {
      await stream.writeSSE({ data: JSON.stringify(errorBody('openai', err)) });
    } finally {
      ac.abort();
      await Promise.all(its.map((it) => it.return(undefined)));
    }
  });
}

/** A conversation's prompt ids, rendered and encoded off the event loop when large. */
async function chatPromptIds(rt: Runtime, messages: ChatTurn[]): Promise<number[]> {
  try {
    return await rt.tokenizePool.encodeChat(messages, true, rt.limits.maxInputLength);
  } catch (err) {
    if (err instanceof ChatTemplateError) throw new RequestError(`chat template: ${err.message}`, 400, 'validation', { param: 'messages' });
    if (!(err instanceof TooManyTokensError)) throw err;
    throw new RequestError(inputTooLongMessage(rt.limits.maxInputLength, `at least ${err.atLeast}`), 422);
  }
}

export function openaiRoutes(rt: Runtime): Hono<AuthEnv> {
  const app = new Hono<AuthEnv>();

  app.get('/v1/models', (c) => {
    const created = Math.floor(rt.startedAt / 1000);
    const ids = new Set<string>([rt.modelName]);
    // A caller sees only adapters it may use: never another tenant's.
    const caller = c.get('caller');
    for (const a of rt.store.resident()) if (typeof a.info.id === 'string' && mayUseAdapter(caller, a.info.id)) ids.add(a.info.id);
    const body: ModelList = { object: 'list', data: [...ids].map((id) => ({ id, object: 'model', created, owned_by: 'switchboard' })) };
    return c.json(body);
  });

  app.post('/v1/chat/completions', async (c) => {
    // Validated (and refused over the server's limits: tools, more messages than input tokens)
    // where the body was parsed, on the parser thread when large (common.ts readRequest).
    const parsed = await readRequest(c, 'openai.chat', rt);
    if (!parsed.ok) return c.json(parsed.error, 400);
    const r = parsed.data;
    const messages = r.messages.map((m) => ({ role: m.role, content: contentToText(m.content) }));
    const promptIds = await chatPromptIds(rt, messages);
    const ac = new AbortController();
    c.req.raw.signal.addEventListener('abort', () => ac.abort());
    const topLogprobs = r.logprobs ? (r.top_logprobs ?? 0) : 0;
    const base = await baseRequest(rt, c, r, promptIds, chatMaxTokens(r), topLogprobs, ac.signal);
    await prepareInput(rt, base); // length errors before anything starts
    const reqs = choiceRequests(base, r.n ?? 1);
    const id = newId('chatcmpl');
    const created = now();
    if (!r.stream) {
      const results = await Promise.all(reqs.map((q) => runToEnd(rt, q)));
      const completionTokens = results.reduce((a, x) => a + x.end.generatedTokens, 0);
      const body: ChatCompletion = {
        id,
        object: 'chat.completion',
        created,
        model: r.model,
        choices: results.map((x, index) => ({
          index,
          message: { role: 'assistant', content: x.end.generatedText },
          logprobs: r.logprobs ? { content: x.tokens.map(chatLogprob) } : null,
          finish_reason: finish(x.end.finishReason),
        })),
        usage: { prompt_tokens: promptIds.length, completion_tokens: completionTokens, total_tokens: promptIds.length + completionTokens },
      };
      return c.json(body);
    }
    let completionTokens = 0;
    const chunk = (choices: ChatCompletionChunk['choices'], usage?: ChatCompletionChunk['usage']): string =>
      JSON.stringify({ id, object: 'chat.completion.chunk', created, model: r.model, choices, ...(usage !== undefined ? { usage } : {}) } satisfies ChatCompletionChunk);
    const includeUsage = r.stream_options?.include_usage === true;
    return await streamChoices(
      c,
      reqs,
      rt,
      ac,
      async (stream, index, e) => {
        if (e.type === 'start') {
          await stream.writeSSE({ data: chunk([{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }], includeUsage ? null : undefined) });
        } else if (e.type === 'token') {
          if (e.text === '' && !r.logprobs) return;
          await stream.writeSSE({
            data: chunk([{ index, delta: { content: e.text }, logprobs: r.logprobs ? { content: [chatLogprob(e.token)] } : null, finish_reason: null }], includeUsage ? null : undefined),
          });
        } else if (e.type === 'end') {
          completionTokens += e.generatedTokens;
          await stream.writeSSE({ data: chunk([{ index, delta: e.tail ? { content: e.tail } : {}, logprobs: null, finish_reason: finish(e.finishReason) }], includeUsage ? null : undefined) });
        }
      },
      includeUsage ? () => chunk([], { prompt_tokens: promptIds.length, completion_tokens: completionTokens, total_tokens: promptIds.length + completionTokens }) : null,
    );
  });

  app.post('/v1/completions', async (c) => {
    // Validated where parsed (the parser thread for a large body), with request-limits.ts's
    // refusals: best_of, max_tokens 0, prompts x n over --max-concurrent-requests, token-id
    // prompts over the input bound.
    const parsed = await readRequest(c, 'openai.completion', rt, 'prompt');
    if (!parsed.ok) return c.json(parsed.error, 400);
    const r = parsed.data;
    // A large body's single string prompt stays on the JSON parser thread (json-body.ts).
    const prompts: (string | LargeText | number[])[] = parsed.prompt ? [parsed.prompt] : completionPrompts(r.prompt);
    const n = r.n ?? 1;
    const ac = new AbortController();
    c.req.raw.signal.addEventListener('abort', () => ac.abort());
    const k = r.logprobs ?? 0;
    const maxTokens = r.max_tokens ?? 16; // OpenAI's default for completions
    const reqs: GenerationRequest[] = [];
    // What echo returns for each prompt: its text, or the text of its token ids (special tokens kept).
    const echoed: string[] = [];
    for (const p of prompts) {
      const base = { ...(await baseRequest(rt, c, r, p, maxTokens, k, ac.signal)), promptLogprobs: r.echo && r.logprobs !== undefined };
      // Encoded once (off the event loop when large); the choices reuse the ids.
      base.prompt = (await prepareInput(rt, base)).ids;
      echoed.push(typeof p === 'string' ? p : !r.echo ? '' : p instanceof LargeText ? await p.text() : rt.tokenizer.decode(p, false));
      reqs.push(...choiceRequests(base, n));
    }
    const id = newId('cmpl');
    const created = now();
    if (!r.stream) {
      const results = await Promise.all(reqs.map((q) => runToEnd(rt, q)));
      let promptTokens = 0;
      results.forEach((x, i) => {
        if (i % n === 0) promptTokens += x.end.inputLength;
      });
      const completionTokens = results.reduce((a, x) => a + x.end.generatedTokens, 0);
      const body: Completion = {
        id,
        object: 'text_completion',
        created,
        model: r.model,
        choices: results.map((x, index) => {
          const promptText = echoed[Math.floor(index / n)]!;
          let logprobs: CompletionLogprobs | null = null;
          if (r.logprobs !== undefined) {
            const toks = [...(r.echo ? x.prefill.map((t) => ({ text: t.text, logprob: t.logprob, top: null as TokenInfo['top'] })) : []), ...x.tokens];
            let offset = 0;
            const text_offset = toks.map((t) => {
              const o = offset;
              offset += t.text.length;
              return o;
            });
            logprobs = {
              tokens: toks.map((t) => t.text),
              token_logprobs: toks.map((t) => t.logprob),
              top_logprobs: toks.map((t) => (t.top ? Object.fromEntries(t.top.map((a) => [a.text, a.logprob])) : null)),
              text_offset,
            };
          }
          return { index, text: (r.echo ? promptText : '') + x.end.generatedText, logprobs, finish_reason: finish(x.end.finishReason) };
        }),
        usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens },
      };
      return c.json(body);
    }
    let completionTokens = 0;
    let promptTokens = 0;
    const includeUsage = r.stream_options?.include_usage === true;
    const chunk = (choices: CompletionChunk['choices'], usage?: CompletionChunk['usage']): string =>
      JSON.stringify({ id, object: 'text_completion', created, model: r.model, choices, ...(usage !== undefined ? { usage } : {}) } as CompletionChunk);
    return await streamChoices(
      c,
      reqs,
      rt,
      ac,
      async (stream, index, e) => {
        if (e.type === 'start') {
          if (index % n === 0) promptTokens += e.inputIds.length;
          if (r.echo) await stream.writeSSE({ data: chunk([{ index, text: echoed[Math.floor(index / n)]!, logprobs: null, finish_reason: null }]) });
        } else if (e.type === 'token' && e.text !== '') {
          const logprobs = r.logprobs !== undefined
            ? { tokens: [e.token.text], token_logprobs: [e.token.logprob], top_logprobs: [e.token.top ? Object.fromEntries(e.token.top.map((a) => [a.text, a.logprob])) : null], text_offset: [0] }
            : null;
          await stream.writeSSE({ data: chunk([{ index, text: e.text, logprobs, finish_reason: null }]) });
        } else if (e.type === 'end') {
          completionTokens += e.generatedTokens;
          await stream.writeSSE({ data: chunk([{ index, text: e.tail, logprobs: null, finish_reason: finish(e.finishReason) }]) });
        }
      },
      includeUsage ? () => chunk([], { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens }) : null,
    );
  });

  return app;
}
