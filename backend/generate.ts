// One generation from request to last token, shared by the LoRAX and OpenAI routes: tokenize and
// check lengths, take a concurrency slot, prepare the adapter, submit to the scheduler, turn
// token ids into text (incremental detokenization + stop sequences), and clean up on every exit
// path (finish, error, client gone).
import { randomInt } from 'node:crypto';
import type { NativeTopLogprobs } from '../native/addon.d.ts';
import type { Sampling } from '../native/engine.ts';
import type { AdapterChoice } from './adapters/resolve.ts';
import type { Runtime } from './runtime.ts';
import type { FinishReason, GenerateParams, SeqEvent } from './scheduler.ts';
import { StopMatcher } from './text/stop-sequences.ts';
import { childSpan, endSpan, trace } from './tracing.ts';
import { ROOT_CONTEXT as ROOT, type Context as TraceContext, type Span } from '@opentelemetry/api';
import { IncrementalDecoder } from './text/tokenizer.ts';
import { TooManyTokensError } from './text/tokenize-pool.ts';
import type { LargeText } from './json-body.ts';
import { noteGenerated, noteGenerationStart } from './access-log.ts';
import { RequestError } from './errors.ts';
import { inputTooLongMessage } from './request-limits.ts';
import type { Penalties } from './penalties.ts';

export interface SamplingRequest {
  doSample: boolean;
  temperature?: number | undefined;
  topK?: number | undefined;
  topP?: number | undefined;
  typicalP?: number | undefined;
  repetitionPenalty?: number | undefined;
  seed?: number | undefined;
}

export interface GenerationRequest {
  /** Text to tokenize (special tokens added as the tokenizer does; a LargeText stays off the loop), or ready token ids. */
  prompt: string | LargeText | number[];
  adapter: AdapterChoice;
  /** Absent: up to --max-total-tokens. */
  maxNewTokens?: number | undefined;
  /** Keep only the last `truncate` prompt tokens. */
  truncate?: number | undefined;
  sampling: SamplingRequest;
  stop: readonly string[];
  /** LoRAX keeps the stop text in the output; OpenAI cuts before it. */
  includeStopText: boolean;
  ignoreEos: boolean;
  promptLogprobs: boolean;
  topLogprobs: number;
  mask?: GenerateParams['mask'];
  /** Structured output: makes each generated sequence its own mask function (used when `mask` is absent). */
  constraint?: { newMask(maxNewTokens?: number): NonNullable<GenerateParams['mask']> } | undefined;
  signal: AbortSignal;
  /** Keeps prefix-cache blocks apart beyond the adapter: the caller's tenant (null without a service key). */
  cacheSalt?: string | null | undefined;
  /** OpenAI's frequency/presence penalties and logit_bias (applied on every route). */
  penalties?: Penalties | null | undefined;
  /** Parent for the generation's spans (the HTTP request's span). */
  traceContext?: TraceContext | undefined;
}

export interface TokenInfo {
  id: number;
  text: string;
  logprob: number;
  special: boolean;
  top: { id: number; text: string; logprob: number }[] | null;
}

export type GenerationEvent =
  | { type: 'start'; inputIds: number[] }
  | { type: 'prefill'; tokens: { id: number; text: string; logprob: number | null }[] }
  /**
   * `settled`: this token is not the last one and no text is held back that the end could still
   * add to it, so a stream may send it at once instead of waiting for the next event.
   */
  | { type: 'token'; token: TokenInfo; text: string; settled: boolean }
  | {
      type: 'end';
      finishReason: FinishReason;
      /** Text held back until the end (an unfinished character, a possible stop prefix). */
      tail: string;
      /**
       * Text the decoder released only at the end that no token event's token.text carries (the
       * last token was special): routes add it to the last non-special token (attachTokenTail).
       */
      tokenTail: string;
      generatedText: string;
      generatedTokens: number;
      inputLength: number;
      seed: number | null;
    };

/** LoRAX's rule: any warper (or do_sample) means sampling; temperature 0 means greedy. */
export function resolveSampling(s: SamplingRequest): { sampling: Sampling; seed: number | null } {
  const warped =
    s.doSample ||
    (s.temperature !== undefined && s.temperature !== 1) ||
    (s.topK !== undefined && s.topK > 0) ||
    (s.topP !== undefined && s.topP < 1) ||
    (s.typicalP !== undefined && s.typicalP < 1);
  const sample = warped && s.temperature !== 0;
  const seed = sample ? (s.seed ?? randomInt(0, 2 ** 48 - 1)) : null;
  return {
    sampling: {
      temperature: sample ? (s.temperature ?? 1) : 0,
      topK: s.topK ?? 0,
      topP: s.topP ?? 1,
      typicalP: s.typicalP ?? 1,
      repetitionPenalty: s.repetitionPenalty ?? 1,
      seed: seed ?? 0,
    },
    seed,
  };
}

/**
 * Tokenizes (large prompts off the event loop) and checks lengths the way LoRAX's validation
 * does, with its messages. Without `truncate`, a prompt whose length alone proves it too long is
 * refused before it is encoded.
 */
export async function prepareInput(rt: Runtime, req: Pick<GenerationRequest, 'prompt' | 'truncate' | 'maxNewTokens'>) {
  const { maxInputLength, maxTotalTokens } = rt.limits;
  let ids: number[];
  try {
    ids = Array.isArray(req.prompt) ? [...req.prompt] : await rt.tokenizePool.encode(req.prompt, true, req.truncate === undefined ? maxInputLength : null, req.truncate ?? null);
  } catch (err) {
    if (!(err instanceof TooManyTokensError)) throw err;
    throw new RequestError(inputTooLongMessage(maxInputLength, `at least ${err.atLeast}`), 422);
  }
  if (req.truncate !== undefined && ids.length > req.truncate) ids = ids.slice(ids.length - req.truncate);
  if (ids.length === 0) throw new RequestError('Input validation error: `inputs` cannot be empty', 422);
  if (ids.length > maxInputLength) {
    throw new RequestError(inputTooLongMessage(maxInputLength, ids.length), 422);
  }
  const maxNew = req.maxNewTokens ?? maxTotalTokens - ids.length;
  if (ids.length + maxNew > maxTotalTokens) {
    throw new RequestError(
      `Input validation error: \`inputs\` tokens + \`max_new_tokens\` must be <= ${maxTotalTokens}. Given: ${ids.length} \`inputs\` tokens and ${maxNew} \`max_new_tokens\``,
      422,
    );
  }
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0 || id >= rt.engine.model.spec.vocabSize) {
      throw new RequestError(`Input validation error: token id ${id} is outside the vocabulary`, 422);
    }
  }
  return { ids, maxNew };
}

/** A concurrency slot; beyond --max-concurrent-requests the request is refused at once. */
export function admit(rt: Runtime): () => void {
  if (rt.inFlight >= rt.limits.maxConcurrentRequests) {
    throw new RequestError('Model is overloaded', 429, 'overloaded');
  }
  rt.inFlight++;
  let released = false;
  return () => {
    if (!released) {
      released = true;
      rt.inFlight--;
    }
  };
}

/**
 * Token texts (details.tokens, logprobs): a token's text is what the incremental decoder released
 * when it arrived, so the texts of the non-special tokens concatenate to the generated text (up to
 * where a stop sequence cut it). Text that a later token settles (an unfinished character, a space
 * that clean-up removes before ",") shows on that later token. A special token shows its own
 * content (flagged special) and adds nothing to the text. An alternative shows what it would have
 * released at that position.
 */
function tokenText(rt: Runtime, decoder: IncrementalDecoder, id: number, special: boolean): string {
  return special ? rt.tokenizer.decode([id], false) : decoder.peek(id);
}

function topInfo(rt: Runtime, decoder: IncrementalDecoder, top: NativeTopLogprobs | null) {
  if (!top) return null;
  return Array.from(top.ids, (id, i) => ({ id, text: tokenText(rt, decoder, id, rt.tokenizer.isSpecial(id)), logprob: top.logprobs[i]! }));
}

/** Adds the end-of-generation text to the last non-special token (see GenerationEvent 'end'). */
export function attachTokenTail<T extends { text: string; special: boolean }>(tokens: T[], tail: string): void {
  if (!tail) return;
  for (let i = tokens.length - 1; i >= 0; i--) {
    if (!tokens[i]!.special) {
      tokens[i]!.text += tail;
      return;
    }
  }
}

/**
 * Runs one generation. Validation and admission errors throw before the first event; later
 * failures end the iterator with an Error. Breaking out of the loop (or the signal) cancels.
 */
export async function* generate(rt: Runtime, req: GenerationRequest): AsyncGenerator<GenerationEvent> {
  const t0 = performance.now();
  const { ids, maxNew } = await prepareInput(rt, req);
  rt.metrics.validationDuration.observe((performance.now() - t0) / 1000);
  // LoRAX's queue time: from validation to the first step, waiting for the adapter included.
  const queuedAt = performance.now();
  const { sampling, seed } = resolveSampling(req.sampling);
  const release = admit(rt);
  rt.metrics.requestCount.inc();
  noteGenerationStart(req.adapter.kind === 'base' ? null : req.adapter.kind === 'single' ? req.adapter.ref.id : req.adapter.refs.map((r) => r.id).join('+'), ids.length);
  let key: string | null = null;
  let handle: { cancel(): void; id: number } | null = null;
  const queue: SeqEvent[] = [];
  let wake: (() => void) | null = null;
  const onAbort = () => {
    handle?.cancel();
    wake?.();
  };
  req.signal.addEventListener('abort', onAbort);
  let ok = false;
  const genSpan = childSpan('switchboard.generate', req.traceContext, { 'switchboard.input_tokens': ids.length, 'switchboard.max_new_tokens': maxNew });
  const genCtx = trace.setSpan(req.traceContext ?? ROOT, genSpan);
  let phase: Span | null = null;
  let failure: unknown = null;
  try {
    const loadSpan = req.adapter.kind === 'base' ? null : childSpan('switchboard.adapter_load', genCtx, { 'switchboard.adapter': req.adapter.kind === 'single' ? req.adapter.ref.id : 'merged' });
    try {
      key = await rt.adapters.acquire(req.adapter, req.signal);
      endSpan(loadSpan);
    } catch (err) {
      endSpan(loadSpan, err);
      const e = err as Error & { status?: number };
      if (e.name === 'AdapterError') throw new RequestError(e.message, e.status ?? 400, 'adapter');
      throw err;
    }
    if (req.signal.aborted) return;
    yield { type: 'start', inputIds: ids };
    phase = childSpan('switchboard.queue', genCtx);
    handle = rt.scheduler.submit(
      {
        promptIds: ids,
        adapter: key,
        sampling,
        maxNewTokens: maxNew,
        eosTokenIds: rt.tokenizer.eosTokenIds,
        ignoreEos: req.ignoreEos,
        promptLogprobs: req.promptLogprobs,
        topLogprobs: req.topLogprobs,
        cacheSalt: req.cacheSalt ?? null,
        penalties: req.penalties ?? null,
        ...(req.mask || req.constraint ? { mask: req.mask ?? req.constraint!.newMask(maxNew) } : {}),
      },
      (e) => {
        queue.push(e);
        const w = wake;
        wake = null;
        w?.();
      },
    );
    rt.metrics.inputLength.observe(ids.length);
    const decoder = new IncrementalDecoder(rt.tokenizer);
    const stops = new StopMatcher(req.stop, req.includeStopText);
    let generated = 0;
    let firstTokenAt = 0;
    let flushed = false;
    let stoppedAt = false;
    let tokenTail = '';
    let scheduledAt: number | null = null;
    for (;;) {
      while (queue.length === 0) {
        if (req.signal.aborted) return;
        await new Promise<void>((r) => (wake = r));
      }
      const e = queue.shift()!;
      if (e.type === 'error') throw e.error;
      if (e.type === 'scheduled') {
        // Once per request: a preempted sequence is scheduled again, but queued only once.
        if (scheduledAt === null) {
          scheduledAt = performance.now();
          rt.metrics.queueDuration.observe((scheduledAt - queuedAt) / 1000);
        }
        endSpan(phase);
        phase = childSpan('switchboard.prefill', genCtx);
        continue;
      }
      if (e.type === 'prefill') {
        const texts = rt.tokenizer.tokenTexts(ids, false);
        const tokens = ids.map((id, i) => ({ id, text: texts[i]!, logprob: i === 0 ? null : (e.logprobs[i - 1] ?? null) }));
        yield { type: 'prefill', tokens };
        continue;
      }
      if (e.type === 'token') {
        generated++;
        if (generated === 1) {
          endSpan(phase);
          phase = childSpan('switchboard.decode', genCtx);
          firstTokenAt = performance.now();
          rt.metrics.timeToFirstToken.observe((firstTokenAt - t0) / 1000);
        }
        const special = rt.tokenizer.isSpecial(e.id);
        const top = topInfo(rt, decoder, e.top); // alternatives at this position: before the push
        let delta = decoder.push(e.id);
        // The scheduler queues 'finish' right behind the last token: settle everything on it.
        const next = queue[0];
        if (next?.type === 'finish' && next.reason !== 'stop_sequence' && !stoppedAt) {
          const rest = decoder.flush();
          flushed = true;
          delta += rest;
          if (special) tokenTail += rest;
        }
        const { text, stopped } = stoppedAt ? { text: '', stopped: false } : stops.push(delta);
        yield {
          type: 'token',
          token: { id: e.id, text: special ? rt.tokenizer.decode([e.id], false) : delta, logprob: e.logprob, special, top },
          text,
          settled: !stopped && !stoppedAt && next?.type !== 'finish' && !decoder.holding(),
        };
        if (stopped) {
          stoppedAt = true;
          rt.scheduler.stopSequence(handle);
        }
        continue;
      }
      // finish. After a stop string matched, nothing more reaches the output.
      let tail = '';
      if (!stoppedAt && e.reason !== 'stop_sequence') {
        const rest = flushed ? '' : decoder.flush();
        tokenTail += rest;
        tail = stops.push(rest).text + stops.flush();
      }
      rt.metrics.requestSuccess.inc();
      rt.metrics.generatedTokens.observe(generated);
      rt.metrics.tokensTotal.inc(generated);
      rt.metrics.requestDuration.observe((performance.now() - t0) / 1000);
      if (scheduledAt !== null) rt.metrics.inferenceDuration.observe((performance.now() - scheduledAt) / 1000);
      if (generated > 1) rt.metrics.timePerToken.observe((performance.now() - firstTokenAt) / 1000 / (generated - 1));
      ok = true;
      noteGenerated(generated);
      genSpan.setAttributes({ 'switchboard.generated_tokens': generated, 'switchboard.finish_reason': e.reason });
      yield { type: 'end', finishReason: stoppedAt ? 'stop_sequence' : e.reason, tail, tokenTail, generatedText: stops.output, generatedTokens: generated, inputLength: ids.length, seed };
      return;
    }
  } catch (err) {
    failure = err;
    // Past validation and admission, whatever fails is this generation's failure (LoRAX: 424).
    throw err instanceof RequestError ? err : new RequestError((err as Error).message ?? String(err), 424, 'generation', { cause: err });
  } finally {
    endSpan(phase, failure);
    if (!ok && !failure && req.signal.aborted) genSpan.setAttribute('switchboard.cancelled', true);
    endSpan(genSpan, failure);
    req.signal.removeEventListener('abort', onAbort);
    if (!ok) {
      handle?.cancel();
      rt.metrics.requestFailure.inc({ err: req.signal.aborted ? 'cancelled' : 'generation' });
    }
    rt.adapters.release(key);
    release();
  }
}
