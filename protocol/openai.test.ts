// OpenAI schemas against the bodies the `openai` npm client actually puts on
// the wire (captured through its `fetch` option), LoRAX's documented OpenAI
// examples, and invalid inputs with their error bodies. Responses built from
// our schemas are fed back to the SDK to check it consumes them.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import OpenAI from 'openai';
import {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionRequest,
  Completion,
  CompletionChunk,
  CompletionRequest,
  ModelList,
  OPENAI_STREAM_DONE,
  OpenAIErrorResponse,
  chatMaxTokens,
  completionPrompts,
  contentToText,
  formatZodIssue,
  openaiError,
  parseOpenAIRequest,
  protocolErrorMap,
} from './index.ts';

type Schema = Parameters<typeof parseOpenAIRequest>[0];

function ok<S extends Schema>(schema: S, body: unknown) {
  const result = parseOpenAIRequest(schema, body);
  if (!result.success) assert.fail(result.error.error.message);
  return result.data;
}

/** Parse expecting failure; return OpenAI's error object. */
function fail(schema: Schema, body: unknown) {
  const result = parseOpenAIRequest(schema, body);
  assert.equal(result.success, false, `expected ${JSON.stringify(body)} to be rejected`);
  if (result.success) throw new Error('unreachable');
  assert.equal(result.status, 400);
  assert.equal(OpenAIErrorResponse.safeParse(result.error).success, true);
  assert.equal(result.error.error.type, 'invalid_request_error');
  return result.error.error;
}

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

const usage = { prompt_tokens: 12, completion_tokens: 3, total_tokens: 15 };

const chatCompletion: ChatCompletion = {
  id: 'chatcmpl-1',
  object: 'chat.completion',
  created: 1_700_000_000,
  model: 'alignment-handbook/zephyr-7b-dpo-lora',
  system_fingerprint: 'switchboard-0.1.0',
  choices: [
    {
      index: 0,
      message: { role: 'assistant', content: 'Arr, none!' },
      logprobs: {
        content: [
          {
            token: 'Arr',
            logprob: -0.3,
            bytes: [65, 114, 114],
            top_logprobs: [
              { token: 'Arr', logprob: -0.3, bytes: [65, 114, 114] },
              { token: 'Ah', logprob: -1.6, bytes: [65, 104] },
            ],
          },
        ],
      },
      finish_reason: 'stop',
    },
  ],
  usage,
};

const chatChunks: ChatCompletionChunk[] = [
  {
    id: 'chatcmpl-2',
    object: 'chat.completion.chunk',
    created: 1_700_000_000,
    model: 'base',
    choices: [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }],
    usage: null,
  },
  {
    id: 'chatcmpl-2',
    object: 'chat.completion.chunk',
    created: 1_700_000_000,
    model: 'base',
    choices: [{ index: 0, delta: { content: 'Hi' }, logprobs: null, finish_reason: null }],
    usage: null,
  },
  {
    id: 'chatcmpl-2',
    object: 'chat.completion.chunk',
    created: 1_700_000_000,
    model: 'base',
    choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: 'length' }],
    usage: null,
  },
  // stream_options.include_usage: a last chunk with no choices.
  { id: 'chatcmpl-2', object: 'chat.completion.chunk', created: 1_700_000_000, model: 'base', choices: [], usage },
];

const completion: Completion = {
  id: 'cmpl-1',
  object: 'text_completion',
  created: 1_700_000_000,
  model: 'some/adapter',
  choices: [
    {
      index: 0,
      text: 'Hello world',
      // echo + logprobs=1: the first prompt token has no logprob.
      logprobs: {
        tokens: ['Hello', ' world'],
        token_logprobs: [null, -1.25],
        top_logprobs: [null, { ' world': -1.25 }],
        text_offset: [0, 5],
      },
      finish_reason: 'length',
    },
  ],
  usage,
};

const completionChunks: CompletionChunk[] = [
  {
    id: 'cmpl-2',
    object: 'text_completion',
    created: 1_700_000_000,
    model: 'base',
    choices: [{ index: 0, text: 'Hi', logprobs: null, finish_reason: null }],
  },
  {
    id: 'cmpl-2',
    object: 'text_completion',
    created: 1_700_000_000,
    model: 'base',
    choices: [{ index: 0, text: '!', logprobs: null, finish_reason: 'stop' }],
  },
];

function sse(events: unknown[]): string {
  return [...events.map((e) => JSON.stringify(e)), OPENAI_STREAM_DONE].map((d) => `data: ${d}\n\n`).join('');
}

/**
 * An SDK client whose requests are recorded and answered with the given
 * (schema-checked) payload, so we see the exact JSON it sends.
 */
function recordingClient(reply: { json?: unknown; sse?: unknown[] }) {
  const sent: Array<{ url: string; body: unknown }> = [];
  const client = new OpenAI({
    apiKey: 'EMPTY',
    baseURL: 'http://127.0.0.1:8080/v1',
    maxRetries: 0,
    fetch: async (url, init) => {
      sent.push({ url: String(url), body: init?.body ? JSON.parse(String(init.body)) : undefined });
      if (reply.sse) {
        return new Response(sse(reply.sse), { headers: { 'content-type': 'text/event-stream' } });
      }
      return Response.json(reply.json);
    },
  });
  return { client, sent };
}

const pirateMessages = [
  { role: 'system', content: 'You are a friendly chatbot who always responds in the style of a pirate' },
  { role: 'user', content: 'How many helicopters can a human eat in one sitting?' },
] as const;

// ---------------------------------------------------------------------------
// Requests from real clients
// ---------------------------------------------------------------------------

describe('OpenAI requests: bodies the openai npm client sends', () => {
  it('chat.completions.create (LoRAX docs example)', async () => {
    const { client, sent } = recordingClient({ json: ChatCompletion.parse(chatCompletion) });
    const resp = await client.chat.completions.create({
      model: 'alignment-handbook/zephyr-7b-dpo-lora',
      messages: [...pirateMessages],
      max_tokens: 100,
    });
    assert.equal(resp.choices[0]?.message.content, 'Arr, none!');
    assert.equal(sent[0]?.url, 'http://127.0.0.1:8080/v1/chat/completions');
    assert.deepEqual(sent[0]?.body, {
      model: 'alignment-handbook/zephyr-7b-dpo-lora',
      messages: [...pirateMessages],
      max_tokens: 100,
    });
    const req = ok(ChatCompletionRequest, sent[0]?.body);
    assert.equal(req.stream, false);
    assert.deepEqual(req.stop, []);
    assert.equal(chatMaxTokens(req), 100);
    assert.equal(req.messages[0]?.role, 'system');
  });

  it('chat.completions.create with stream and stream_options.include_usage', async () => {
    const { client, sent } = recordingClient({ sse: chatChunks.map((c) => ChatCompletionChunk.parse(c)) });
    const stream = await client.chat.completions.create({
      model: '',
      messages: [{ role: 'user', content: 'Hi' }],
      stream: true,
      stream_options: { include_usage: true },
      temperature: 0,
      max_completion_tokens: 16,
      stop: ['\n\n'],
      seed: 1234,
    });
    let text = '';
    let finalUsage: unknown;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? '';
      if (chunk.usage) finalUsage = chunk.usage;
    }
    assert.equal(text, 'Hi');
    assert.deepEqual(finalUsage, usage);
    assert.deepEqual(sent[0]?.body, {
      model: '',
      messages: [{ role: 'user', content: 'Hi' }],
      stream: true,
      stream_options: { include_usage: true },
      temperature: 0,
      max_completion_tokens: 16,
      stop: ['\n\n'],
      seed: 1234,
    });
    const req = ok(ChatCompletionRequest, sent[0]?.body);
    assert.equal(req.stream, true);
    assert.equal(req.stream_options?.include_usage, true);
    assert.equal(chatMaxTokens(req), 16);
  });

  it('chat.completions.create with text parts, json_schema response_format and logprobs', async () => {
    const { client, sent } = recordingClient({ json: chatCompletion });
    await client.chat.completions.create({
      model: 'some/adapter',
      messages: [
        { role: 'developer', content: [{ type: 'text', text: 'Answer in JSON.' }] },
        { role: 'user', content: [{ type: 'text', text: 'Describe a ' }, { type: 'text', text: 'character.' }] },
      ],
      response_format: {
        type: 'json_schema',
        json_schema: {
          name: 'character',
          strict: true,
          schema: { type: 'object', properties: { name: { type: 'string' } }, required: ['name'] },
        },
      },
      logprobs: true,
      top_logprobs: 2,
      n: 1,
      user: 'user-1',
    });
    const req = ok(ChatCompletionRequest, sent[0]?.body);
    assert.equal(req.response_format?.type, 'json_schema');
    assert.equal(req.logprobs, true);
    assert.equal(req.top_logprobs, 2);
    assert.equal(contentToText(req.messages[1]?.content), 'Describe a character.');
  });

  it('chat.completions.create with tools and a tool round trip', async () => {
    const { client, sent } = recordingClient({ json: chatCompletion });
    await client.chat.completions.create({
      model: 'base',
      messages: [
        { role: 'user', content: 'Weather in Paris?' },
        {
          role: 'assistant',
          content: null,
          tool_calls: [{ id: 'call_0', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }],
        },
        { role: 'tool', tool_call_id: 'call_0', content: '18C, cloudy' },
      ],
      tools: [
        {
          type: 'function',
          function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } },
        },
      ],
      tool_choice: 'auto',
    });
    const req = ok(ChatCompletionRequest, sent[0]?.body);
    assert.equal(req.tools?.[0]?.function.name, 'get_weather');
    assert.equal(req.tool_choice, 'auto');
    assert.equal(req.messages[1]?.role, 'assistant');
  });

  it('completions.create, plain and streaming', async () => {
    const plain = recordingClient({ json: Completion.parse(completion) });
    const resp = await plain.client.completions.create({
      model: 'some/adapter',
      prompt: 'Hello',
      max_tokens: 1,
      echo: true,
      logprobs: 1,
    });
    assert.equal(resp.choices[0]?.logprobs?.token_logprobs?.[1], -1.25);
    assert.equal(plain.sent[0]?.url, 'http://127.0.0.1:8080/v1/completions');
    assert.deepEqual(plain.sent[0]?.body, { model: 'some/adapter', prompt: 'Hello', max_tokens: 1, echo: true, logprobs: 1 });
    const req = ok(CompletionRequest, plain.sent[0]?.body);
    assert.equal(req.echo, true);
    assert.equal(req.logprobs, 1);

    const streaming = recordingClient({ sse: completionChunks.map((c) => CompletionChunk.parse(c)) });
    const stream = await streaming.client.completions.create({
      model: 'base',
      prompt: ['a', 'b'],
      stream: true,
      stream_options: { include_usage: true },
      stop: 'END',
    });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
    assert.equal(text, 'Hi!');
    const sreq = ok(CompletionRequest, streaming.sent[0]?.body);
    assert.deepEqual(sreq.prompt, ['a', 'b']);
    assert.deepEqual(sreq.stop, ['END']);
  });

  it('completions.create with token-id prompts (one, and a batch)', async () => {
    const one = recordingClient({ json: Completion.parse(completion) });
    await one.client.completions.create({ model: 'base', prompt: [1212, 318, 257], max_tokens: 1 });
    const r1 = ok(CompletionRequest, one.sent[0]?.body);
    assert.deepEqual(r1.prompt, [1212, 318, 257]);
    assert.deepEqual(completionPrompts(r1.prompt), [[1212, 318, 257]]);
    const batch = recordingClient({ json: Completion.parse(completion) });
    await batch.client.completions.create({ model: 'base', prompt: [[1212, 318], [257]], max_tokens: 1 });
    const r2 = ok(CompletionRequest, batch.sent[0]?.body);
    assert.deepEqual(completionPrompts(r2.prompt), [[1212, 318], [257]]);
    assert.deepEqual(completionPrompts(ok(CompletionRequest, { model: 'base', prompt: 'x' }).prompt), ['x']);
    assert.deepEqual(completionPrompts(ok(CompletionRequest, { model: 'base', prompt: ['x', 'y'] }).prompt), ['x', 'y']);
  });

  it('models.list consumes our ModelList', async () => {
    const list = ModelList.parse({
      object: 'list',
      data: [
        { id: 'mistralai/Mistral-7B-Instruct-v0.1', object: 'model', created: 1_700_000_000, owned_by: 'switchboard' },
        { id: 'some/adapter', object: 'model', created: 1_700_000_000, owned_by: 'switchboard' },
      ],
    });
    const { client } = recordingClient({ json: list });
    const ids: string[] = [];
    for await (const model of client.models.list()) ids.push(model.id);
    assert.deepEqual(ids, ['mistralai/Mistral-7B-Instruct-v0.1', 'some/adapter']);
  });

  it('surfaces our error body through the SDK', async () => {
    const body = openaiError('temperature: must be <= 2', 'invalid_request_error', 'temperature', 'invalid_value');
    const client = new OpenAI({
      apiKey: 'EMPTY',
      baseURL: 'http://127.0.0.1:8080/v1',
      maxRetries: 0,
      fetch: async () => Response.json(body, { status: 400 }),
    });
    await assert.rejects(
      client.chat.completions.create({ model: '', messages: [{ role: 'user', content: 'x' }], temperature: 3 }),
      (err: unknown) => {
        assert.ok(err instanceof OpenAI.BadRequestError);
        assert.equal(err.param, 'temperature');
        assert.equal(err.code, 'invalid_value');
        assert.equal(err.type, 'invalid_request_error');
        assert.match(err.message, /temperature: must be <= 2/);
        return true;
      },
    );
  });
});

describe('OpenAI requests: other clients and LoRAX extensions', () => {
  it('accepts the LoRAX docs curl body', () => {
    ok(ChatCompletionRequest, {
      model: 'alignment-handbook/zephyr-7b-dpo-lora',
      messages: [...pirateMessages],
      max_tokens: 100,
    });
  });

  it('accepts explicit nulls (LangChain / python SDK style) as unset', () => {
    const req = ok(ChatCompletionRequest, {
      model: '',
      messages: [{ role: 'user', content: 'hi', name: null }],
      temperature: null,
      top_p: null,
      n: null,
      stop: null,
      stream: null,
      stream_options: null,
      max_tokens: null,
      presence_penalty: null,
      frequency_penalty: null,
      logit_bias: null,
      logprobs: null,
      top_logprobs: null,
      seed: null,
      response_format: { type: 'text' },
    });
    assert.equal(req.temperature, undefined);
    assert.equal(req.stream, false);
    assert.equal(req.logprobs, false);
    assert.deepEqual(req.stop, []);
  });

  it('normalises stop to an array', () => {
    const base = { model: '', messages: [{ role: 'user', content: 'x' }] };
    assert.deepEqual(ok(ChatCompletionRequest, { ...base, stop: 'User:' }).stop, ['User:']);
    assert.deepEqual(ok(ChatCompletionRequest, { ...base, stop: ['a', 'b', 'c', 'd'] }).stop, ['a', 'b', 'c', 'd']);
  });

  it('accepts LoRAX extras (router/src/lib.rs ChatCompletionRequest)', () => {
    const req = ok(ChatCompletionRequest, {
      model: 'some/adapter',
      messages: [{ role: 'user', content: 'x' }],
      repetition_penalty: 1.1,
      top_k: 40,
      ignore_eos_token: true,
      adapter_source: 'local',
      api_token: 'hf_xxx',
      response_format: { type: 'json_object', schema: { type: 'object' } },
    });
    assert.equal(req.top_k, 40);
    assert.equal(req.adapter_source, 'local');
    assert.deepEqual(req.response_format, { type: 'json_object', schema: { type: 'object' } });
  });

  it('strips unknown fields instead of failing', () => {
    const req = ok(ChatCompletionRequest, {
      model: 'x',
      messages: [{ role: 'user', content: 'x' }],
      store: true,
      metadata: { a: 'b' },
      reasoning_effort: 'low',
    });
    assert.equal('store' in req, false);
  });

  it('allows max_tokens 0 with echo (prompt scoring, e.g. lm-eval-harness)', () => {
    ok(CompletionRequest, { model: 'x', prompt: 'The sky is blue', max_tokens: 0, echo: true, logprobs: 0 });
  });
});

describe('OpenAI requests: validation errors', () => {
  const chat = (extra: Record<string, unknown>) => ({ model: 'x', messages: [{ role: 'user', content: 'hi' }], ...extra });
  const completions = (extra: Record<string, unknown>) => ({ model: 'x', prompt: 'hi', ...extra });

  const cases: Array<[string, Schema, unknown, { message: string; param: string | null; code: string | null }]> = [
    ['negative temperature', ChatCompletionRequest, chat({ temperature: -1 }), { message: 'temperature: must be >= 0', param: 'temperature', code: 'invalid_value' }],
    ['temperature > 2', ChatCompletionRequest, chat({ temperature: 2.5 }), { message: 'temperature: must be <= 2', param: 'temperature', code: 'invalid_value' }],
    ['top_p > 1', ChatCompletionRequest, chat({ top_p: 1.1 }), { message: 'top_p: must be <= 1', param: 'top_p', code: 'invalid_value' }],
    [
      'five stop sequences',
      ChatCompletionRequest,
      chat({ stop: ['a', 'b', 'c', 'd', 'e'] }),
      { message: 'stop: must contain at most 4 items, got 5', param: 'stop', code: 'invalid_value' },
    ],
    ['stop of the wrong type', ChatCompletionRequest, chat({ stop: 7 }), { message: 'stop: must be a string or an array, got a number', param: 'stop', code: 'invalid_type' }],
    ['n = 0', ChatCompletionRequest, chat({ n: 0 }), { message: 'n: must be >= 1', param: 'n', code: 'invalid_value' }],
    ['temperature as a string', ChatCompletionRequest, chat({ temperature: '0.7' }), { message: 'temperature: must be a number, got a string', param: 'temperature', code: 'invalid_type' }],
    ['missing model', ChatCompletionRequest, { messages: [{ role: 'user', content: 'hi' }] }, { message: 'model: is required', param: 'model', code: 'missing_required_parameter' }],
    ['missing messages', ChatCompletionRequest, { model: 'x' }, { message: 'messages: is required', param: 'messages', code: 'missing_required_parameter' }],
    ['empty messages', ChatCompletionRequest, chat({ messages: [] }), { message: 'messages: must contain at least one message', param: 'messages', code: 'invalid_value' }],
    [
      'unknown role',
      ChatCompletionRequest,
      chat({ messages: [{ role: 'function', content: 'x', name: 'f' }] }),
      {
        message: 'messages[0].role: must be one of "system", "developer", "user", "assistant", "tool", got "function"',
        param: 'messages[0].role',
        code: 'invalid_value',
      },
    ],
    [
      'missing role',
      ChatCompletionRequest,
      chat({ messages: [{ content: 'x' }] }),
      {
        message: 'messages[0].role: is required; must be one of "system", "developer", "user", "assistant", "tool"',
        param: 'messages[0].role',
        code: 'missing_required_parameter',
      },
    ],
    [
      'content of the wrong type',
      ChatCompletionRequest,
      chat({ messages: [{ role: 'user', content: 42 }] }),
      { message: 'messages[0].content: must be a string or an array, got a number', param: 'messages[0].content', code: 'invalid_type' },
    ],
    [
      'image content part',
      ChatCompletionRequest,
      chat({
        messages: [
          { role: 'user', content: [{ type: 'text', text: 'What is this?' }, { type: 'image_url', image_url: { url: 'https://x/y.png' } }] },
        ],
      }),
      {
        message: 'messages[0].content[1].type: only "text" content parts are supported, got "image_url"',
        param: 'messages[0].content[1].type',
        code: 'invalid_value',
      },
    ],
    [
      'tool message without tool_call_id',
      ChatCompletionRequest,
      chat({ messages: [{ role: 'tool', content: 'x' }] }),
      { message: 'messages[0].tool_call_id: is required', param: 'messages[0].tool_call_id', code: 'missing_required_parameter' },
    ],
    [
      'top_logprobs without logprobs',
      ChatCompletionRequest,
      chat({ top_logprobs: 3 }),
      { message: 'top_logprobs: requires `logprobs` to be true', param: 'top_logprobs', code: 'invalid_value' },
    ],
    ['top_logprobs > 20', ChatCompletionRequest, chat({ logprobs: true, top_logprobs: 21 }), { message: 'top_logprobs: must be <= 20', param: 'top_logprobs', code: 'invalid_value' }],
    ['logprobs as an integer in chat', ChatCompletionRequest, chat({ logprobs: 5 }), { message: 'logprobs: must be a boolean, got a number', param: 'logprobs', code: 'invalid_type' }],
    [
      'logit_bias out of range',
      ChatCompletionRequest,
      chat({ logit_bias: { '50256': -101 } }),
      { message: 'logit_bias.50256: must be >= -100', param: 'logit_bias.50256', code: 'invalid_value' },
    ],
    [
      'logit_bias non-numeric key',
      ChatCompletionRequest,
      chat({ logit_bias: { hello: 1 } }),
      { message: 'logit_bias.hello: keys must be token ids (non-negative integers)', param: 'logit_bias.hello', code: 'invalid_value' },
    ],
    [
      'unknown response_format type',
      ChatCompletionRequest,
      chat({ response_format: { type: 'xml' } }),
      {
        message: 'response_format.type: must be one of "text", "json_object", "json_schema", got "xml"',
        param: 'response_format.type',
        code: 'invalid_value',
      },
    ],
    [
      'json_schema without a name',
      ChatCompletionRequest,
      chat({ response_format: { type: 'json_schema', json_schema: { schema: {} } } }),
      { message: 'response_format.json_schema.name: is required', param: 'response_format.json_schema.name', code: 'missing_required_parameter' },
    ],
    [
      'json_schema with a bad name',
      ChatCompletionRequest,
      chat({ response_format: { type: 'json_schema', json_schema: { name: 'my schema', schema: {} } } }),
      {
        message: 'response_format.json_schema.name: must be 1-64 characters of a-z, A-Z, 0-9, "_" or "-"',
        param: 'response_format.json_schema.name',
        code: 'invalid_value',
      },
    ],
    ['unsupported adapter_source', ChatCompletionRequest, chat({ adapter_source: 'ftp' }), {
      message: 'adapter_source: must be one of "hub", "local", "s3", "pbase", got "ftp"',
      param: 'adapter_source',
      code: 'invalid_value',
    }],
    ['top_k = 0', ChatCompletionRequest, chat({ top_k: 0 }), { message: 'top_k: must be strictly positive', param: 'top_k', code: 'invalid_value' }],
    ['body not an object', ChatCompletionRequest, [], { message: 'must be an object, got an array', param: null, code: 'invalid_type' }],
    // completions
    ['missing prompt', CompletionRequest, { model: 'x' }, { message: 'prompt: is required', param: 'prompt', code: 'missing_required_parameter' }],
    [
      'mixed strings and token ids',
      CompletionRequest,
      completions({ prompt: ['a', 318] }),
      { message: 'prompt: must be a string, or a non-empty array of strings, of token ids (integers >= 0) or of token-id arrays', param: 'prompt', code: 'invalid_value' },
    ],
    ['negative token id', CompletionRequest, completions({ prompt: [5, -1] }), { message: 'prompt[1]: must be >= 0', param: 'prompt[1]', code: 'invalid_value' }],
    ['empty token-id list in a batch', CompletionRequest, completions({ prompt: [[1], []] }), { message: 'prompt[1]: must contain at least 1 item', param: 'prompt[1]', code: 'invalid_value' }],
    ['empty prompt array', CompletionRequest, completions({ prompt: [] }), { message: 'prompt: must contain at least 1 item', param: 'prompt', code: 'invalid_value' }],
    [
      'non-empty suffix',
      CompletionRequest,
      completions({ suffix: '\n}' }),
      { message: 'suffix: is not supported (insertion/fill-in-the-middle is not available)', param: 'suffix', code: 'invalid_value' },
    ],
    ['logprobs > 5', CompletionRequest, completions({ logprobs: 6 }), { message: 'logprobs: must be <= 5', param: 'logprobs', code: 'invalid_value' }],
    ['logprobs as boolean in completions', CompletionRequest, completions({ logprobs: true }), {
      message: 'logprobs: must be an integer, got a boolean',
      param: 'logprobs',
      code: 'invalid_type',
    }],
    ['best_of < n', CompletionRequest, completions({ n: 3, best_of: 2 }), { message: 'best_of: must be greater than or equal to `n`', param: 'best_of', code: 'invalid_value' }],
    ['max_tokens 0 without echo', CompletionRequest, completions({ max_tokens: 0 }), { message: 'max_tokens: must be >= 1 unless `echo` is true', param: 'max_tokens', code: 'invalid_value' }],
    ['five stop sequences (completions)', CompletionRequest, completions({ stop: ['1', '2', '3', '4', '5'] }), {
      message: 'stop: must contain at most 4 items, got 5',
      param: 'stop',
      code: 'invalid_value',
    }],
  ];

  for (const [name, schema, body, expected] of cases) {
    it(`rejects ${name}`, () => {
      const error = fail(schema, body);
      assert.deepEqual({ message: error.message, param: error.param, code: error.code }, expected);
    });
  }

  it('reports all problems, the first one as param', () => {
    const error = fail(ChatCompletionRequest, chat({ temperature: 5, top_p: -1, n: 1.5 }));
    assert.equal(error.message, 'temperature: must be <= 2; top_p: must be >= 0; n: must be an integer, got 1.5');
    assert.equal(error.param, 'temperature');
  });

  it('accepts an empty suffix (what some SDK wrappers send by default)', () => {
    ok(CompletionRequest, completions({ suffix: '' }));
    ok(CompletionRequest, completions({ suffix: null }));
  });
});

describe('OpenAI responses', () => {
  it('parses our own fixtures (they are what the gateway emits)', () => {
    ChatCompletion.parse(chatCompletion);
    for (const chunk of chatChunks) ChatCompletionChunk.parse(chunk);
    Completion.parse(completion);
    for (const chunk of completionChunks) CompletionChunk.parse(chunk);
  });

  it('rejects LoRAX\'s "text_completion" label on chat responses', () => {
    // LoRAX labels chat responses "text_completion"; we emit OpenAI's "chat.completion".
    assert.equal(ChatCompletion.safeParse({ ...chatCompletion, object: 'text_completion' }).success, false);
  });

  it('rejects an unknown finish_reason and a bad usage', () => {
    const badChoice = { ...chatCompletion.choices[0], finish_reason: 'eos_token' };
    const result = ChatCompletion.safeParse({ ...chatCompletion, choices: [badChoice] }, { error: protocolErrorMap });
    assert.equal(result.success, false);
    if (!result.success) {
      assert.equal(
        formatZodIssue(result.error.issues[0]!),
        'choices[0].finish_reason: must be one of "stop", "length", "tool_calls", "content_filter", got "eos_token"',
      );
    }
    assert.equal(ChatCompletion.safeParse({ ...chatCompletion, usage: { prompt_tokens: -1, completion_tokens: 0, total_tokens: 0 } }).success, false);
  });

  it('builds and validates the error body', () => {
    const body = openaiError('The model `x` does not exist', 'not_found_error', 'model', 'model_not_found');
    assert.deepEqual(OpenAIErrorResponse.parse(body), {
      error: { message: 'The model `x` does not exist', type: 'not_found_error', param: 'model', code: 'model_not_found' },
    });
    assert.deepEqual(openaiError('boom'), { error: { message: 'boom', type: 'invalid_request_error', param: null, code: null } });
  });
});
