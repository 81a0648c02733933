// Adapter config patterns: Python re semantics as PEFT uses them, in linear time, within bounds.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { layerIndexRegex, MAX_PATTERN_KEYS, MatchBudget, patternKeyMatches, patternKeyRegex, PatternError, pythonRegex } from './adapter-patterns.ts';
import { checkConfigPatterns, compileConfigPatterns, findPatternKey, isTargetedModule, loraTargeting, parseAdapterConfig } from './peft-adapter.ts';

describe('adapter config patterns', () => {
  test('catastrophic backtracking patterns run in linear time', () => {
    const long = `model.layers.1.${'a'.repeat(200)}`;
    for (const p of ['(.*)*x', '(a+)+$', '(a|aa)+$', '(.*a){12}y']) {
      const t0 = performance.now();
      assert.equal(pythonRegex(p, 'target_modules').fullmatch(long), false);
      assert.ok(performance.now() - t0 < 200, `${p} took ${performance.now() - t0} ms`);
    }
  });

  test('fullmatch vs match (anchored at the start only), as re.fullmatch / re.match', () => {
    const r = pythonRegex('model\\.layers\\.\\d+', 'target_modules');
    assert.equal(r.fullmatch('model.layers.3.mlp'), false);
    assert.notEqual(r.match('model.layers.3.mlp'), null);
    assert.equal(r.match('x.model.layers.3'), null);
    assert.equal(pythonRegex('a\\Z', 'target_modules').fullmatch('a'), true);
  });

  test('get_pattern_key wraps the key textually, alternation included (as Python does)', () => {
    // re.match(r"(.*\.)?(q_proj)|(model)$", name): the "|" splits the whole pattern, so the first
    // branch loses its "$" and matches any name with q_proj after a dot.
    const k = patternKeyRegex('q_proj)|(model', 'rank_pattern key');
    assert.notEqual(k.match('model.layers.0.self_attn.q_proj_extra'), null);
    assert.notEqual(k.match('model'), null);
    assert.equal(k.match('model.layers.0.self_attn.k_proj'), null);
    assert.equal(findPatternKey(['mlp.down_proj', 'down_proj'], 'model.layers.0.mlp.down_proj'), 'mlp.down_proj');
  });

  test('layer index: PEFT default and layers_pattern', () => {
    assert.equal(layerIndexRegex(null).match('model.layers.7.self_attn.q_proj')?.[1], '7');
    assert.equal(layerIndexRegex('layers').match('model.layers.12.mlp.up_proj')?.[1], '12');
    assert.equal(layerIndexRegex('h').match('model.layers.12.mlp.up_proj'), null);
    const t = loraTargeting(parseAdapterConfig({ peft_type: 'LORA', target_modules: ['q_proj'], layers_to_transform: [2], layers_pattern: 'layers' }));
    assert.equal(isTargetedModule(t, 'model.layers.2.self_attn.q_proj'), true);
    assert.equal(isTargetedModule(t, 'model.layers.3.self_attn.q_proj'), false);
  });

  test('backreferences and lookaround are refused, naming the pattern and the field', async () => {
    for (const [field, cfg] of [
      ['target_modules', { target_modules: '(q)_proj\\1' }],
      ['exclude_modules', { exclude_modules: '(?=q).*' }],
      ['rank_pattern key', { rank_pattern: { '(?<!x)q_proj': 4 } }],
      ['alpha_pattern key', { alpha_pattern: { '(?P<a>q)(?P=a)': 4 } }],
      ['layers_pattern', { layers_pattern: ['(?!h)layers'], layers_to_transform: [0] }],
    ] as const) {
      await assert.rejects(
        compileConfigPatterns(parseAdapterConfig({ peft_type: 'LORA', ...cfg })),
        (err: Error) => err instanceof PatternError && err.message.includes(field) && err.message.includes('is not a regular expression Switchboard can match'),
        field,
      );
    }
  });

  test('bounds: pattern length and number of keys', () => {
    assert.throws(() => parseAdapterConfig({ peft_type: 'LORA', target_modules: 'a'.repeat(300) }), /target_modules "a{64}"\.\.\. is 300 characters long/);
    const keys = Object.fromEntries(Array.from({ length: MAX_PATTERN_KEYS + 1 }, (_, i) => [`k${i}`, 4]));
    assert.throws(() => checkConfigPatterns(parseAdapterConfigLoose({ rank_pattern: keys })), /rank_pattern has 1025 keys/);
    const long = Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`${'x'.repeat(200)}${i}`, 4]));
    assert.throws(() => checkConfigPatterns(parseAdapterConfigLoose({ alpha_pattern: long })), /alpha_pattern keys total \d+ characters \(at most 32768\)/);
  });

  test('plain keys (module names) match without the engine, exactly as the regex would', () => {
    const names = ['model.layers.0.self_attn.q_proj', 'model.layers.10.self_attn.q_proj', 'model.layers.1.mlp.down_proj', 'q_proj'];
    const keys = ['q_proj', 'self_attn.q_proj', 'layers.0.self_attn.q_proj', 'model.layers.0.self_attn.q_proj', 'layers.1.self_attn.q_proj', '0.self_attn.q_proj', 'attn.q_proj', 'proj', 'layers.1.mlp.down_proj', 'layers.1', '.', 'q.proj', 'model.layers.0.self_attn.q_proj.x'];
    for (const k of keys) for (const n of names) assert.equal(patternKeyMatches(k, n, 'k'), patternKeyRegex(k, 'k').match(n) !== null, `${k} vs ${n}`);
  });

  test('compiling many costly patterns hands the event loop back between them', async () => {
    const keys = Object.fromEntries(Array.from({ length: 128 }, (_, i) => [`(${"(.*)*".repeat(40)}x${i}|[a-z]*y${i})`.slice(0, 256), 4]));
    let longest = 0;
    let last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      longest = Math.max(longest, now - last);
      last = now;
    }, 1);
    await compileConfigPatterns(parseAdapterConfigLoose({ rank_pattern: keys }));
    clearInterval(timer);
    assert.ok(longest < 250, `the event loop was held ${longest.toFixed(0)} ms`);
  });

  test('MatchBudget yields to the event loop and gives up after its total', async () => {
    const b = new MatchBudget(150, 1);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 0);
    await assert.rejects(
      (async () => {
        for (;;) {
          const t0 = performance.now();
          while (performance.now() - t0 < 2);
          await b.tick();
        }
      })(),
      /took longer than 150 ms/,
    );
    clearInterval(timer);
    assert.ok(ticks > 0, 'other work ran between slices');
  });
});

function parseAdapterConfigLoose(extra: Record<string, unknown>) {
  return { peft_type: 'LORA', r: 8, lora_alpha: 8, ...extra } as Parameters<typeof checkConfigPatterns>[0];
}
