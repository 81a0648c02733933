// The backend driven by the official `openai` npm client: chat (plain and streaming),
// completions, models, and errors as the SDK's typed exceptions.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import { startBackend, type TestServer } from '../helpers/backend.ts';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures');
const ref = JSON.parse(readFileSync(join(FIXTURES, 'reference', 'llama.json'), 'utf-8')) as {
  prompts: { text: string; ids: number[] }[];
  chat: { messages: { role: 'system' | 'user' | 'assistant'; content: string }[]; ids: number[] }[];
};

describe('OpenAI-compatible API through the official client', () => {
  let srv: TestServer;
  let client: OpenAI;
  const adapter = join(FIXTURES, 'adapters', 'llama', 'r16-all');
  before(async () => {
    srv = await startBackend(['--adapter-source', 'local', '--allow-absolute-adapter-paths']);
    client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  });
  after(async () => {
    await srv.close();
  });

  it('chat completion: the chat template, usage and finish_reason', async () => {
    const messages = ref.chat[0]!.messages;
    const r = await client.chat.completions.create({ model: 'llama', messages, max_tokens: 8, temperature: 0 });
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.choices.length, 1);
    assert.equal(r.choices[0]!.message.role, 'assistant');
    assert.equal(typeof r.choices[0]!.message.content, 'string');
    assert.equal(r.usage!.prompt_tokens, ref.chat[0]!.ids.length, 'prompt tokens are the rendered chat template');
    assert.ok(r.usage!.completion_tokens >= 1 && r.usage!.completion_tokens <= 8);
    assert.ok(['stop', 'length'].includes(r.choices[0]!.finish_reason));
  });

  it('streams the same text as the plain answer, with usage when asked', async () => {
    const body = { model: adapter, messages: [{ role: 'user' as const, content: 'Tell me about the sea.' }], max_tokens: 12, temperature: 0 };
    const plain = await client.chat.completions.create(body);
    const stream = await client.chat.completions.create({ ...body, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      for (const ch of chunk.choices) {
        text += ch.delta.content ?? '';
        finish = ch.finish_reason ?? finish;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(text, plain.choices[0]!.message.content);
    assert.equal(finish, plain.choices[0]!.finish_reason);
    assert.deepEqual(usage, plain.usage);
  });

  it('n choices and logprobs with top_logprobs', async () => {
    const r = await client.chat.completions.create({
      model: 'llama',
      messages: [{ role: 'user', content: 'Hi' }],
      max_tokens: 4,
      n: 3,
      seed: 7,
      temperature: 1.2,
      logprobs: true,
      top_logprobs: 2,
    });
    assert.equal(r.choices.length, 3);
    for (const ch of r.choices) {
      const lp = ch.logprobs!.content!;
      assert.ok(lp.length >= 1);
      for (const t of lp) {
        assert.ok(t.logprob <= 0);
        assert.equal(t.top_logprobs.length, 2);
      }
    }
  });

  it('completions: text, echo, logprobs and multiple prompts', async () => {
    const r = await client.completions.create({ model: 'llama', prompt: ref.prompts[0]!.text, max_tokens: 5, temperature: 0, logprobs: 2 });
    assert.equal(r.object, 'text_completion');
    const lp = r.choices[0]!.logprobs!;
    assert.equal(lp.tokens!.length, lp.token_logprobs!.length);
    assert.equal(lp.top_logprobs!.length, lp.tokens!.length);
    const echo = await client.completions.create({ model: 'llama', prompt: 'Hello world', max_tokens: 3, temperature: 0, echo: true });
    assert.ok(echo.choices[0]!.text.startsWith('Hello world'));
    const multi = await client.completions.create({ model: 'llama', prompt: ['One', 'Two'], max_tokens: 2, temperature: 0 });
    assert.equal(multi.choices.length, 2);
    assert.deepEqual(multi.choices.map((c) => c.index), [0, 1]);
    const stream = await client.completions.create({ model: 'llama', prompt: ref.prompts[0]!.text, max_tokens: 5, temperature: 0, stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
    const plain = await client.completions.create({ model: 'llama', prompt: ref.prompts[0]!.text, max_tokens: 5, temperature: 0 });
    assert.equal(text, plain.choices[0]!.text);
  });

  it('completions from token-id prompts: the same answer as the text they encode, echo decodes them', async () => {
    // transformers' ids for the prompt text (BOS included, as the server's own encoding adds it).
    const { text, ids } = ref.prompts[0]!;
    const fromText = await client.completions.create({ model: 'llama', prompt: text, max_tokens: 6, temperature: 0 });
    const fromIds = await client.completions.create({ model: 'llama', prompt: ids, max_tokens: 6, temperature: 0 });
    assert.equal(fromIds.choices[0]!.text, fromText.choices[0]!.text);
    assert.equal(fromIds.usage!.prompt_tokens, ids.length);
    assert.equal(fromText.usage!.prompt_tokens, ids.length);
    const echo = await client.completions.create({ model: 'llama', prompt: ids.slice(1), max_tokens: 2, temperature: 0, echo: true });
    assert.ok(echo.choices[0]!.text.startsWith(text), `echo of the ids without BOS: ${JSON.stringify(echo.choices[0]!.text)}`);
    const batch = await client.completions.create({ model: 'llama', prompt: [ids, ids.slice(0, 3)], max_tokens: 2, temperature: 0 });
    assert.equal(batch.choices.length, 2);
    assert.equal(batch.choices[0]!.text, fromText.choices[0]!.text.slice(0, batch.choices[0]!.text.length));
    await assert.rejects(
      client.completions.create({ model: 'llama', prompt: [1, 10_000_000], max_tokens: 1 }),
      (e: unknown) => e instanceof OpenAI.APIError && e.status !== undefined && e.status >= 400 && e.status < 500 && /outside the vocabulary/.test(e.message),
    );
  });

  it('lists the base model and the adapters in use', async () => {
    await client.chat.completions.create({ model: adapter, messages: [{ role: 'user', content: 'x' }], max_tokens: 1 });
    const models = await client.models.list();
    const ids = models.data.map((m) => m.id);
    assert.ok(ids.includes('llama'));
    assert.ok(ids.includes(adapter));
  });

  it('raises the SDK\'s typed errors for bad requests', async () => {
    await assert.rejects(client.chat.completions.create({ model: '/no/such/adapter', messages: [{ role: 'user', content: 'x' }] }), OpenAI.NotFoundError);
    await assert.rejects(
      client.chat.completions.create({ model: 'llama', messages: [{ role: 'user', content: 'x' }], temperature: 5 }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && /temperature/.test(e.message),
    );
    await assert.rejects(client.chat.completions.create({ model: 'llama', messages: [] }), OpenAI.BadRequestError);
    await assert.rejects(
      client.chat.completions.create({ model: 'llama', messages: [{ role: 'user', content: 'x' }], response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'string', pattern: '(a)\\1' } } } }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && /"pattern"/.test(e.message),
    );
    await assert.rejects(client.completions.create({ model: 'llama', prompt: 'x', max_tokens: 100000 }), OpenAI.BadRequestError);
    // More prompts x choices than the server ever runs at once (default 128): a 400 naming the
    // limit, not a 429 that no retry could fix.
    await assert.rejects(
      client.completions.create({ model: 'llama', prompt: Array.from({ length: 65 }, () => 'ab'), n: 2, max_tokens: 1 }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && /max-concurrent-requests 128/.test(e.message),
    );
    const batch = await client.completions.create({ model: 'llama', prompt: Array.from({ length: 64 }, () => 'ab'), n: 2, max_tokens: 1 });
    assert.equal(batch.choices.length, 128);
  });
});
