// jsonTooDeep: linear, string-aware nesting check.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { jsonTooDeep, MAX_JSON_DEPTH } from './json-depth.ts';

test('counts object/array nesting outside strings only', () => {
  assert.equal(jsonTooDeep('{"a":[1,{"b":[]}]}', 4), false);
  assert.equal(jsonTooDeep('{"a":[1,{"b":[[]]}]}', 4), true);
  assert.equal(jsonTooDeep(`{"s":"${'['.repeat(5000)}"}`), false);
  assert.equal(jsonTooDeep(`{"s":"\\"${'{'.repeat(500)}"}`), false); // an escaped quote does not end the string
  assert.equal(jsonTooDeep('['.repeat(MAX_JSON_DEPTH) + ']'.repeat(MAX_JSON_DEPTH)), false);
  assert.equal(jsonTooDeep('['.repeat(MAX_JSON_DEPTH + 1)), true);
});

test('100,000 levels are refused in linear time', () => {
  const t0 = performance.now();
  assert.equal(jsonTooDeep(`{"a":${'['.repeat(100_000)}${']'.repeat(100_000)}}`), true);
  assert.ok(performance.now() - t0 < 100);
});
