// The schema registry answers exactly what the named schema's own parse call answers (the
// backend's parser thread and the gateway's JSON worker validate by name, the loop by schema).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CompatGenerateRequest, GenerateRequest, GenerateStreamRequest, TokenizeRequest } from './lorax.ts';
import { ChatCompletionRequest, CompletionRequest } from './openai.ts';
import { parseLoraxRequest, parseOpenAIRequest } from './parse-request.ts';
import { isRequestSchemaName, parseNamedRequest, REQUEST_SCHEMAS } from './request-schemas.ts';

test('parseNamedRequest is the named schema with its API\'s parse call', () => {
  const bodies: unknown[] = [
    { inputs: 'hi', parameters: { max_new_tokens: 2 } },
    { inputs: 'hi', parameters: { max_new_tokens: 0, decoder_input_details: true } },
    { inputs: 'hi', stream: true },
    { model: 'm', prompt: [1, 2, 3], max_tokens: 2 },
    { model: 'm', prompt: 'x', logit_bias: Object.fromEntries(Array.from({ length: 301 }, (_, i) => [String(i), 1])) },
    { model: 'm', messages: [{ role: 'user', content: 'hi' }], n: 2 },
    { model: 'm', messages: [] },
    { inputs: 7 },
    null,
  ];
  const direct = {
    'lorax.generate': (b: unknown) => parseLoraxRequest(GenerateRequest, b),
    'lorax.generate_stream': (b: unknown) => parseLoraxRequest(GenerateStreamRequest, b),
    'lorax.compat': (b: unknown) => parseLoraxRequest(CompatGenerateRequest, b),
    'lorax.tokenize': (b: unknown) => parseLoraxRequest(TokenizeRequest, b),
    'openai.chat': (b: unknown) => parseOpenAIRequest(ChatCompletionRequest, b),
    'openai.completion': (b: unknown) => parseOpenAIRequest(CompletionRequest, b),
  } as const;
  assert.deepEqual(Object.keys(direct).sort(), Object.keys(REQUEST_SCHEMAS).sort());
  let failures = 0;
  for (const name of Object.keys(direct) as (keyof typeof direct)[]) {
    for (const b of bodies) {
      const r = parseNamedRequest(name, b);
      assert.deepEqual(r, direct[name](b), `${name} ${JSON.stringify(b)?.slice(0, 60)}`);
      if (!r.success) failures++;
    }
  }
  assert.ok(failures > 0 && failures < bodies.length * 6, 'some bodies pass and some fail');
  assert.ok(isRequestSchemaName('openai.chat'));
  assert.ok(!isRequestSchemaName('toString'));
  assert.ok(!isRequestSchemaName(7));
});
