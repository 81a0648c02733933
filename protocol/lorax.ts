// LoRAX (TGI-derived) REST API: `POST /generate`, `POST /generate_stream`
// and the compat route `POST /` (what lorax-client >= 0.6 posts to).
//
// Field names, defaults and validation rules follow predibase/lorax
// `router/src/lib.rs` (serde structs) and `router/src/validation.rs`
// (semantic checks), so that requests LoRAX accepts parse here with the same
// meaning and requests LoRAX rejects are rejected with an equivalent message.
// Rules that depend on server configuration (max_best_of, max_stop_sequences,
// max_input_length, token counts) cannot live in a static schema; see
// `checkGenerateLimits` below and the tokenizer-based checks in the server.
import { z } from 'zod';
import { Count, JsonSchemaObject, optional, withDefault } from './common.ts';
import type { ServedAdapterSource } from './contract.ts';

// ---------------------------------------------------------------------------
// Adapters
// ---------------------------------------------------------------------------

/**
 * Where an adapter is loaded from. LoRAX's router takes any string and the
 * python server knows these four; lorax-client validates the same list.
 * Switchboard serves `hub`, `local` and `s3` (SERVED_ADAPTER_SOURCES, contract.ts):
 * `pbase` parses here so the server can answer a precise error instead of a
 * generic schema error.
 */
export const ADAPTER_SOURCES = ['hub', 'local', 's3', 'pbase'] as const;
export const AdapterSource = z.enum(ADAPTER_SOURCES);
export type AdapterSource = z.infer<typeof AdapterSource>;

/** LoRAX's default `--adapter-source` (router/src/main.rs, launcher). */
export const DEFAULT_ADAPTER_SOURCE: ServedAdapterSource = 'hub';

/** Adapter id LoRAX uses internally for "no adapter" (router/src/adapter.rs). */
export const BASE_MODEL_ADAPTER_ID = '__base_model__';

export const MERGE_STRATEGIES = ['linear', 'ties', 'dare_linear', 'dare_ties'] as const;
export const MergeStrategy = z.enum(MERGE_STRATEGIES);
export type MergeStrategy = z.infer<typeof MergeStrategy>;

export const MAJORITY_SIGN_METHODS = ['total', 'frequency'] as const;
export const MajoritySignMethod = z.enum(MAJORITY_SIGN_METHODS);
export type MajoritySignMethod = z.infer<typeof MajoritySignMethod>;

/** Strategies that prune by `density`; a zero density would drop every weight (or divide by zero for DARE). */
const SPARSIFYING_STRATEGIES: readonly MergeStrategy[] = ['ties', 'dare_linear', 'dare_ties'];

/**
 * Per-request adapter merge (`parameters.merged_adapters`; LoRAX's Rust type
 * is `AdapterParameters`, but the JSON key is `merged_adapters`).
 *
 * Defaults: merge_strategy "linear", majority_sign_method "total", density 0.0
 * (router/src/lib.rs). Weights default to 1.0 each as documented in
 * docs/guides/merging_adapters.md; LoRAX's router actually rejects omitted
 * weights ("number of adapter IDs must match number of adapter weights"), we
 * take the documented behaviour since it only accepts more.
 */
/**
 * Most adapters one request may merge (Switchboard's bound; LoRAX sets none). Each id is resolved,
 * fetched and merged per request: 50,000 ids in a 600 KB body held the gateway's event loop for 7 s.
 */
export const MAX_MERGED_ADAPTERS = 32;

// LoRAX reads these sampling values as f32 / i32: larger ones reached the engine and came back as a
// 424 generation error instead of a validation error.
const F32_MAX = 3.4028234663852886e38;
const I32_MAX = 2147483647;
const f32Range = 'must be at most 3.4e38 (a 32-bit float)';
const i32Range = `must be <= ${I32_MAX}`;

export const MergedAdapters = z
  .object({
    ids: z
      .array(z.string().min(1, { error: 'adapter ids must not be empty strings' }))
      .min(1, {
        error: 'at least one adapter ID must be provided when setting `merged_adapters`',
      })
      .max(MAX_MERGED_ADAPTERS, { error: (iss) => `at most ${MAX_MERGED_ADAPTERS} adapters may be merged in one request. Given: ${(iss.input as unknown[]).length}` }),
    weights: optional(z.array(z.number())),
    merge_strategy: withDefault(MergeStrategy, 'linear'),
    density: withDefault(
      z.number().min(0, { error: 'must be >= 0.0 and <= 1.0' }).max(1, { error: 'must be >= 0.0 and <= 1.0' }),
      0,
    ),
    majority_sign_method: withDefault(MajoritySignMethod, 'total'),
    /**
     * Switchboard extension: one hub token per id (null: none), so a token is only ever sent for
     * the repo it was given with. Without it, the request's api_token goes with every id (LoRAX).
     */
    api_tokens: optional(z.array(z.string().min(1).nullable())),
  })
  .superRefine((value, ctx) => {
    if (value.api_tokens !== undefined && value.api_tokens.length !== value.ids.length) {
      ctx.addIssue({
        code: 'custom',
        path: ['api_tokens'],
        message: `number of adapter IDs must match number of api_tokens (${value.ids.length} ids, ${value.api_tokens.length} api_tokens)`,
      });
    }
    if (value.weights !== undefined && value.weights.length !== value.ids.length) {
      ctx.addIssue({
        code: 'custom',
        path: ['weights'],
        message: `number of adapter IDs must match number of adapter weights (${value.ids.length} ids, ${value.weights.length} weights)`,
      });
    }
    if (SPARSIFYING_STRATEGIES.includes(value.merge_strategy) && !(value.density > 0)) {
      ctx.addIssue({
        code: 'custom',
        path: ['density'],
        message: `must be > 0.0 when merge_strategy is "${value.merge_strategy}" (fraction of weights to keep)`,
      });
    }
  })
  .transform((value) => ({
    ...value,
    weights: value.weights ?? value.ids.map(() => 1),
  }));
export type MergedAdapters = z.infer<typeof MergedAdapters>;

// ---------------------------------------------------------------------------
// Structured output
// ---------------------------------------------------------------------------

/**
 * `parameters.response_format`. LoRAX accepts `type` "json_object",
 * "json_schema" and "text" with an optional top-level `schema`
 * (router/src/lib.rs `ResponseFormat`); lorax-client only sends
 * `{type: "json_object", schema?}`. When `schema` is absent LoRAX constrains
 * to DEFAULT_JSON_OBJECT_SCHEMA (any JSON object) — including, oddly, for
 * "text"; a server should treat "text" as "no constraint".
 */
export const RESPONSE_FORMAT_TYPES = ['json_object', 'json_schema', 'text'] as const;
export const ResponseFormat = z.object({
  type: z.enum(RESPONSE_FORMAT_TYPES),
  schema: optional(JsonSchemaObject),
});
export type ResponseFormat = z.infer<typeof ResponseFormat>;

/** The schema LoRAX uses for json_object without a schema (router/src/lib.rs `default_json_schema`). */
export const DEFAULT_JSON_OBJECT_SCHEMA: Readonly<Record<string, unknown>> = Object.freeze({
  additionalProperties: { type: ['object', 'string', 'integer', 'number', 'boolean', 'null'] },
  title: 'ArbitraryJsonModel',
  type: 'object',
});

// ---------------------------------------------------------------------------
// Generate parameters
// ---------------------------------------------------------------------------

// Messages mirror router/src/validation.rs `ValidationError`, minus the
// backticked field name: formatZodIssue prefixes the full path instead
// (e.g. "parameters.top_p: must be > 0.0 and <= 1.0").
const positive = 'must be strictly positive';
const penaltyRange = 'must be >= -2.0 and <= 2.0';

/**
 * `parameters` of a generate request. Output type has LoRAX's serde defaults
 * applied (booleans false, `stop` []); unset optional knobs stay undefined so
 * the server can tell "absent" from an explicit value (LoRAX does: e.g. any
 * explicit temperature counts as sampling for best_of).
 */
export const GenerateParameters = z
  .object({
    /** Adapter to apply; absent or "" means the base model. */
    adapter_id: optional(z.string()),
    /** Defaults to the server's --adapter-source ("hub" in LoRAX). */
    adapter_source: optional(AdapterSource),
    /** Mutually exclusive with `adapter_id`. */
    merged_adapters: optional(MergedAdapters),
    /** Token for private adapters; LoRAX falls back to `Authorization: Bearer`. */
    api_token: optional(z.string()),
    /** Generate `best_of` sequences, return the one with the highest logprob. Needs sampling. */
    best_of: optional(z.int().min(1, { error: 'must be > 0' })),
    /** 0 means greedy (LoRAX allows 0 since predibase/lorax#467; TGI requires > 0). Default 1.0. */
    temperature: optional(z.number().min(0, { error: 'must be non-negative' }).max(F32_MAX, { error: f32Range })),
    /** Default 1.0 (no penalty). */
    repetition_penalty: optional(z.number().gt(0, { error: positive }).max(F32_MAX, { error: f32Range })),
    /** OpenAI-style penalties, default 0.0. */
    frequency_penalty: optional(z.number().min(-2, { error: penaltyRange }).max(2, { error: penaltyRange })),
    presence_penalty: optional(z.number().min(-2, { error: penaltyRange }).max(2, { error: penaltyRange })),
    /** Default: disabled. */
    top_k: optional(z.int().gt(0, { error: positive }).max(I32_MAX, { error: i32Range })),
    /** (0, 1]; default 1.0. (LoRAX's message says "< 1.0" but its check allows 1.0.) */
    top_p: optional(z.number().gt(0, { error: 'must be > 0.0 and <= 1.0' }).max(1, { error: 'must be > 0.0 and <= 1.0' })),
    /** (0, 1); default 1.0 (disabled). */
    typical_p: optional(z.number().gt(0, { error: 'must be > 0.0 and < 1.0' }).lt(1, { error: 'must be > 0.0 and < 1.0' })),
    do_sample: withDefault(z.boolean(), false),
    /** Absent: generate until max_total_tokens - input tokens (LoRAX validation.rs). */
    max_new_tokens: optional(z.int().gt(0, { error: positive })),
    ignore_eos_token: withDefault(z.boolean(), false),
    /**
     * Prepend the prompt to generated_text. Absent: false on /generate and
     * /generate_stream; on the compat route `POST /` LoRAX defaults it from the
     * model's pipeline tag (true only for pipeline_tag "lorax").
     */
    return_full_text: optional(z.boolean()),
    /** Stop sequences; the maximum count is server configuration (see checkGenerateLimits). */
    stop: withDefault(z.array(z.string()), () => []),
    /** Keep only the last `truncate` input tokens; must also be <= max_input_length. */
    truncate: optional(z.int().gt(0, { error: positive })),
    watermark: withDefault(z.boolean(), false),
    /** Return `details`. LoRAX's OpenAPI says default true, but serde's default (what it does) is false. */
    details: withDefault(z.boolean(), false),
    /** Return prefill (prompt) token logprobs; implies details. Not allowed when streaming. */
    decoder_input_details: withDefault(z.boolean(), false),
    /** Return the k most likely alternatives for each generated token. */
    return_k_alternatives: optional(z.int().gt(0, { error: positive })),
    /** Accepted and ignored by LoRAX ("for now allow this field even though it is unused"). */
    apply_chat_template: withDefault(z.boolean(), false),
    /** Sampling seed (u64 in LoRAX; we keep to JS safe integers). Random when absent. */
    seed: optional(z.int().min(0, { error: 'must be a non-negative integer' })),
    response_format: optional(ResponseFormat),
  })
  .superRefine((p, ctx) => {
    // Same order and wording as validation.rs / lorax-client.
    if (p.adapter_id !== undefined && p.merged_adapters !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['merged_adapters'],
        message: 'at most one of `adapter_id` or `merged_adapters` may be provided',
      });
    }
    const bestOf = p.best_of ?? 1;
    if (bestOf > 1) {
      if (!isSampling(p)) {
        ctx.addIssue({
          code: 'custom',
          path: ['best_of'],
          message:
            'you must use sampling when `best_of` is > 1 (set `do_sample`, `temperature`, `top_k`, `top_p` or `typical_p`)',
        });
      }
      if (p.seed !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['seed'], message: 'must not be set when `best_of` > 1' });
      }
    }
  });
export type GenerateParameters = z.infer<typeof GenerateParameters>;
export type GenerateParametersInput = z.input<typeof GenerateParameters>;

/**
 * LoRAX's notion of "sampling requested" (validation.rs): any sampling knob
 * being present counts, even temperature 0 — which the python server then
 * turns back into greedy decoding.
 */
export function isSampling(
  p: Pick<GenerateParameters, 'do_sample' | 'temperature' | 'top_k' | 'top_p' | 'typical_p'>,
): boolean {
  return (
    p.do_sample ||
    p.temperature !== undefined ||
    p.top_k !== undefined ||
    p.top_p !== undefined ||
    p.typical_p !== undefined
  );
}

/** Fresh default parameters (what LoRAX's `default_parameters()` gives when `parameters` is absent). */
export function defaultGenerateParameters(): GenerateParameters {
  return GenerateParameters.parse({});
}

// `parameters` may be absent (LoRAX: serde default) or null (lenient).
const parametersField = GenerateParameters.nullish().transform((p) => p ?? defaultGenerateParameters());

const inputsField = z.string().min(1, { error: 'cannot be empty' });

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/** `POST /generate` body. */
export const GenerateRequest = z.object({
  inputs: inputsField,
  parameters: parametersField,
});
export type GenerateRequest = z.infer<typeof GenerateRequest>;
export type GenerateRequestInput = z.input<typeof GenerateRequest>;

// LoRAX reports these two as an SSE error event with HTTP 200 because it
// checks them inside the stream; a schema lets us refuse before streaming.
function refineStreaming(req: { parameters: GenerateParameters }, ctx: z.RefinementCtx): void {
  if (req.parameters.best_of !== undefined && req.parameters.best_of !== 1) {
    ctx.addIssue({
      code: 'custom',
      path: ['parameters', 'best_of'],
      message: '`best_of` != 1 is not supported when streaming tokens',
    });
  }
  if (req.parameters.decoder_input_details) {
    ctx.addIssue({
      code: 'custom',
      path: ['parameters', 'decoder_input_details'],
      message: '`decoder_input_details` == true is not supported when streaming tokens',
    });
  }
}

/** `POST /generate_stream` body: same shape as GenerateRequest plus the streaming restrictions. */
export const GenerateStreamRequest = GenerateRequest.superRefine(refineStreaming);
export type GenerateStreamRequest = z.infer<typeof GenerateStreamRequest>;

/**
 * `POST /` (and `/invocations`) body: GenerateRequest plus `stream`.
 * lorax-client posts here and reads `[GenerateResponse]` (an array) back,
 * or an SSE stream of StreamResponse when `stream` is true.
 */
export const CompatGenerateRequest = z
  .object({
    inputs: inputsField,
    parameters: parametersField,
    stream: withDefault(z.boolean(), false),
  })
  .superRefine((req, ctx) => {
    if (req.stream) refineStreaming(req, ctx);
  });
export type CompatGenerateRequest = z.infer<typeof CompatGenerateRequest>;
export type CompatGenerateRequestInput = z.input<typeof CompatGenerateRequest>;

/** `POST /tokenize` body (TGI): the text, and whether to add the tokenizer's special tokens. */
export const TokenizeRequest = z.object({
  inputs: z.string(),
  add_special_tokens: optional(z.boolean()),
});
export type TokenizeRequest = z.infer<typeof TokenizeRequest>;

// ---------------------------------------------------------------------------
// Server-configured limits
// ---------------------------------------------------------------------------

/** Limits that LoRAX takes from its command line rather than the schema. */
export interface GenerateLimits {
  /** --max-best-of */
  maxBestOf: number;
  /** --max-stop-sequences */
  maxStopSequences: number;
  /** --max-input-length (tokens) */
  maxInputLength: number;
}

/**
 * LoRAX launcher defaults (launcher/src/main.rs): max_best_of 2,
 * max_stop_sequences 4, max_input_length min(max_position_embeddings, 4096) - 1,
 * max_total_tokens min(max_position_embeddings, 4096). (The bare router binary
 * defaults differ: max_stop_sequences 10, max_input_length 1792,
 * max_total_tokens 2048.)
 */
export const LORAX_DEFAULT_LIMITS = Object.freeze({
  maxBestOf: 2,
  maxStopSequences: 4,
  maxInputLength: 4095,
  maxTotalTokens: 4096,
});

/**
 * The config-dependent checks of validation.rs, with its wording. Returns
 * the issues (path + message, same shape as zod's) so callers can format
 * them exactly like schema errors; an empty array means OK. Token-count
 * checks (input length, inputs + max_new_tokens) need the tokenizer and stay
 * in the server.
 */
export function checkGenerateLimits(
  parameters: Pick<GenerateParameters, 'best_of' | 'stop' | 'truncate'>,
  limits: GenerateLimits,
): Array<{ path: (string | number)[]; message: string }> {
  const issues: Array<{ path: (string | number)[]; message: string }> = [];
  const bestOf = parameters.best_of ?? 1;
  if (limits.maxBestOf === 1 && bestOf !== 1) {
    issues.push({ path: ['parameters', 'best_of'], message: '`best_of` != 1 is not allowed for this endpoint' });
  } else if (bestOf > limits.maxBestOf) {
    issues.push({
      path: ['parameters', 'best_of'],
      message: `must be > 0 and <= ${limits.maxBestOf}. Given: ${bestOf}`,
    });
  }
  if (parameters.stop.length > limits.maxStopSequences) {
    issues.push({
      path: ['parameters', 'stop'],
      message: `supports up to ${limits.maxStopSequences} stop sequences. Given: ${parameters.stop.length}`,
    });
  }
  if (parameters.truncate !== undefined && parameters.truncate > limits.maxInputLength) {
    issues.push({
      path: ['parameters', 'truncate'],
      message: `must be strictly positive and less than ${limits.maxInputLength}. Given: ${parameters.truncate}`,
    });
  }
  return issues;
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/** `length`: hit max_new_tokens; `eos_token`: model emitted EOS; `stop_sequence`: matched `stop`. */
export const FINISH_REASONS = ['length', 'eos_token', 'stop_sequence'] as const;
export const FinishReason = z.enum(FINISH_REASONS);
export type FinishReason = z.infer<typeof FinishReason>;

// LoRAX serialises f32 logprobs with serde_json, which writes NaN (e.g. the
// first prompt token, which has no logprob) as null.
const Logprob = z.number().nullable();

// Seeds are u64 in LoRAX; a real LoRAX seed can exceed 2^53 and arrives as an
// imprecise float, so responses accept any non-negative number.
const ResponseSeed = z.number().min(0).nullable();

/** Prompt (prefill) token, returned with decoder_input_details. */
export const PrefillToken = z.object({
  id: Count,
  text: z.string(),
  logprob: Logprob,
});
export type PrefillToken = z.infer<typeof PrefillToken>;

/** One of the top-k alternatives for a generated token (return_k_alternatives). */
export const AlternativeToken = z.object({
  id: Count,
  text: z.string(),
  logprob: Logprob,
});
export type AlternativeToken = z.infer<typeof AlternativeToken>;

/** Generated token. */
export const Token = z.object({
  id: Count,
  text: z.string(),
  logprob: Logprob,
  /** Special tokens (EOS...) are usually skipped when concatenating text. */
  special: z.boolean(),
  /** Present only when return_k_alternatives was requested (serde skip_serializing_if none). */
  alternative_tokens: z.array(AlternativeToken).optional(),
  /**
   * LoRAX addition (speculative decoding). lorax-client's pydantic model
   * requires it, so producers must always send it; parsing tolerates TGI
   * responses that lack it.
   */
  skipped: z.boolean().default(false),
});
export type Token = z.infer<typeof Token>;

/** Extra sequences returned when best_of > 1 (details.best_of_sequences). */
export const BestOfSequence = z.object({
  generated_text: z.string(),
  finish_reason: FinishReason,
  generated_tokens: Count,
  seed: ResponseSeed,
  prefill: z.array(PrefillToken),
  tokens: z.array(Token),
});
export type BestOfSequence = z.infer<typeof BestOfSequence>;

/** `details` of a /generate response (present when details or decoder_input_details). */
export const Details = z.object({
  finish_reason: FinishReason,
  prompt_tokens: Count,
  generated_tokens: Count,
  /** Tokens accepted from speculation without a forward pass each. */
  skipped_tokens: Count,
  seed: ResponseSeed,
  /** Empty unless decoder_input_details. */
  prefill: z.array(PrefillToken),
  tokens: z.array(Token),
  /** Present only when best_of > 1. */
  best_of_sequences: z.array(BestOfSequence).optional(),
});
export type Details = z.infer<typeof Details>;

/** `POST /generate` response. `details` is omitted (not null) when not requested. */
export const GenerateResponse = z.object({
  generated_text: z.string(),
  details: Details.optional(),
});
export type GenerateResponse = z.infer<typeof GenerateResponse>;

/** Non-streaming `POST /` response: LoRAX wraps the single result in an array (api-inference compat). */
export const CompatGenerateResponse = z.array(GenerateResponse);
export type CompatGenerateResponse = z.infer<typeof CompatGenerateResponse>;

/** `details` of the last stream event (only when parameters.details). */
export const StreamDetails = z.object({
  finish_reason: FinishReason,
  prompt_tokens: Count,
  generated_tokens: Count,
  seed: ResponseSeed,
});
export type StreamDetails = z.infer<typeof StreamDetails>;

/**
 * One SSE `data:` event of /generate_stream. `generated_text` and `details`
 * are null on every event but the last (always serialised, never omitted).
 */
export const StreamResponse = z.object({
  token: Token,
  generated_text: z.string().nullable(),
  details: StreamDetails.nullable(),
});
export type StreamResponse = z.infer<typeof StreamResponse>;

/**
 * `error_type` values LoRAX emits (router/src/infer.rs `InferError::error_type`
 * and server.rs). lorax-client maps generation / incomplete_generation /
 * overloaded / validation to typed exceptions and otherwise falls back on the
 * HTTP status.
 */
export const LORAX_ERROR_TYPES = [
  'validation',
  'generation',
  'overloaded',
  'incomplete_generation',
  'template_error',
  'tool_error',
  'healthcheck',
  'invalid_input',
] as const;
export type LoraxErrorType = (typeof LORAX_ERROR_TYPES)[number];

/**
 * Error body for every LoRAX route, and also the payload of an SSE error
 * event mid-stream. `error_type` is a free string on the wire.
 */
export const ErrorResponse = z.object({
  error: z.string(),
  error_type: z.string(),
});
export type ErrorResponse = z.infer<typeof ErrorResponse>;

/** HTTP statuses LoRAX uses per error type (server.rs `From<InferError>`). */
export const LORAX_ERROR_STATUS = Object.freeze({
  validation: 422,
  generation: 424,
  overloaded: 429,
  incomplete_generation: 500,
} satisfies Partial<Record<LoraxErrorType, number>>);
