// Schemas for the structured-output property tests (compile.test.ts, grammar.test.ts,
// structured-e2e.test.ts) and the benchmark: every supported feature, bounded enough that a
// random model sampling at high temperature finishes them within a few hundred tokens.

export const TEST_SCHEMAS: Record<string, Record<string, unknown>> = {
  person: {
    type: 'object',
    properties: { name: { type: 'string', maxLength: 10 }, age: { type: 'integer', minimum: 0, maximum: 120 } },
    required: ['name', 'age'],
    additionalProperties: false,
  },
  optionalProps: {
    type: 'object',
    properties: {
      id: { type: 'integer' },
      active: { type: 'boolean' },
      note: { type: ['string', 'null'], maxLength: 6 },
      score: { type: 'number', minimum: 0, maximum: 1 },
    },
    required: ['id'],
  },
  enumArray: { type: 'array', items: { enum: ['red', 'green', 'blue'] }, minItems: 1, maxItems: 4 },
  mixedEnum: { enum: ['a', 1, 2.5, null, true, { k: [1, 'x'] }, 'caf\u00e9 \u{1F600}'] },
  constDiscriminated: {
    oneOf: [
      { type: 'object', properties: { kind: { const: 'circle' }, r: { type: 'integer', minimum: 1, maximum: 9 } }, required: ['kind', 'r'], additionalProperties: false },
      { type: 'object', properties: { kind: { const: 'square' }, side: { type: 'number', exclusiveMinimum: 0, maximum: 100 } }, required: ['kind', 'side'], additionalProperties: false },
    ],
  },
  anyOfScalars: { anyOf: [{ type: 'string', maxLength: 5 }, { type: 'integer' }, { type: 'null' }] },
  recursiveTree: {
    $defs: {
      node: {
        type: 'object',
        properties: { v: { type: 'integer', minimum: -9, maximum: 9 }, children: { type: 'array', items: { $ref: '#/$defs/node' }, maxItems: 2 } },
        required: ['v'],
        additionalProperties: false,
      },
    },
    $ref: '#/$defs/node',
  },
  boundedNumbers: {
    type: 'object',
    properties: {
      p: { type: 'number', minimum: 0, maximum: 1 },
      t: { type: 'number', minimum: -40, exclusiveMaximum: 60 },
      n: { type: 'integer', exclusiveMinimum: -3, exclusiveMaximum: 1000 },
      big: { type: 'integer', minimum: 1000000 },
    },
    required: ['p', 't', 'n', 'big'],
    additionalProperties: false,
  },
  formats: {
    type: 'object',
    properties: { d: { type: 'string', format: 'date' }, u: { type: 'string', format: 'uuid' }, dt: { type: 'string', format: 'date-time' }, t: { type: 'string', format: 'time' } },
    required: ['d', 'u', 'dt', 't'],
    additionalProperties: false,
  },
  tuple: { type: 'array', prefixItems: [{ type: 'string', maxLength: 4 }, { type: 'integer' }, { type: 'boolean' }], items: false, minItems: 2 },
  boundedMap: { type: 'object', additionalProperties: { type: 'integer', minimum: 0, maximum: 99 }, maxProperties: 3, minProperties: 1 },
  requiredFromAdditional: {
    type: 'object',
    properties: { a: { type: 'boolean' } },
    required: ['a', 'b'],
    additionalProperties: { type: 'string', maxLength: 3 },
  },
  deepNesting: {
    type: 'object',
    properties: {
      l1: {
        type: 'object',
        properties: {
          l2: {
            type: 'object',
            properties: { l3: { type: 'object', properties: { l4: { type: 'object', properties: { leaf: { type: 'integer' } }, required: ['leaf'] } }, required: ['l4'] } },
            required: ['l3'],
          },
        },
        required: ['l2'],
      },
    },
    required: ['l1'],
  },
  nullableString: { type: ['string', 'null'], minLength: 2, maxLength: 8 },
  arrayOfObjects: {
    type: 'array',
    items: { type: 'object', properties: { x: { type: 'integer' }, y: { type: 'integer' } }, required: ['x', 'y'], additionalProperties: false },
    maxItems: 3,
  },
  unicodeLengths: { type: 'object', properties: { s: { type: 'string', minLength: 3, maxLength: 3 } }, required: ['s'] },
  pydanticStyle: {
    $defs: {
      Address: {
        title: 'Address',
        type: 'object',
        properties: { street: { title: 'Street', type: 'string', maxLength: 12 }, zip: { title: 'Zip', type: 'string', minLength: 5, maxLength: 5 } },
        required: ['street', 'zip'],
      },
    },
    title: 'User',
    type: 'object',
    properties: {
      name: { title: 'Name', type: 'string', maxLength: 8, description: 'the name' },
      address: { allOf: [{ $ref: '#/$defs/Address' }], description: 'where' },
      nickname: { anyOf: [{ type: 'string', maxLength: 6 }, { type: 'null' }], default: null, title: 'Nickname' },
    },
    required: ['name', 'address'],
  },
  topLevelBoolean: { type: 'boolean' },
  oneOfByType: { oneOf: [{ type: 'string', maxLength: 4 }, { type: 'integer', minimum: 0 }, { type: 'object', properties: { k: { type: 'null' } }, required: ['k'] }] },
  minProperties: {
    type: 'object',
    properties: { a: { type: 'integer' }, b: { type: 'integer' }, c: { type: 'integer' } },
    minProperties: 2,
    maxProperties: 2,
  },
  freeNumber: { type: 'array', items: { type: 'number' }, minItems: 1, maxItems: 3 },
  definitionsDraft7: {
    definitions: { color: { type: 'string', enum: ['r', 'g', 'b'] } },
    type: 'object',
    properties: { fg: { $ref: '#/definitions/color' }, bg: { $ref: '#/definitions/color' } },
    required: ['fg', 'bg'],
    additionalProperties: false,
  },
  linkedList: {
    $defs: { item: { type: 'object', properties: { v: { type: 'boolean' }, next: { anyOf: [{ $ref: '#/$defs/item' }, { type: 'null' }] } }, required: ['v', 'next'] } },
    $ref: '#/$defs/item',
  },
};

/** Schemas whose free-form strings can run long with a random model (checked for validity only when they finish). */
export const OPEN_SCHEMAS: Record<string, Record<string, unknown>> = {
  jsonObject: { type: 'object' },
  loraxDefault: {
    additionalProperties: { type: ['object', 'string', 'integer', 'number', 'boolean', 'null'] },
    title: 'ArbitraryJsonModel',
    type: 'object',
  },
  freeStrings: { type: 'array', items: { type: 'string' }, maxItems: 2 },
};

/**
 * A schema too large to compile inline (~13 KB of JSON, tens of milliseconds): an object of 60
 * nested objects, with `extra` properties added (compile-pool.test.ts, structured-e2e.test.ts).
 */
export function largeSchema(extra: Record<string, unknown> = {}): Record<string, unknown> {
  const props: Record<string, unknown> = {};
  for (let i = 0; i < 60; i++) {
    props[`field_${i}`] = {
      type: 'object',
      properties: { name: { type: 'string', maxLength: 40 }, kind: { enum: ['alpha', 'beta', 'gamma', `delta${i}`] }, n: { type: 'integer', minimum: 0, maximum: 1000 } },
      required: ['name', 'kind'],
    };
  }
  return { type: 'object', properties: { ...props, ...extra }, required: Object.keys(props).slice(0, 30) };
}
