// The schema compiler: byte strings accepted/rejected, unsupported features refused by name, and
// a property test sampling random byte strings from each compiled automaton: every one must parse
// as JSON and validate against its schema (@cfworker/json-schema).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Validator } from '@cfworker/json-schema';
import { LazyDfa } from './automaton.ts';
import { sample } from './test-sampling.ts';
import { compileSchema, type CompileOptions } from './compile.ts';
import { SchemaError } from './schema.ts';
import { OPEN_SCHEMAS, TEST_SCHEMAS } from './test-schemas.ts';
import { mulberry32 } from '../../test/helpers/prng.ts';

const dfaOf = (schema: unknown, o: Partial<CompileOptions> = {}) => new LazyDfa(compileSchema(schema, { maxWhitespace: 2, ...o }));

function check(schema: unknown, yes: string[], no: string[], o: Partial<CompileOptions> = {}) {
  const dfa = dfaOf(schema, o);
  for (const y of yes) assert.ok(dfa.matches(y), `${JSON.stringify(schema)} should accept ${y}`);
  for (const n of no) assert.ok(!dfa.matches(n), `${JSON.stringify(schema)} should reject ${n}`);
}

function rejects(schema: unknown, ...names: (string | RegExp)[]) {
  try {
    compileSchema(schema);
  } catch (err) {
    assert.ok(err instanceof SchemaError, `expected a SchemaError, got ${err}`);
    for (const n of names) {
      if (typeof n === 'string') assert.ok(err.message.includes(n), `"${err.message}" should name ${n}`);
      else assert.match(err.message, n);
    }
    return;
  }
  assert.fail(`${JSON.stringify(schema)} should be refused`);
}

const rng = mulberry32;

describe('schema compiler: languages', () => {
  it('objects: properties in order, required, optional, no extras', () => {
    check(
      { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'string', maxLength: 3 } }, required: ['a'] },
      ['{"a":1}', '{"a":-12,"b":"xyz"}', '{ "a": 0, "b": "" }', '{\n  "a": 1,\n  "b": "\u00e9"\n}'],
      ['{}', '{"b":"x"}', '{"a":1,}', '{"a":01}', '{"a":1,"b":"xyzw"}', '{"b":"x","a":1}', '{"a":1.5}', '{"a":1,"c":2}', '{"a":1} '],
    );
  });

  it('arrays: items, minItems, maxItems, prefixItems', () => {
    check({ type: 'array', items: { type: 'boolean' }, minItems: 1, maxItems: 2 }, ['[true]', '[true,false]', '[ false ]'], ['[]', '[true,true,true]', '[true,]', '[,true]']);
    check({ type: 'array', prefixItems: [{ type: 'string' }, { type: 'integer' }], items: false }, ['["a",1]', '["a"]', '[]'], ['["a",1,2]', '[1]']);
    check({ type: 'array', items: [{ const: 1 }], additionalItems: { type: 'null' } }, ['[1,null,null]', '[]'], ['[null]', '[1,1]']);
    check({ type: 'array' }, ['[]', '[1,"a",[{}]]'], ['[1,]']);
  });

  it('scalars: strings with lengths and escapes, integers and numbers with bounds', () => {
    check({ type: 'string', minLength: 2, maxLength: 2 }, ['"ab"', '"\\n\\u00e9"', '"\u{1F600}x"', '"\\"\\\\"'], ['"a"', '"abc"', '"\\ud83d\\ude00"', '"\\x"', '"\x01a"']);
    // Invalid UTF-8 (overlong, surrogate, lone continuation) is never produced.
    const dfa = dfaOf({ type: 'string' });
    for (const bad of [[0x22, 0xc0, 0xaf, 0x22], [0x22, 0xed, 0xa0, 0x80, 0x22], [0x22, 0x80, 0x22], [0x22, 0xf4, 0x90, 0x80, 0x80, 0x22]]) assert.ok(!dfa.matches(Uint8Array.from(bad)));
    check({ type: 'integer', minimum: -5, maximum: 123 }, ['-5', '0', '123', '99', '7'], ['-6', '124', '1000', '-0', '00', '1.0']);
    check({ type: 'integer', exclusiveMinimum: 0.5, exclusiveMaximum: 3 }, ['1', '2'], ['0', '3']);
    check({ type: 'number', minimum: 0, maximum: 1 }, ['0', '1', '0.5', '0.001'], ['1.5', '-0.5', '2', '1.0', '0.0', '1e0']);
    check({ type: 'number', exclusiveMinimum: 0, maximum: 10 }, ['1', '0.5', '10', '9.99'], ['0', '10.5', '-1']);
    check({ type: 'number', minimum: -2, exclusiveMaximum: 0 }, ['-2', '-1.5', '-0.01', '-1'], ['0', '-2.5', '0.5']);
    check({ type: 'number' }, ['0', '-1.25', '3e10', '1E-2', '123456789012345'], ['01', '1.', '.5', '1e', '1234567890123456', '+1']);
    check({ type: 'boolean' }, ['true', 'false'], ['True', 'null']);
    check({ type: ['string', 'null'], maxLength: 1 }, ['null', '"x"'], ['"xy"', '0']);
  });

  it('formats in one fixed shape each', () => {
    check({ type: 'string', format: 'date' }, ['"2024-02-28"'], ['"2024-02-30"', '"2024-2-1"']);
    check({ type: 'string', format: 'date-time' }, ['"2024-01-28T23:59:59Z"'], ['"2024-01-28T24:00:00Z"', '"2024-01-28 12:00:00Z"']);
    check({ type: 'string', format: 'uuid' }, ['"123e4567-e89b-12d3-a456-426614174000"'], ['"123e4567e89b12d3a456426614174000"']);
    rejects({ type: 'string', format: 'uuid', maxLength: 10 }, 'cannot be satisfied');
  });

  it('enum, const, anyOf, oneOf', () => {
    check({ enum: ['a', 1, null, { k: [1] }] }, ['"a"', '1', 'null', '{"k":[1]}'], ['"b"', '2', '{"k": [1]}']);
    check({ type: 'string', enum: ['a', 1, 'bb'], maxLength: 1 }, ['"a"'], ['1', '"bb"']);
    check({ const: 'x' }, ['"x"'], ['"y"']);
    check({ anyOf: [{ type: 'integer' }, { type: 'string', maxLength: 1 }] }, ['1', '"a"'], ['1.5', '"ab"']);
    check({ oneOf: [{ type: 'integer' }, { type: 'string' }] }, ['1', '"a"'], ['null']);
  });

  it('$ref, $defs, definitions and bounded recursion', () => {
    const list = {
      $defs: { n: { type: 'object', properties: { v: { type: 'integer' }, next: { anyOf: [{ $ref: '#/$defs/n' }, { type: 'null' }] } }, required: ['v', 'next'] } },
      $ref: '#/$defs/n',
    };
    let deep = 'null';
    for (let i = 0; i < 3; i++) deep = `{"v":${i},"next":${deep}}`;
    check(list, ['{"v":1,"next":null}', deep], ['{"v":1}'], { recursionDepth: 3 });
    let deeper = 'null';
    for (let i = 0; i < 5; i++) deeper = `{"v":${i},"next":${deeper}}`;
    check(list, [], [deeper], { recursionDepth: 3 });
    check({ definitions: { c: { enum: ['r'] } }, properties: { a: { $ref: '#/definitions/c' } }, required: ['a'] }, ['{"a":"r"}'], ['{"a":"g"}']);
    check({ $defs: { 'a/b': { const: 1 } }, $ref: '#/$defs/a~1b' }, ['1'], ['2']);
    // Recursion that cannot bottom out is unsatisfiable.
    rejects({ $defs: { n: { type: 'object', properties: { c: { $ref: '#/$defs/n' } }, required: ['c'] } }, $ref: '#/$defs/n' }, 'cannot be satisfied');
  });

  it('maps: additionalProperties with minProperties / maxProperties; required names outside properties', () => {
    check({ type: 'object', additionalProperties: { type: 'integer' }, maxProperties: 2 }, ['{}', '{"x":1}', '{"x":1,"y":2}'], ['{"x":1,"y":2,"z":3}', '{"x":"a"}']);
    check({ type: 'object', additionalProperties: false }, ['{}'], ['{"a":1}']);
    check({ type: 'object', properties: { a: { type: 'null' } }, required: ['a', 'b'], additionalProperties: { type: 'boolean' } }, ['{"a":null,"b":true}'], ['{"a":null}']);
    rejects({ type: 'object', required: ['b'], additionalProperties: false }, 'cannot be satisfied');
  });

  it('bounds whitespace: nothing, one space, or a newline and indentation', () => {
    const o = { type: 'array', items: { type: 'integer' } };
    check(o, ['[1, 2]', '[\n  1,\n  2\n]', '[\n\t1]'], ['[  1]', '[\n\n1]', '[1 ,  2]'], { maxWhitespace: 4 });
    check(o, ['[\n    1]'], ['[\n     1]'], { maxWhitespace: 4 });
    check(o, ['[1,2]', '[ 1]'], ['[\n1]'], { maxWhitespace: 0 });
  });

  it('the json_object default nests a bounded number of levels', () => {
    check({ type: 'object' }, ['{"a":{"b":{"c":[1]}}}'], ['{"a":{"b":{"c":{"d":{"e":{"f":1}}}}}}'], { anyDepth: 3 });
  });
});

describe('schema compiler: refused features', () => {
  it('names each unsupported keyword and where it is', () => {
    rejects({ type: 'string', pattern: '^(a)\\1$' }, '"pattern"', 'backreferences', 'at #');
    rejects({ type: 'object', properties: { e: { type: 'string', format: 'idn-email' } } }, '"format" ("idn-email"', '#/properties/e');
    rejects({ if: { type: 'string' }, then: { minLength: 1 }, else: { type: 'null' } }, '"if"', '"then"', '"else"');
    rejects({ not: { type: 'null' } }, '"not"');
    rejects({ type: 'object', patternProperties: { '^x': { type: 'integer' } } }, '"patternProperties"');
    rejects({ type: 'object', propertyNames: { maxLength: 3 } }, '"propertyNames"');
    rejects({ type: 'object', dependentSchemas: { a: { required: ['b'] } }, dependentRequired: { a: ['b'] } }, '"dependentSchemas"', '"dependentRequired"');
    rejects({ type: 'array', uniqueItems: true }, '"uniqueItems"');
    rejects({ type: 'array', contains: { type: 'integer' } }, '"contains"');
    rejects({ type: 'integer', multipleOf: 5 }, '"multipleOf"');
    rejects({ type: 'object', unevaluatedProperties: false }, '"unevaluatedProperties"');
    rejects({ allOf: [{ type: 'string', format: 'date' }, { format: 'uuid' }] }, '"allOf" parts with different "format"');
    rejects({ $ref: 'https://example.com/schema.json' }, 'only local references');
    rejects({ $ref: '#/$defs/missing' }, 'does not resolve');
    rejects({ oneOf: [{ type: 'number' }, { type: 'integer' }] }, '"oneOf" branches 0 and 1');
    rejects({ oneOf: [{ type: 'object', properties: { k: { const: 'a' } } }, { type: 'object', properties: { k: { const: 'b' } } }] }, '"oneOf"');
    rejects({ type: 'stringg' }, '"type" must be');
    rejects({ type: 'string', maxLength: -1 }, '"maxLength" must be');
  });

  it('lists several problems at once', () => {
    rejects({ type: 'object', properties: { a: { pattern: '(?=x)' }, b: { not: {} } } }, '#/properties/a', '#/properties/b', '"pattern"', '"not"');
  });

  it('accepts annotations, uniqueItems false, unknown keywords and allOf with one constraining part', () => {
    const dfa = dfaOf({
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      title: 'T',
      description: 'd',
      'x-vendor': 1,
      type: 'object',
      properties: { a: { allOf: [{ type: 'integer' }, { description: 'only annotates' }], default: 1, examples: [1] }, b: { type: 'array', uniqueItems: false, items: { type: 'null' } } },
      required: ['a'],
    });
    assert.ok(dfa.matches('{"a":1,"b":[null]}'));
  });

  it('refuses schemas too large to compile', () => {
    rejects({ type: 'array', items: { type: 'string', maxLength: 1000 }, maxItems: 1000 }, 'too large');
  });
});

describe('schema compiler: sampled texts always validate', () => {
  const all = { ...TEST_SCHEMAS, ...OPEN_SCHEMAS };
  for (const [name, schema] of Object.entries(all)) {
    it(name, () => {
      const dfa = dfaOf(schema, { maxWhitespace: 4 });
      const validator = new Validator(schema as object, '2020-12', false);
      const utf8 = new TextDecoder('utf-8', { fatal: true });
      let done = 0;
      for (let seed = 0; seed < 60; seed++) {
        const bytes = sample(dfa, rng(seed * 7919 + name.length));
        if (!bytes) continue;
        done++;
        const text = utf8.decode(bytes);
        const value = JSON.parse(text) as unknown;
        const r = validator.validate(value);
        assert.ok(r.valid, `${name} seed ${seed}: ${text}\n${JSON.stringify(r.errors.slice(0, 3))}`);
      }
      assert.ok(done >= 30, `${name}: only ${done}/60 samples finished`);
    });
  }
});
