// OpenAI-compatible API: `POST /v1/chat/completions`, `POST /v1/completions`,
// `GET /v1/models`, and OpenAI's error body.
//
// Requests follow OpenAI's documented ranges (what the `openai` SDKs and
// LangChain & co. send), plus the extra sampling/adapter fields LoRAX's
// OpenAI endpoints accept (router/src/lib.rs ChatCompletionRequest /
// CompletionRequest: repetition_penalty, top_k, ignore_eos_token,
// adapter_source, api_token, tool_prompt, guideline). As in LoRAX, `model` is
// the adapter id, "" (or the base model's id) meaning the base model.
//
// Unknown fields are stripped, as OpenAI-compatible servers ignore them.
// Fields we know about but may not honour (tools, logit_bias, ...) are parsed
// so the server can decide to refuse them explicitly.
import { z } from 'zod';
import { Count, JsonSchemaObject, optional, withDefault } from './common.ts';
import { AdapterSource } from './lorax.ts';

// ---------------------------------------------------------------------------
// Shared request pieces
// ---------------------------------------------------------------------------

/** OpenAI allows at most 4 stop sequences. */
export const MAX_STOP_SEQUENCES = 4;

/**
 * `stop`: a string or up to 4 strings. Normalised to an array (possibly
 * empty) so the server has one shape to handle.
 */
export const Stop = withDefault(
  z.union([z.string(), z.array(z.string()).max(MAX_STOP_SEQUENCES)]),
  () => [] as string[],
).transform((stop): string[] => (typeof stop === 'string' ? [stop] : stop));

export const StreamOptions = z.object({
  /** Send a last chunk with `usage` and empty `choices` (other chunks carry `usage: null`). */
  include_usage: optional(z.boolean()),
  /** Accepted for SDK compatibility; obfuscation padding is not implemented. */
  include_obfuscation: optional(z.boolean()),
});
export type StreamOptions = z.infer<typeof StreamOptions>;

/** Token id (as a string key) -> bias in [-100, 100]. */
/** OpenAI's bound on logit_bias entries; each is applied at every sampled token. */
export const MAX_LOGIT_BIAS_ENTRIES = 300;

export const LogitBias = z
  .record(
    z.string().regex(/^\d+$/, { error: 'keys must be token ids (non-negative integers)' }),
    z.number().min(-100).max(100),
  )
  .refine((o) => Object.keys(o).length <= MAX_LOGIT_BIAS_ENTRIES, { error: `at most ${MAX_LOGIT_BIAS_ENTRIES} token ids` });
export type LogitBias = z.infer<typeof LogitBias>;

const penalty = () => optional(z.number().min(-2).max(2));

// Fields common to chat and legacy completions, OpenAI's ranges.
const samplingFields = {
  /** Adapter id; "" or the base model id selects the base model. */
  model: z.string(),
  /** 0 means greedy. */
  temperature: optional(z.number().min(0).max(2)),
  /** OpenAI allows 0; LoRAX's own top_p must be > 0, so map 0 to greedy. */
  top_p: optional(z.number().min(0).max(1)),
  /** Number of choices. */
  n: optional(z.int().min(1).max(128)),
  stream: withDefault(z.boolean(), false),
  /** Only meaningful with `stream: true`; ignored otherwise (OpenAI rejects it, we are lenient). */
  stream_options: optional(StreamOptions),
  stop: Stop,
  /** Any integer per OpenAI; LoRAX seeds are u64, so the server must map negatives. */
  seed: optional(z.int()),
  presence_penalty: penalty(),
  frequency_penalty: penalty(),
  logit_bias: optional(LogitBias),
  user: optional(z.string()),
  // LoRAX extensions.
  // Within f32 / i32 like LoRAX (larger values reached the engine and failed there).
  repetition_penalty: optional(z.number().gt(0, { error: 'must be strictly positive' }).max(3.4028234663852886e38, { error: 'must be at most 3.4e38 (a 32-bit float)' })),
  top_k: optional(z.int().gt(0, { error: 'must be strictly positive' }).max(2147483647, { error: 'must be <= 2147483647' })),
  ignore_eos_token: optional(z.boolean()),
  adapter_source: optional(AdapterSource),
  api_token: optional(z.string()),
};

// ---------------------------------------------------------------------------
// Chat messages
// ---------------------------------------------------------------------------

export const TextContentPart = z.object({
  type: z.literal('text'),
  text: z.string(),
});
export type TextContentPart = z.infer<typeof TextContentPart>;

/**
 * The only content part we take is text. A one-member discriminated union
 * (rather than the bare object) so an image/audio/file part is reported once,
 * on its `type`, instead of also complaining about the missing `text`.
 */
const ContentPart = z.discriminatedUnion('type', [TextContentPart], {
  error: (iss) => {
    if (iss.code !== 'invalid_union') return undefined;
    const input = iss.input as { type?: unknown } | undefined;
    const type = input && typeof input === 'object' ? input.type : undefined;
    return type === undefined
      ? 'is required (only "text" content parts are supported)'
      : `only "text" content parts are supported, got ${JSON.stringify(type)}`;
  },
});

/** Message content: a string or an array of text parts. */
export const MessageContent = z.union([z.string(), z.array(ContentPart)]);
export type MessageContent = z.infer<typeof MessageContent>;

/** A tool call made by the assistant (in requests' history and in responses). */
export const ToolCall = z.object({
  id: z.string(),
  type: z.literal('function'),
  function: z.object({
    name: z.string(),
    /** JSON-encoded arguments, as generated. */
    arguments: z.string(),
  }),
});
export type ToolCall = z.infer<typeof ToolCall>;

export const SystemMessage = z.object({
  role: z.literal('system'),
  content: MessageContent,
  name: optional(z.string()),
});
/** OpenAI's newer name for system instructions; chat templates treat it as "system". */
export const DeveloperMessage = z.object({
  role: z.literal('developer'),
  content: MessageContent,
  name: optional(z.string()),
});
export const UserMessage = z.object({
  role: z.literal('user'),
  content: MessageContent,
  name: optional(z.string()),
});
/** Prior assistant turn; content may be null when it only made tool calls. */
export const AssistantMessage = z.object({
  role: z.literal('assistant'),
  content: optional(MessageContent),
  name: optional(z.string()),
  refusal: optional(z.string()),
  tool_calls: optional(z.array(ToolCall)),
});
export const ToolMessage = z.object({
  role: z.literal('tool'),
  content: MessageContent,
  tool_call_id: z.string(),
});

export const CHAT_ROLES = ['system', 'developer', 'user', 'assistant', 'tool'] as const;
export type ChatRole = (typeof CHAT_ROLES)[number];

export const ChatMessage = z.discriminatedUnion('role', [
  SystemMessage,
  DeveloperMessage,
  UserMessage,
  AssistantMessage,
  ToolMessage,
]);
export type ChatMessage = z.infer<typeof ChatMessage>;

/** Concatenate text parts (how LoRAX flattens multi-part content before templating). */
export function contentToText(content: MessageContent | undefined): string {
  if (content === undefined) return '';
  return typeof content === 'string' ? content : content.map((part) => part.text).join('');
}

// ---------------------------------------------------------------------------
// Tools and structured output
// ---------------------------------------------------------------------------

export const FunctionTool = z.object({
  type: z.literal('function'),
  function: z.object({
    name: z.string().min(1),
    description: optional(z.string()),
    /** JSON Schema of the arguments. */
    parameters: optional(JsonSchemaObject),
    strict: optional(z.boolean()),
  }),
});
export type FunctionTool = z.infer<typeof FunctionTool>;

/** "none" | "auto" | "required" | a named function. */
export const ToolChoice = z.union([
  z.enum(['none', 'auto', 'required']),
  z.object({ type: z.literal('function'), function: z.object({ name: z.string() }) }),
]);
export type ToolChoice = z.infer<typeof ToolChoice>;

// OpenAI: a-z, A-Z, 0-9, underscores and dashes, max 64.
const JSON_SCHEMA_NAME = /^[A-Za-z0-9_-]{1,64}$/;

export const OpenAIResponseFormat = z.discriminatedUnion('type', [
  z.object({ type: z.literal('text') }),
  z.object({
    type: z.literal('json_object'),
    /** LoRAX backwards-compatible extension: a schema directly on json_object. */
    schema: optional(JsonSchemaObject),
  }),
  z.object({
    type: z.literal('json_schema'),
    json_schema: z.object({
      name: z.string().regex(JSON_SCHEMA_NAME, {
        error: 'must be 1-64 characters of a-z, A-Z, 0-9, "_" or "-"',
      }),
      description: optional(z.string()),
      /** Absent: any JSON object (LoRAX falls back to its default schema). */
      schema: optional(JsonSchemaObject),
      strict: optional(z.boolean()),
    }),
  }),
]);
export type OpenAIResponseFormat = z.infer<typeof OpenAIResponseFormat>;

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/** `POST /v1/chat/completions` body. */
export const ChatCompletionRequest = z
  .object({
    ...samplingFields,
    messages: z.array(ChatMessage).min(1, { error: 'must contain at least one message' }),
    /** Deprecated by OpenAI in favour of max_completion_tokens; both mean max new tokens. */
    max_tokens: optional(z.int().min(1)),
    max_completion_tokens: optional(z.int().min(1)),
    logprobs: withDefault(z.boolean(), false),
    top_logprobs: optional(z.int().min(0).max(20)),
    response_format: optional(OpenAIResponseFormat),
    tools: optional(z.array(FunctionTool)),
    tool_choice: optional(ToolChoice),
    parallel_tool_calls: optional(z.boolean()),
    // LoRAX extensions for tool use.
    tool_prompt: optional(z.string()),
    guideline: optional(z.string()),
  })
  .superRefine((req, ctx) => {
    if (req.top_logprobs !== undefined && !req.logprobs) {
      ctx.addIssue({ code: 'custom', path: ['top_logprobs'], message: 'requires `logprobs` to be true' });
    }
  });
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequest>;
export type ChatCompletionRequestInput = z.input<typeof ChatCompletionRequest>;

/** Effective max new tokens of a chat request (max_completion_tokens wins, as at OpenAI). */
export function chatMaxTokens(req: Pick<ChatCompletionRequest, 'max_tokens' | 'max_completion_tokens'>): number | undefined {
  return req.max_completion_tokens ?? req.max_tokens;
}

const TokenIds = z.array(z.int().min(0)).min(1);

/**
 * `prompt`: a string, a token-id array, or a non-empty array of either (one choice set per
 * prompt), as OpenAI's legacy completions take it. Token ids skip the tokenizer (no BOS is
 * added: the ids are the whole prompt) and are checked against the vocabulary by the server.
 * The token-id forms come first: a long id array fails `string[]` on every element.
 */
export const Prompt = z.union([z.string(), TokenIds, z.array(TokenIds).min(1), z.array(z.string()).min(1)], {
  error: (iss) =>
    Array.isArray(iss.input)
      ? iss.input.length === 0
        ? 'must contain at least 1 item'
        : 'must be a string, or a non-empty array of strings, of token ids (integers >= 0) or of token-id arrays'
      : undefined,
});
export type Prompt = z.infer<typeof Prompt>;

/** A completion request's prompts, one per choice set: texts, or token-id arrays used as they are. */
export function completionPrompts(prompt: Prompt): (string | number[])[] {
  if (typeof prompt === 'string') return [prompt];
  if (prompt.length > 0 && typeof prompt[0] === 'number') return [prompt as number[]];
  return prompt as (string | number[])[];
}

/** `POST /v1/completions` body. */
export const CompletionRequest = z
  .object({
    ...samplingFields,
    prompt: Prompt,
    /**
     * OpenAI default is 16; LoRAX's default is "until max_total_tokens". 0 is
     * only meaningful with echo (scoring the prompt, e.g. lm-eval-harness).
     */
    max_tokens: optional(z.int().min(0)),
    /** Return the prompt before the completion (and its logprobs when logprobs is set). */
    echo: withDefault(z.boolean(), false),
    /** Number of top alternatives per token, 0..5. */
    logprobs: optional(z.int().min(0).max(5)),
    /** Candidates generated server-side, best n returned; >= n. */
    best_of: optional(z.int().min(1).max(20)),
    /** Not in OpenAI's legacy endpoint, but LoRAX and vLLM take it there too: JSON mode for completions. */
    response_format: optional(OpenAIResponseFormat),
    /** Insertion (fill-in-the-middle) is not supported; only absent/null/"" pass. */
    suffix: optional(z.string().max(0, { error: 'is not supported (insertion/fill-in-the-middle is not available)' })),
  })
  .superRefine((req, ctx) => {
    if (req.best_of !== undefined && req.best_of < (req.n ?? 1)) {
      ctx.addIssue({ code: 'custom', path: ['best_of'], message: 'must be greater than or equal to `n`' });
    }
    if (req.max_tokens === 0 && !req.echo) {
      ctx.addIssue({ code: 'custom', path: ['max_tokens'], message: 'must be >= 1 unless `echo` is true' });
    }
  });
export type CompletionRequest = z.infer<typeof CompletionRequest>;
export type CompletionRequestInput = z.input<typeof CompletionRequest>;

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/**
 * Why a choice ended. We emit "stop" (EOS or stop sequence), "length", and
 * "tool_calls" for tool use; "content_filter" is listed because LoRAX emits
 * it (for stop sequences) and clients may parse LoRAX's responses.
 */
export const OPENAI_FINISH_REASONS = ['stop', 'length', 'tool_calls', 'content_filter'] as const;
export const OpenAIFinishReason = z.enum(OPENAI_FINISH_REASONS);
export type OpenAIFinishReason = z.infer<typeof OpenAIFinishReason>;

export const Usage = z.object({
  prompt_tokens: Count,
  completion_tokens: Count,
  total_tokens: Count,
});
export type Usage = z.infer<typeof Usage>;

const Unix = z.int().min(0);

// --- chat ---

export const TopLogprob = z.object({
  token: z.string(),
  logprob: z.number(),
  /** UTF-8 bytes of the token; null when it is not representable. */
  bytes: z.array(z.int().min(0).max(255)).nullable(),
});
export type TopLogprob = z.infer<typeof TopLogprob>;

export const ChatCompletionTokenLogprob = TopLogprob.extend({
  /** Up to top_logprobs entries, most likely first. */
  top_logprobs: z.array(TopLogprob),
});
export type ChatCompletionTokenLogprob = z.infer<typeof ChatCompletionTokenLogprob>;

export const ChatChoiceLogprobs = z.object({
  content: z.array(ChatCompletionTokenLogprob).nullable(),
  refusal: z.array(ChatCompletionTokenLogprob).nullable().optional(),
});
export type ChatChoiceLogprobs = z.infer<typeof ChatChoiceLogprobs>;

export const ChatCompletionMessage = z.object({
  role: z.literal('assistant'),
  content: z.string().nullable(),
  refusal: z.string().nullable().optional(),
  tool_calls: z.array(ToolCall).optional(),
});
export type ChatCompletionMessage = z.infer<typeof ChatCompletionMessage>;

export const ChatCompletionChoice = z.object({
  index: Count,
  message: ChatCompletionMessage,
  logprobs: ChatChoiceLogprobs.nullable(),
  finish_reason: OpenAIFinishReason,
});
export type ChatCompletionChoice = z.infer<typeof ChatCompletionChoice>;

/** Non-streaming chat response. */
export const ChatCompletion = z.object({
  id: z.string(),
  object: z.literal('chat.completion'),
  created: Unix,
  model: z.string(),
  system_fingerprint: z.string().nullable().optional(),
  choices: z.array(ChatCompletionChoice),
  usage: Usage,
});
export type ChatCompletion = z.infer<typeof ChatCompletion>;

export const ChatCompletionDeltaToolCall = z.object({
  index: Count,
  id: z.string().optional(),
  type: z.literal('function').optional(),
  function: z.object({ name: z.string().optional(), arguments: z.string().optional() }).optional(),
});
export type ChatCompletionDeltaToolCall = z.infer<typeof ChatCompletionDeltaToolCall>;

/** Incremental message: first chunk carries `role`, later ones `content`. */
export const ChatCompletionDelta = z.object({
  role: z.literal('assistant').optional(),
  content: z.string().nullable().optional(),
  refusal: z.string().nullable().optional(),
  tool_calls: z.array(ChatCompletionDeltaToolCall).optional(),
});
export type ChatCompletionDelta = z.infer<typeof ChatCompletionDelta>;

export const ChatCompletionChunkChoice = z.object({
  index: Count,
  delta: ChatCompletionDelta,
  logprobs: ChatChoiceLogprobs.nullable().optional(),
  /** null until the choice's last chunk. */
  finish_reason: OpenAIFinishReason.nullable(),
});
export type ChatCompletionChunkChoice = z.infer<typeof ChatCompletionChunkChoice>;

/**
 * One SSE `data:` event of a streaming chat response; the stream ends with
 * `data: [DONE]`. With stream_options.include_usage, every chunk has
 * `usage: null` except a final one with `choices: []` and the totals.
 */
export const ChatCompletionChunk = z.object({
  id: z.string(),
  object: z.literal('chat.completion.chunk'),
  created: Unix,
  model: z.string(),
  system_fingerprint: z.string().nullable().optional(),
  choices: z.array(ChatCompletionChunkChoice),
  usage: Usage.nullable().optional(),
});
export type ChatCompletionChunk = z.infer<typeof ChatCompletionChunk>;

// --- legacy completions ---

/**
 * Completions logprobs (parallel arrays). token_logprobs[0] is null when the
 * prompt is echoed (the first token has no logprob); top_logprobs entries map
 * token text to logprob.
 */
export const CompletionLogprobs = z.object({
  tokens: z.array(z.string()),
  token_logprobs: z.array(z.number().nullable()),
  top_logprobs: z.array(z.record(z.string(), z.number()).nullable()).nullable(),
  /** Character offset of each token in prompt (if echoed) + completion text. */
  text_offset: z.array(Count),
});
export type CompletionLogprobs = z.infer<typeof CompletionLogprobs>;

export const CompletionChoice = z.object({
  index: Count,
  text: z.string(),
  logprobs: CompletionLogprobs.nullable(),
  finish_reason: OpenAIFinishReason,
});
export type CompletionChoice = z.infer<typeof CompletionChoice>;

/** Non-streaming `POST /v1/completions` response. */
export const Completion = z.object({
  id: z.string(),
  object: z.literal('text_completion'),
  created: Unix,
  model: z.string(),
  system_fingerprint: z.string().nullable().optional(),
  choices: z.array(CompletionChoice),
  usage: Usage,
});
export type Completion = z.infer<typeof Completion>;

export const CompletionChunkChoice = CompletionChoice.extend({
  /** null until the choice's last chunk. */
  finish_reason: OpenAIFinishReason.nullable(),
});
export type CompletionChunkChoice = z.infer<typeof CompletionChunkChoice>;

/** Streaming completions event: same `object` as the full response ("text_completion"). */
export const CompletionChunk = Completion.extend({
  choices: z.array(CompletionChunkChoice),
  usage: Usage.nullable().optional(),
});
export type CompletionChunk = z.infer<typeof CompletionChunk>;

/** The last SSE event of every OpenAI stream: `data: [DONE]`. */
export const OPENAI_STREAM_DONE = '[DONE]';

// --- models ---

/** One servable model: the base model, or an adapter id. */
export const Model = z.object({
  id: z.string(),
  object: z.literal('model'),
  created: Unix,
  owned_by: z.string(),
});
export type Model = z.infer<typeof Model>;

/** `GET /v1/models` response. */
export const ModelList = z.object({
  object: z.literal('list'),
  data: z.array(Model),
});
export type ModelList = z.infer<typeof ModelList>;

// --- errors ---

/** OpenAI error `type`s we emit (the SDKs key on the HTTP status, not these). */
export const OPENAI_ERROR_TYPES = [
  'invalid_request_error',
  'authentication_error',
  'permission_error',
  'not_found_error',
  'rate_limit_error',
  'server_error',
] as const;
export type OpenAIErrorType = (typeof OPENAI_ERROR_TYPES)[number];

/** `{error: {message, type, param, code}}`; param/code are null when not applicable. */
export const OpenAIErrorResponse = z.object({
  error: z.object({
    message: z.string(),
    type: z.string(),
    param: z.string().nullable(),
    code: z.string().nullable(),
  }),
});
export type OpenAIErrorResponse = z.infer<typeof OpenAIErrorResponse>;
