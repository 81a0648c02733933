// request-limits.ts refuses a chat request with more messages than the input bound in tokens, on
// the claim that every chat template we ship renders each message to at least one token, empty
// content included. This renders every fixture's and the demo model's template to check the claim
// (with a system turn, alternating turns, empty contents; no generation prompt to help).
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { TextTokenizer, type ChatTurn } from './text/tokenizer.ts';
import { requestRefusal, tokensAtLeast } from './request-limits.ts';
import { maxCharsPerToken } from './text/tokenize-pool.ts';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const modelDirs = [
  ...readdirSync(path.join(root, 'test/fixtures/models')).map((d) => path.join(root, 'test/fixtures/models', d)),
  path.join(root, 'demo/tiny-story-llama'),
].filter((d) => existsSync(path.join(d, 'tokenizer.json')));

const turns = (n: number, system: boolean): ChatTurn[] =>
  Array.from({ length: n }, (_, i) => ({ role: system && i === 0 ? 'system' : (i - (system ? 1 : 0)) % 2 === 0 ? 'user' : 'assistant', content: '' }));

test('every shipped chat template renders each message to at least one token', async () => {
  let checked = 0;
  for (const dir of modelDirs) {
    const t = await TextTokenizer.load(dir);
    if (!t.hasChatTemplate) continue;
    for (const convo of [turns(1, false), turns(2, true), turns(9, false), turns(12, true)]) {
      const ids = t.encodeChat(convo, false);
      assert.ok(ids.length >= convo.length, `${path.basename(dir)}: ${convo.length} messages rendered to ${ids.length} tokens`);
    }
    checked++;
  }
  assert.ok(checked >= 5, `templates checked: ${checked}`);
});

test('the message bound refuses past the input bound, not at it', () => {
  const limits = { maxInputLength: 4, maxConcurrentRequests: 8, maxCharsPerToken: null };
  const chat = (n: number) => ({ model: 'm', messages: turns(n, false), stream: false });
  assert.equal(requestRefusal('openai.chat', chat(4), limits), null);
  assert.deepEqual(requestRefusal('openai.chat', chat(5), limits), { message: 'Input validation error: `inputs` must have less than 4 tokens. Given: at least 5', status: 422 });
  const completion = (prompt: unknown, n = 1) => ({ model: 'm', prompt, n, echo: false, stream: false, stop: [] });
  assert.equal(requestRefusal('openai.completion', completion([1, 2, 3, 4]), limits), null);
  assert.equal(requestRefusal('openai.completion', completion([1, 2, 3, 4, 5]), limits)?.message, 'Input validation error: `inputs` must have less than 4 tokens. Given: 5');
  assert.equal(requestRefusal('openai.completion', completion(['a', 'b'], 4), limits), null);
  assert.equal(requestRefusal('openai.completion', completion(['a', 'b', 'c'], 3), limits)?.param, 'prompt');
});

test("every shipped chat template keeps the users' words: their length bounds the rendered tokens from below", async () => {
  const words = ['  the ', 'quick\n', 'Brown', ' fox ', '日本', '😀', '42', '\t'];
  let checked = 0;
  for (const dir of modelDirs) {
    const t = await TextTokenizer.load(dir);
    const L = maxCharsPerToken(JSON.parse(readFileSync(path.join(dir, 'tokenizer.json'), 'utf-8')) as Record<string, unknown>);
    if (!t.hasChatTemplate || L === null) continue;
    for (let n = 1; n <= 6; n++) {
      const convo: ChatTurn[] = Array.from({ length: n }, (_, i) => ({
        role: i % 2 === 0 ? 'user' : 'assistant',
        content: Array.from({ length: 40 * (i + 1) }, (_, k) => words[(k * 7 + i) % words.length]).join(''),
      }));
      const chars = convo.filter((m) => m.role === 'user').reduce((a, m) => a + m.content.trim().length, 0);
      const ids = t.encodeChat(convo, false);
      assert.ok(ids.length >= tokensAtLeast(chars, L), `${path.basename(dir)}: ${ids.length} tokens < ${chars} user chars / ${L}`);
    }
    checked++;
  }
  assert.ok(checked >= 5, `templates checked: ${checked}`);
});

test("the length bound: users' words, a /tokenize input and each prompt of a list, refused by length alone", () => {
  const limits = { maxInputLength: 10, maxConcurrentRequests: 8, maxCharsPerToken: 4 };
  const message = 'Input validation error: `inputs` must have less than 10 tokens. Given: at least 11';
  const chat = (role: string, chars: number) => ({ model: 'm', messages: [{ role, content: ` ${'x'.repeat(chars)} ` }], stream: false });
  assert.equal(requestRefusal('openai.chat', chat('user', 40), limits), null);
  assert.equal(requestRefusal('openai.chat', chat('user', 41), limits)?.message, message);
  assert.equal(requestRefusal('openai.chat', chat('assistant', 400), limits), null, 'templates may rewrite assistant turns');
  assert.equal(requestRefusal('lorax.tokenize', { inputs: 'x'.repeat(41) }, limits)?.message, message);
  assert.equal(requestRefusal('lorax.tokenize', { inputs: 'x'.repeat(40) }, limits), null);
  const completion = (prompt: unknown) => ({ model: 'm', prompt, n: 1, echo: false, stream: false, stop: [] });
  assert.equal(requestRefusal('openai.completion', completion(['short', 'x'.repeat(41)]), limits)?.message, message);
  assert.equal(requestRefusal('openai.completion', completion(['short', 'x'.repeat(40)]), limits), null);
  assert.equal(requestRefusal('openai.chat', chat('user', 4000), { ...limits, maxCharsPerToken: null }), null, 'no bound without maxCharsPerToken');
});
