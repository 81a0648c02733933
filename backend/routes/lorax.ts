// LoRAX REST: POST /generate, POST /generate_stream and the compat POST / (lorax-client), with
// TGI's SSE event shapes and LoRAX's error bodies ({error, error_type}).
import { Hono } from 'hono';
import type { AuthEnv } from '../auth.ts';
import { streamSSE } from 'hono/streaming';
import {
  checkGenerateLimits,
  loraxValidationError,
  type Details,
  type GenerateParameters,
  type GenerateResponse,
  type StreamResponse,
  type Token,
} from '../../protocol/index.ts';
import { errorBody, RequestError } from '../errors.ts';
import { attachTokenTail, generate, type GenerationEvent, type GenerationRequest, type TokenInfo } from '../generate.ts';
import type { Runtime } from '../runtime.ts';
import { loraxConstraint } from '../structured/index.ts';
import { loraxAdapterChoice, readRequest, type Ctx } from './common.ts';
import { textOf, type LargeText } from '../json-body.ts';

const toToken = (t: TokenInfo): Token => ({
  id: t.id,
  text: t.text,
  logprob: Number.isFinite(t.logprob) ? t.logprob : null,
  special: t.special,
  skipped: false,
  ...(t.top ? { alternative_tokens: t.top.map((a) => ({ id: a.id, text: a.text, logprob: Number.isFinite(a.logprob) ? a.logprob : null })) } : {}),
});

async function generationRequest(rt: Runtime, c: Ctx, inputs: string | LargeText, p: GenerateParameters, signal: AbortSignal): Promise<GenerationRequest> {
  const issues = checkGenerateLimits(p, rt.limits);
  if (issues.length > 0) throw new RequestError(loraxValidationError(issues).error, 422);
  const constraint = await loraxConstraint(rt, p.response_format, p.stop); // 422 naming unsupported schema features; stops never cut a value
  if (p.watermark) throw new RequestError('parameters.watermark: watermarking is not supported', 422);
  return {
    prompt: inputs,
    adapter: loraxAdapterChoice(rt, c, p),
    maxNewTokens: p.max_new_tokens,
    truncate: p.truncate,
    sampling: {
      doSample: p.do_sample,
      temperature: p.temperature,
      topK: p.top_k,
      topP: p.top_p,
      typicalP: p.typical_p,
      repetitionPenalty: p.repetition_penalty,
      seed: p.seed,
    },
    stop: p.stop,
    includeStopText: true,
    ignoreEos: p.ignore_eos_token,
    promptLogprobs: p.decoder_input_details,
    topLogprobs: p.return_k_alternatives ?? 0,
    constraint,
    signal,
    cacheSalt: c.get('caller').tenant,
    traceContext: c.get('traceContext'),
    penalties: { frequency: p.frequency_penalty ?? 0, presence: p.presence_penalty ?? 0, logitBias: null },
  };
}

interface Collected {
  text: string;
  details: Details;
  logprobSum: number;
}

/** Runs one generation to the end, collecting what /generate returns. */
async function collect(rt: Runtime, req: GenerationRequest): Promise<Collected> {
  const tokens: Token[] = [];
  let prefill: Details['prefill'] = [];
  let end: Extract<GenerationEvent, { type: 'end' }> | null = null;
  let logprobSum = 0;
  for await (const e of generate(rt, req)) {
    if (e.type === 'prefill') prefill = e.tokens;
    else if (e.type === 'token') {
      tokens.push(toToken(e.token));
      logprobSum += e.token.logprob;
    } else if (e.type === 'end') end = e;
  }
  if (!end) throw new Error('generation ended without a result');
  attachTokenTail(tokens, end.tokenTail);
  return {
    text: end.generatedText,
    logprobSum,
    details: {
      finish_reason: end.finishReason,
      prompt_tokens: end.inputLength,
      generated_tokens: end.generatedTokens,
      skipped_tokens: 0,
      seed: end.seed,
      prefill,
      tokens,
    },
  };
}

async function runGenerate(rt: Runtime, c: Ctx, inputs: string | LargeText, p: GenerateParameters): Promise<GenerateResponse> {
  const signal = c.req.raw.signal;
  const bestOf = p.best_of ?? 1;
  const base = await generationRequest(rt, c, inputs, p, signal);
  // best_of: independent samples (different seeds), the most likely one wins, as in TGI.
  const runs = await Promise.all(
    Array.from({ length: bestOf }, (_, i) => collect(rt, { ...base, sampling: { ...base.sampling, seed: bestOf > 1 ? undefined : base.sampling.seed } }).then((r) => ({ r, i }))),
  );
  runs.sort((a, b) => b.r.logprobSum - a.r.logprobSum || a.i - b.i);
  const best = runs[0]!.r;
  // A kept prompt (a large body's) comes to the loop only here, when the answer repeats it.
  const prefix = p.return_full_text ? await textOf(inputs) : '';
  const fullText = prefix + best.text;
  if (!p.details && !p.decoder_input_details) return { generated_text: fullText };
  const details: Details = { ...best.details };
  if (bestOf > 1) {
    details.best_of_sequences = runs.slice(1).map(({ r }) => ({
      generated_text: prefix + r.text,
      finish_reason: r.details.finish_reason,
      generated_tokens: r.details.generated_tokens,
      seed: r.details.seed,
      prefill: r.details.prefill,
      tokens: r.details.tokens,
    }));
  }
  return { generated_text: fullText, details };
}

async function streamResponse(rt: Runtime, c: Ctx, inputs: string | LargeText, p: GenerateParameters) {
  const ac = new AbortController();
  c.req.raw.signal.addEventListener('abort', () => ac.abort());
  const req = await generationRequest(rt, c, inputs, p, ac.signal);
  const prefix = p.return_full_text ? await textOf(inputs) : '';
  // Validation and admission happen before the 200: pull the first event eagerly.
  const it = generate(rt, req);
  return it.next().then((first) =>
    streamSSE(c, async (stream) => {
      stream.onAbort(() => ac.abort());
      // TGI sends the last token together with generated_text and details, and text flushed at
      // the end goes onto the last normal token: a token waits only when it may be the last or
      // may still get that text (not `settled`), and special tokens wait behind it. Every other
      // token goes out at once (holding each back a step would add a decode step to TTFT).
      let pending: Token[] = [];
      const send = async (tokens: Token[]) => {
        for (const token of tokens) await stream.writeSSE({ data: JSON.stringify({ token, generated_text: null, details: null } satisfies StreamResponse) });
      };
      try {
        let r = first;
        while (!r.done) {
          const e = r.value;
          if (e.type === 'token') {
            const t = toToken(e.token);
            if (t.special || !e.settled) pending.push(t);
            else {
              await send(pending);
              pending = [];
              await send([t]);
            }
          } else if (e.type === 'end') {
            attachTokenTail(pending, e.tokenTail);
            const last: Token = pending.pop() ?? { id: 0, text: '', logprob: null, special: false, skipped: false };
            await send(pending);
            const msg: StreamResponse = {
              token: last,
              generated_text: prefix + e.generatedText,
              details: p.details ? { finish_reason: e.finishReason, prompt_tokens: e.inputLength, generated_tokens: e.generatedTokens, seed: e.seed } : null,
            };
            await stream.writeSSE({ data: JSON.stringify(msg) });
            pending = [];
          }
          if (ac.signal.aborted) break;
          r = await it.next();
        }
      } catch (err) {
        // A failure mid-stream must reach the client as an error event, never as a clean end.
        await stream.writeSSE({ data: JSON.stringify(errorBody('lorax', err)) });
      } finally {
        await it.return(undefined);
      }
    }),
  );
}

export function loraxRoutes(rt: Runtime): Hono<AuthEnv> {
  const app = new Hono<AuthEnv>();

  // Failures are thrown: the app's onError answers them in LoRAX's shape (errors.ts).
  app.post('/generate', async (c) => {
    const body = await readRequest(c, 'lorax.generate', rt, 'inputs');
    if (!body.ok) return c.json(body.error, 422);
    const parsed = body;
    return c.json(await runGenerate(rt, c, body.prompt ?? parsed.data.inputs, parsed.data.parameters));
  });

  app.post('/generate_stream', async (c) => {
    const body = await readRequest(c, 'lorax.generate_stream', rt, 'inputs');
    if (!body.ok) return c.json(body.error, 422);
    const parsed = body;
    return streamResponse(rt, c, body.prompt ?? parsed.data.inputs, parsed.data.parameters);
  });

  // LoRAX serves its compat route at / and at SageMaker's /invocations alike.
  app.on('POST', ['/', '/invocations'], async (c) => {
    const body = await readRequest(c, 'lorax.compat', rt, 'inputs');
    if (!body.ok) return c.json(body.error, 422);
    const parsed = body;
    const { parameters, stream } = parsed.data;
    const inputs = body.prompt ?? parsed.data.inputs;
    if (stream) return streamResponse(rt, c, inputs, parameters);
    return c.json([await runGenerate(rt, c, inputs, parameters)]);
  });

  return app;
}
