// response_format / tool schemas are checked at the gateway (with the Workers-safe validator)
// before anything reaches a GPU: validity, local refs only, size and depth limits.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkJsonSchema } from './json-schema.ts';

describe('checkJsonSchema', () => {
  it('accepts ordinary draft-07 and 2020-12 schemas', () => {
    const ok: unknown[] = [
      { type: 'object', properties: { name: { type: 'string', maxLength: 20 }, age: { type: 'integer', minimum: 0 } }, required: ['name'] },
      { type: 'array', prefixItems: [{ type: 'string' }, { type: 'number' }], items: false },
      { $defs: { pt: { type: 'object', properties: { x: { type: 'number' } } } }, type: 'array', items: { $ref: '#/$defs/pt' } },
      { definitions: { a: { enum: ['x', 'y'] } }, anyOf: [{ $ref: '#/definitions/a' }, { type: 'null' }] },
      { type: ['string', 'null'], pattern: '^[a-z]+$' },
      { type: 'object', additionalProperties: { type: ['object', 'string', 'integer', 'number', 'boolean', 'null'] }, title: 'ArbitraryJsonModel' },
      { $anchor: 'root', type: 'object', properties: { self: { $ref: '#root' } } },
      { type: 'object', 'x-custom-keyword': 1 },
    ];
    for (const s of ok) assert.equal(checkJsonSchema(s), null, JSON.stringify(s));
  });

  it('names the problem of invalid schemas', () => {
    const bad: Array<[unknown, RegExp]> = [
      [{ type: 'objec' }, /at #\/type/],
      [{ type: 'object', properties: { a: { type: 'string', minLength: -1 } } }, /minLength/],
      [{ type: 'string', pattern: '([a-' }, /regex/],
      [{ type: 'object', required: 'name' }, /required/],
      [{ properties: { a: { $ref: 'https://example.com/schema.json' } } }, /only local references/],
      [{ properties: { a: { $ref: '#/$defs/missing' } } }, /does not resolve/],
      [{ properties: { a: { $ref: '#nope' } } }, /does not resolve/],
      [[{ type: 'string' }], /JSON object/],
      ['{"type":"object"}', /JSON object/],
    ];
    for (const [s, msg] of bad) {
      const r = checkJsonSchema(s);
      assert.ok(r && msg.test(r), `${JSON.stringify(s)} -> ${r}`);
    }
  });

  it('enforces size and depth limits', () => {
    let deep: Record<string, unknown> = { type: 'string' };
    for (let i = 0; i < 40; i++) deep = { type: 'object', properties: { a: deep } };
    assert.match(checkJsonSchema(deep) ?? '', /nested too deeply/);
    const wide = { type: 'object', properties: Object.fromEntries(Array.from({ length: 3000 }, (_, i) => [`field_${i}`, { type: 'string', description: 'x'.repeat(20) }])) };
    assert.match(checkJsonSchema(wide) ?? '', /too large/);
    assert.equal(checkJsonSchema(wide, { maxBytes: 1 << 20, maxDepth: 32 }), null);
  });
});
