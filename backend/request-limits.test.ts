// request-limits.ts refuses a chat request with more messages than the input bound in tokens, on
// the claim that every chat template we ship renders each message to at least one token, empty
// content included. This renders every fixture's and the demo model's template to check the claim
// (with a system turn, alternating turns, empty contents; no generation prompt to help).
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { TextTokenizer, type ChatTurn } from './text/tokenizer.ts';
import { requestRefusal } from './request-limits.ts';

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
  const limits = { maxInputLength: 4, maxConcurrentRequests: 8 };
  const chat = (n: number) => ({ model: 'm', messages: turns(n, false), stream: false });
  assert.equal(requestRefusal('openai.chat', chat(4), limits), null);
  assert.deepEqual(requestRefusal('openai.chat', chat(5), limits), { message: 'Input validation error: `inputs` must have less than 4 tokens. Given: at least 5', status: 422 });
  const completion = (prompt: unknown, n = 1) => ({ model: 'm', prompt, n, echo: false, stream: false, stop: [] });
  assert.equal(requestRefusal('openai.completion', completion([1, 2, 3, 4]), limits), null);
  assert.equal(requestRefusal('openai.completion', completion([1, 2, 3, 4, 5]), limits)?.message, 'Input validation error: `inputs` must have less than 4 tokens. Given: 5');
  assert.equal(requestRefusal('openai.completion', completion(['a', 'b'], 4), limits), null);
  assert.equal(requestRefusal('openai.completion', completion(['a', 'b', 'c'], 3), limits)?.param, 'prompt');
});
