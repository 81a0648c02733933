// LoRAX request/response schemas against the bodies real clients send
// (LoRAX README curl examples, lorax-client's pydantic payload) and against
// LoRAX's validation rules (router/src/validation.rs).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  CompatGenerateRequest,
  CompatGenerateResponse,
  ErrorResponse,
  GenerateRequest,
  GenerateResponse,
  GenerateStreamRequest,
  LORAX_DEFAULT_LIMITS,
  StreamResponse,
  Token,
  checkGenerateLimits,
  defaultGenerateParameters,
  isSampling,
  isServedAdapterSource,
  loraxError,
  loraxValidationError,
  parseLoraxRequest,
} from './index.ts';

/** Parse and return the data, failing the test with LoRAX's error text otherwise. */
function ok<S extends Parameters<typeof parseLoraxRequest>[0]>(schema: S, body: unknown) {
  const result = parseLoraxRequest(schema, body);
  if (!result.success) assert.fail(result.error.error);
  return result.data;
}

/** Parse expecting failure; return LoRAX's error body. */
function fail(schema: Parameters<typeof parseLoraxRequest>[0], body: unknown) {
  const result = parseLoraxRequest(schema, body);
  assert.equal(result.success, false, `expected ${JSON.stringify(body)} to be rejected`);
  if (result.success) throw new Error('unreachable');
  assert.equal(result.status, 422);
  assert.equal(result.error.error_type, 'validation');
  assert.ok(result.error.error.startsWith('Input validation error: '), result.error.error);
  return result.error.error.slice('Input validation error: '.length);
}

const withParams = (parameters: Record<string, unknown>) => ({ inputs: 'Hello', parameters });

// The lorax-client (clients/python/lorax) payload: Request(...).dict(by_alias=True),
// every Parameters field present, unset ones as null.
function pythonClientBody(overrides: Record<string, unknown> = {}, stream = false) {
  return {
    inputs: '[INST] What is 2 + 2? [/INST]',
    parameters: {
      adapter_id: 'some/adapter',
      adapter_source: null,
      merged_adapters: null,
      api_token: null,
      do_sample: false,
      max_new_tokens: 64,
      ignore_eos_token: false,
      repetition_penalty: null,
      return_full_text: false,
      stop: [],
      seed: null,
      temperature: null,
      top_k: null,
      top_p: null,
      truncate: null,
      typical_p: null,
      best_of: null,
      watermark: false,
      details: true,
      decoder_input_details: false,
      return_k_alternatives: null,
      response_format: null,
      ...overrides,
    },
    stream,
  };
}

describe('LoRAX requests: real client bodies', () => {
  it('accepts the README curl example for the base model', () => {
    const req = ok(GenerateRequest, {
      inputs:
        '[INST] Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May? [/INST]',
      parameters: { max_new_tokens: 64 },
    });
    assert.equal(req.parameters.max_new_tokens, 64);
    assert.equal(req.parameters.adapter_id, undefined);
    // serde defaults
    assert.equal(req.parameters.do_sample, false);
    assert.equal(req.parameters.details, false);
    assert.equal(req.parameters.decoder_input_details, false);
    assert.deepEqual(req.parameters.stop, []);
  });

  it('accepts the README curl example with an adapter', () => {
    const req = ok(GenerateRequest, {
      inputs: '[INST] Natalia sold clips to 48 of her friends in April... [/INST]',
      parameters: {
        max_new_tokens: 64,
        adapter_id: 'vineetsharma/qlora-adapter-Mistral-7B-Instruct-v0.1-gsm8k',
      },
    });
    assert.equal(req.parameters.adapter_id, 'vineetsharma/qlora-adapter-Mistral-7B-Instruct-v0.1-gsm8k');
  });

  it('accepts lorax-client generate() payloads on the compat route, nulls read as unset', () => {
    const req = ok(CompatGenerateRequest, pythonClientBody());
    assert.equal(req.stream, false);
    assert.equal(req.parameters.adapter_id, 'some/adapter');
    assert.equal(req.parameters.temperature, undefined);
    assert.equal(req.parameters.seed, undefined);
    assert.equal(req.parameters.merged_adapters, undefined);
    assert.equal(req.parameters.details, true);
    assert.equal(isSampling(req.parameters), false);
  });

  it('accepts lorax-client generate_stream() payloads', () => {
    const req = ok(CompatGenerateRequest, pythonClientBody({ temperature: 0.7, stop: ['</s>'] }, true));
    assert.equal(req.stream, true);
    assert.deepEqual(req.parameters.stop, ['</s>']);
  });

  it('accepts merged_adapters as lorax-client sends them (docs/guides/merging_adapters.md)', () => {
    const req = ok(
      GenerateRequest,
      pythonClientBody({
        adapter_id: null,
        merged_adapters: {
          ids: ['smangrul/tinyllama_lora_norobots', 'smangrul/tinyllama_lora_sql', 'smangrul/tinyllama_lora_adcopy'],
          weights: [2.0, 0.3, 0.7],
          merge_strategy: 'ties',
          density: 0.2,
          majority_sign_method: 'total',
        },
      }),
    );
    assert.deepEqual(req.parameters.merged_adapters, {
      ids: ['smangrul/tinyllama_lora_norobots', 'smangrul/tinyllama_lora_sql', 'smangrul/tinyllama_lora_adcopy'],
      weights: [2.0, 0.3, 0.7],
      merge_strategy: 'ties',
      density: 0.2,
      majority_sign_method: 'total',
    });
  });

  it('fills merged_adapters defaults: linear, total, unit weights', () => {
    const req = ok(GenerateRequest, withParams({ merged_adapters: { ids: ['a/x', 'b/y'] } }));
    assert.deepEqual(req.parameters.merged_adapters, {
      ids: ['a/x', 'b/y'],
      weights: [1, 1],
      merge_strategy: 'linear',
      density: 0,
      majority_sign_method: 'total',
    });
  });

  it('accepts response_format json_object with and without a schema (structured_output.md)', () => {
    const schema = {
      $defs: { Armor: { enum: ['leather', 'chainmail', 'plate'], title: 'Armor', type: 'string' } },
      properties: {
        name: { maxLength: 10, title: 'Name', type: 'string' },
        age: { title: 'Age', type: 'integer' },
        armor: { $ref: '#/$defs/Armor' },
        strength: { title: 'Strength', type: 'integer' },
      },
      required: ['name', 'age', 'armor', 'strength'],
      title: 'Character',
      type: 'object',
    };
    const withSchema = ok(GenerateRequest, pythonClientBody({ response_format: { type: 'json_object', schema } }));
    assert.deepEqual(withSchema.parameters.response_format, { type: 'json_object', schema });
    const bare = ok(GenerateRequest, pythonClientBody({ response_format: { type: 'json_object', schema: null } }));
    assert.equal(bare.parameters.response_format?.type, 'json_object');
    assert.equal(bare.parameters.response_format?.schema, undefined);
  });

  it('treats absent or null parameters as LoRAX default_parameters()', () => {
    assert.deepEqual(ok(GenerateRequest, { inputs: 'x' }).parameters, defaultGenerateParameters());
    assert.deepEqual(ok(GenerateRequest, { inputs: 'x', parameters: null }).parameters, defaultGenerateParameters());
  });

  it('ignores unknown fields, like serde', () => {
    const req = ok(GenerateRequest, { inputs: 'x', parameters: { max_new_tokens: 5, foo: 1 }, bar: true });
    assert.deepEqual(Object.keys(req), ['inputs', 'parameters']);
    assert.equal('foo' in req.parameters, false);
  });

  it('allows temperature 0 (greedy, as LoRAX since #467) and top_p 1.0', () => {
    const req = ok(GenerateRequest, withParams({ temperature: 0, top_p: 1 }));
    assert.equal(req.parameters.temperature, 0);
    assert.equal(req.parameters.top_p, 1);
  });

  it('accepts every adapter_source in the schema; hub, local and s3 are served', () => {
    for (const source of ['hub', 'local', 's3', 'pbase']) {
      assert.equal(ok(GenerateRequest, withParams({ adapter_source: source })).parameters.adapter_source, source);
    }
    assert.equal(isServedAdapterSource('hub'), true);
    assert.equal(isServedAdapterSource('local'), true);
    assert.equal(isServedAdapterSource('s3'), true);
    assert.equal(isServedAdapterSource('pbase'), false);
  });
});

describe('LoRAX requests: validation messages', () => {
  const cases: Array<[string, unknown, string]> = [
    ['negative temperature', withParams({ temperature: -0.5 }), 'parameters.temperature: must be non-negative'],
    ['top_p > 1', withParams({ top_p: 1.5 }), 'parameters.top_p: must be > 0.0 and <= 1.0'],
    ['top_p = 0', withParams({ top_p: 0 }), 'parameters.top_p: must be > 0.0 and <= 1.0'],
    ['typical_p = 1', withParams({ typical_p: 1 }), 'parameters.typical_p: must be > 0.0 and < 1.0'],
    ['top_k = 0', withParams({ top_k: 0 }), 'parameters.top_k: must be strictly positive'],
    ['repetition_penalty = 0', withParams({ repetition_penalty: 0 }), 'parameters.repetition_penalty: must be strictly positive'],
    ['frequency_penalty = 3', withParams({ frequency_penalty: 3 }), 'parameters.frequency_penalty: must be >= -2.0 and <= 2.0'],
    ['max_new_tokens = 0', withParams({ max_new_tokens: 0 }), 'parameters.max_new_tokens: must be strictly positive'],
    ['max_new_tokens = -1', withParams({ max_new_tokens: -1 }), 'parameters.max_new_tokens: must be strictly positive'],
    ['max_new_tokens fractional', withParams({ max_new_tokens: 1.5 }), 'parameters.max_new_tokens: must be an integer, got 1.5'],
    ['max_new_tokens as string', withParams({ max_new_tokens: '64' }), 'parameters.max_new_tokens: must be an integer, got a string'],
    ['truncate = 0', withParams({ truncate: 0 }), 'parameters.truncate: must be strictly positive'],
    ['return_k_alternatives = 0', withParams({ return_k_alternatives: 0 }), 'parameters.return_k_alternatives: must be strictly positive'],
    ['best_of = 0', withParams({ best_of: 0 }), 'parameters.best_of: must be > 0'],
    ['negative seed', withParams({ seed: -1 }), 'parameters.seed: must be a non-negative integer'],
    ['temperature as string', withParams({ temperature: 'hot' }), 'parameters.temperature: must be a number, got a string'],
    ['do_sample as string', withParams({ do_sample: 'yes' }), 'parameters.do_sample: must be a boolean, got a string'],
    ['stop as a bare string', withParams({ stop: 'User:' }), 'parameters.stop: must be an array, got a string'],
    ['stop entry not a string', withParams({ stop: ['a', 3] }), 'parameters.stop[1]: must be a string, got a number'],
    ['empty inputs', { inputs: '' }, 'inputs: cannot be empty'],
    ['missing inputs', { parameters: {} }, 'inputs: is required'],
    ['inputs not a string', { inputs: ['a', 'b'] }, 'inputs: must be a string, got an array'],
    ['parameters not an object', { inputs: 'x', parameters: [] }, 'parameters: must be an object, got an array'],
    ['body is not an object', 'hello', 'must be an object, got a string'],
    ['unknown adapter_source', withParams({ adapter_source: 'git' }), 'parameters.adapter_source: must be one of "hub", "local", "s3", "pbase", got "git"'],
    [
      'response_format type',
      withParams({ response_format: { type: 'yaml' } }),
      'parameters.response_format.type: must be one of "json_object", "json_schema", "text", got "yaml"',
    ],
    [
      'response_format schema not an object',
      withParams({ response_format: { type: 'json_object', schema: 'x' } }),
      'parameters.response_format.schema: must be a JSON object (a JSON Schema)',
    ],
    [
      'best_of without sampling',
      withParams({ best_of: 2 }),
      'parameters.best_of: you must use sampling when `best_of` is > 1 (set `do_sample`, `temperature`, `top_k`, `top_p` or `typical_p`)',
    ],
    ['best_of with seed', withParams({ best_of: 2, do_sample: true, seed: 42 }), 'parameters.seed: must not be set when `best_of` > 1'],
    [
      'adapter_id and merged_adapters',
      withParams({ adapter_id: 'a/x', merged_adapters: { ids: ['a/x', 'b/y'], weights: [0.5, 0.5] } }),
      'parameters.merged_adapters: at most one of `adapter_id` or `merged_adapters` may be provided',
    ],
    [
      'merged_adapters without ids',
      withParams({ merged_adapters: { ids: [] } }),
      'parameters.merged_adapters.ids: at least one adapter ID must be provided when setting `merged_adapters`',
    ],
    [
      'merged_adapters api_tokens count',
      withParams({ merged_adapters: { ids: ['a/x', 'b/y'], api_tokens: ['hf_a'] } }),
      'parameters.merged_adapters.api_tokens: number of adapter IDs must match number of api_tokens (2 ids, 1 api_tokens)',
    ],
    [
      'merged_adapters weight count',
      withParams({ merged_adapters: { ids: ['a/x', 'b/y'], weights: [1] } }),
      'parameters.merged_adapters.weights: number of adapter IDs must match number of adapter weights (2 ids, 1 weights)',
    ],
    [
      'merge_strategy',
      withParams({ merged_adapters: { ids: ['a/x'], merge_strategy: 'slerp' } }),
      'parameters.merged_adapters.merge_strategy: must be one of "linear", "ties", "dare_linear", "dare_ties", got "slerp"',
    ],
    [
      'ties without density',
      withParams({ merged_adapters: { ids: ['a/x', 'b/y'], merge_strategy: 'ties' } }),
      'parameters.merged_adapters.density: must be > 0.0 when merge_strategy is "ties" (fraction of weights to keep)',
    ],
    [
      'density out of range',
      withParams({ merged_adapters: { ids: ['a/x'], density: 1.5 } }),
      'parameters.merged_adapters.density: must be >= 0.0 and <= 1.0',
    ],
    [
      'majority_sign_method',
      withParams({ merged_adapters: { ids: ['a/x'], majority_sign_method: 'mean' } }),
      'parameters.merged_adapters.majority_sign_method: must be one of "total", "frequency", got "mean"',
    ],
  ];
  for (const [name, body, message] of cases) {
    it(`rejects ${name}`, () => assert.equal(fail(GenerateRequest, body), message));
  }

  it('reports every problem at once, in field order', () => {
    assert.equal(
      fail(GenerateRequest, { inputs: '', parameters: { temperature: -1, top_p: 2 } }),
      'inputs: cannot be empty; parameters.temperature: must be non-negative; parameters.top_p: must be > 0.0 and <= 1.0',
    );
  });

  it('accepts best_of > 1 when any sampling knob is set', () => {
    for (const knob of [{ do_sample: true }, { temperature: 0.5 }, { top_k: 5 }, { top_p: 0.9 }, { typical_p: 0.9 }]) {
      ok(GenerateRequest, withParams({ best_of: 2, ...knob }));
    }
  });

  it('refuses best_of and decoder_input_details when streaming, with LoRAX wording', () => {
    assert.equal(
      fail(GenerateStreamRequest, withParams({ best_of: 2, do_sample: true })),
      'parameters.best_of: `best_of` != 1 is not supported when streaming tokens',
    );
    assert.equal(
      fail(GenerateStreamRequest, withParams({ decoder_input_details: true })),
      'parameters.decoder_input_details: `decoder_input_details` == true is not supported when streaming tokens',
    );
    assert.equal(
      fail(CompatGenerateRequest, pythonClientBody({ best_of: 2, do_sample: true }, true)),
      'parameters.best_of: `best_of` != 1 is not supported when streaming tokens',
    );
    // Same parameters without streaming are fine.
    ok(CompatGenerateRequest, pythonClientBody({ best_of: 2, do_sample: true }, false));
    ok(GenerateStreamRequest, withParams({ best_of: 1, details: true }));
  });
});

describe('LoRAX server-configured limits', () => {
  it('passes within the launcher defaults', () => {
    const req = ok(GenerateRequest, withParams({ stop: ['a', 'b', 'c', 'd'], best_of: 2, do_sample: true, truncate: 100 }));
    assert.deepEqual(checkGenerateLimits(req.parameters, LORAX_DEFAULT_LIMITS), []);
  });

  it('reports stop, best_of and truncate over the limits in LoRAX wording', () => {
    const req = ok(GenerateRequest, withParams({ stop: ['a', 'b', 'c', 'd', 'e'], best_of: 3, do_sample: true, truncate: 5000 }));
    const issues = checkGenerateLimits(req.parameters, LORAX_DEFAULT_LIMITS);
    assert.equal(
      loraxValidationError(issues).error,
      'Input validation error: parameters.best_of: must be > 0 and <= 2. Given: 3; ' +
        'parameters.stop: supports up to 4 stop sequences. Given: 5; ' +
        'parameters.truncate: must be strictly positive and less than 4095. Given: 5000',
    );
  });

  it('refuses best_of != 1 when the server disables it', () => {
    const req = ok(GenerateRequest, withParams({ best_of: 2, do_sample: true }));
    const issues = checkGenerateLimits(req.parameters, { maxBestOf: 1, maxStopSequences: 4, maxInputLength: 1024 });
    assert.deepEqual(issues, [{ path: ['parameters', 'best_of'], message: '`best_of` != 1 is not allowed for this endpoint' }]);
  });
});

describe('LoRAX responses', () => {
  // Shape of a LoRAX /generate response with details + decoder_input_details:
  // the first prefill token's NaN logprob is serialised by serde_json as null.
  const generateResponse = {
    generated_text: ' 72',
    details: {
      finish_reason: 'eos_token',
      prompt_tokens: 3,
      generated_tokens: 2,
      skipped_tokens: 0,
      seed: null,
      prefill: [
        { id: 1, text: '<s>', logprob: null },
        { id: 22557, text: 'Hello', logprob: -9.5 },
        { id: 28747, text: ':', logprob: -3.1 },
      ],
      tokens: [
        { id: 28705, text: ' ', logprob: -0.2, special: false, skipped: false },
        { id: 2, text: '</s>', logprob: -0.01, special: true, skipped: false },
      ],
    },
  };

  it('parses a /generate response and the compat array form', () => {
    const parsed = GenerateResponse.parse(generateResponse);
    assert.equal(parsed.details?.prefill[0]?.logprob, null);
    assert.equal(CompatGenerateResponse.parse([generateResponse]).length, 1);
    assert.deepEqual(GenerateResponse.parse({ generated_text: 'x' }), { generated_text: 'x' });
  });

  it('parses best_of_sequences and alternative tokens', () => {
    const parsed = GenerateResponse.parse({
      generated_text: 'a',
      details: {
        ...generateResponse.details,
        seed: 42,
        tokens: [
          {
            id: 1,
            text: 'a',
            logprob: -0.1,
            special: false,
            skipped: false,
            alternative_tokens: [{ id: 2, text: 'b', logprob: -2.5 }],
          },
        ],
        best_of_sequences: [
          { generated_text: 'c', finish_reason: 'length', generated_tokens: 1, seed: 7, prefill: [], tokens: [] },
        ],
      },
    });
    assert.equal(parsed.details?.best_of_sequences?.[0]?.finish_reason, 'length');
    assert.equal(parsed.details?.tokens[0]?.alternative_tokens?.[0]?.text, 'b');
  });

  it('parses a /generate_stream event sequence', () => {
    const events = [
      { token: { id: 22557, text: 'Hello', logprob: -0.5, special: false, skipped: false }, generated_text: null, details: null },
      {
        token: { id: 2, text: '</s>', logprob: -0.1, special: true, skipped: false },
        generated_text: 'Hello',
        details: { finish_reason: 'eos_token', prompt_tokens: 4, generated_tokens: 2, seed: null },
      },
    ];
    const parsed = events.map((e) => StreamResponse.parse(e));
    assert.equal(parsed[0]?.generated_text, null);
    assert.equal(parsed[1]?.details?.finish_reason, 'eos_token');
  });

  it('tolerates TGI tokens without `skipped` but always outputs it', () => {
    assert.equal(Token.parse({ id: 1, text: 'a', logprob: -1, special: false }).skipped, false);
  });

  it('rejects an unknown finish_reason', () => {
    assert.equal(
      GenerateResponse.safeParse({ generated_text: '', details: { ...generateResponse.details, finish_reason: 'stop' } }).success,
      false,
    );
  });

  it('builds error bodies', () => {
    assert.deepEqual(loraxError('Model is overloaded', 'overloaded'), { error: 'Model is overloaded', error_type: 'overloaded' });
    assert.deepEqual(loraxError('bad'), { error: 'bad', error_type: 'validation' });
    assert.deepEqual(ErrorResponse.parse({ error: 'Incomplete generation', error_type: 'incomplete_generation' }), {
      error: 'Incomplete generation',
      error_type: 'incomplete_generation',
    });
  });
});
