// The OpenAI endpoints' token budget: what the gateway reserves against a tenant's tokens-per-minute
// before forwarding, for text prompts (estimated from bytes) and token-id prompts (counted exactly).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseCompletion } from './openai.ts';

const info = { modelId: 'm', modelName: 'm', maxTotalTokens: 1000, maxInputLength: 900 };
const opts = { promptBytesPerToken: 1 };

function budget(body: Record<string, unknown>) {
  const out = parseCompletion({ model: 'm', ...body });
  assert.ok(out.ok, JSON.stringify(out));
  return out.req.budget(info, opts);
}

describe('completions budget', () => {
  it('counts token-id prompts exactly, one and batched', () => {
    assert.deepEqual(budget({ prompt: [5, 6, 7], max_tokens: 10 }), { reserve: 13, promptGuess: 3 });
    assert.deepEqual(budget({ prompt: [[5, 6, 7], [8]], max_tokens: 10, n: 2 }), { reserve: (13 + 11) * 2, promptGuess: 4 });
  });
  it('bounds text prompts by their bytes (+4 for special tokens), capped by the backend limits', () => {
    assert.deepEqual(budget({ prompt: 'abcd', max_tokens: 10 }), { reserve: 18, promptGuess: 1 });
    assert.equal(budget({ prompt: 'x'.repeat(5000), max_tokens: 10 }).reserve, 910);
    assert.equal(budget({ prompt: Array.from({ length: 2000 }, () => 1), max_tokens: 500 }).reserve, 1000);
  });
});
