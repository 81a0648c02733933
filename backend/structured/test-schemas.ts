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

/**
 * Schemas as users send them (issue 13): formats, enums with quotes, backslashes, control
 * characters, CJK and emoji, odd property names, recursion, tuples, nullable types, patterns,
 * fractional bounds, sets, intersections, and invoice / function-call shapes as pydantic v2 and
 * zod-to-json-schema emit them. Bounded so that a random model finishes most of them.
 */
export const USER_SCHEMAS: Record<string, Record<string, unknown>> = {
  contactFormats: {
    type: 'object',
    properties: {
      email: { type: 'string', format: 'email' },
      site: { type: 'string', format: 'uri' },
      host: { type: 'string', format: 'hostname' },
      v4: { type: 'string', format: 'ipv4' },
      v6: { type: 'string', format: 'ipv6' },
      born: { type: 'string', format: 'date' },
    },
    required: ['email', 'site', 'host', 'v4', 'v6', 'born'],
    additionalProperties: false,
  },
  shortEmail: { type: 'string', format: 'email', maxLength: 12 },
  enumEscapes: { enum: ['say "hi"', 'back\\slash', 'tab\there', 'nl\nline', 'bell\u0007', 'Non ?', 'a, b', 'x ,y'] },
  enumUnicode: { type: 'string', enum: ['日本', '東京都', '🎉 party', 'café', 'naïve ✓'] },
  constCjk: { type: 'object', properties: { country: { const: '日本' }, n: { type: 'integer', minimum: 0, maximum: 9 } }, required: ['country', 'n'] },
  oddKeys: {
    type: 'object',
    properties: {
      '': { type: 'integer', minimum: 0, maximum: 9 },
      'with space': { type: 'boolean' },
      'quote"key': { type: 'null' },
      'back\\slash': { type: 'integer', minimum: 0, maximum: 9 },
      'ключ': { type: 'string', maxLength: 3 },
      '$ref': { type: 'string', maxLength: 2 },
      'a/b~c': { type: 'boolean' },
    },
    required: ['', 'with space', 'quote"key', 'back\\slash', 'ключ', '$ref', 'a/b~c'],
    additionalProperties: false,
  },
  emojiKey: { type: 'object', properties: { 'key🔑': { enum: ['✓', '✗'] } }, required: ['key🔑'] },
  commentTree: {
    $schema: 'http://json-schema.org/draft-07/schema#',
    definitions: {
      Comment: {
        type: 'object',
        properties: { text: { type: 'string', maxLength: 8 }, replies: { type: 'array', items: { $ref: '#/definitions/Comment' }, maxItems: 2 } },
        required: ['text', 'replies'],
        additionalProperties: false,
      },
    },
    $ref: '#/definitions/Comment',
  },
  pydanticTuple: { maxItems: 2, minItems: 2, prefixItems: [{ type: 'number', minimum: -90, maximum: 90 }, { type: 'number', minimum: -180, maximum: 180 }], type: 'array' },
  nullableFields: {
    type: 'object',
    properties: {
      age: { anyOf: [{ type: 'integer', minimum: 0, maximum: 150 }, { type: 'null' }], default: null },
      nick: { type: ['string', 'null'], maxLength: 5 },
      legacy: { type: 'string', nullable: true, maxLength: 3 },
      list: { type: ['array', 'null'], items: { type: ['string', 'null'], maxLength: 3 }, maxItems: 3 },
    },
    required: ['age', 'nick', 'list'],
  },
  pydanticInvoice: {
    $defs: {
      Currency: { enum: ['USD', 'EUR', 'JPY'], title: 'Currency', type: 'string' },
      LineItem: {
        properties: {
          description: { maxLength: 12, title: 'Description', type: 'string' },
          quantity: { exclusiveMinimum: 0, maximum: 100, title: 'Quantity', type: 'integer' },
          unit_price: { minimum: 0.01, maximum: 9999.99, title: 'Unit Price', type: 'number' },
          discount: { anyOf: [{ maximum: 0.5, minimum: 0, type: 'number' }, { type: 'null' }], default: null, title: 'Discount' },
        },
        required: ['description', 'quantity', 'unit_price'],
        title: 'LineItem',
        type: 'object',
      },
    },
    properties: {
      invoice_number: { pattern: '^INV-[0-9]{4}$', title: 'Invoice Number', type: 'string' },
      issued: { format: 'date', title: 'Issued', type: 'string' },
      customer_email: { format: 'email', maxLength: 24, title: 'Customer Email', type: 'string' },
      currency: { $ref: '#/$defs/Currency' },
      items: { items: { $ref: '#/$defs/LineItem' }, maxItems: 2, minItems: 1, title: 'Items', type: 'array' },
      tags: { items: { enum: ['urgent', 'paid', 'export'], type: 'string' }, title: 'Tags', type: 'array', uniqueItems: true },
      total: { exclusiveMinimum: 0, maximum: 1000000, title: 'Total', type: 'number' },
      notes: { anyOf: [{ maxLength: 10, type: 'string' }, { type: 'null' }], default: null, title: 'Notes' },
    },
    required: ['invoice_number', 'issued', 'customer_email', 'currency', 'items', 'total'],
    title: 'Invoice',
    type: 'object',
  },
  zodFunctionCall: {
    type: 'object',
    properties: {
      name: { type: 'string', const: 'get_weather' },
      arguments: {
        type: 'object',
        properties: {
          location: { type: 'string', minLength: 1, maxLength: 12 },
          unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
          days: { type: 'integer', minimum: 1, maximum: 7 },
        },
        required: ['location', 'unit'],
        additionalProperties: false,
      },
    },
    required: ['name', 'arguments'],
    additionalProperties: false,
    $schema: 'http://json-schema.org/draft-07/schema#',
  },
  zodDiscriminatedUnion: {
    anyOf: [
      { type: 'object', properties: { type: { type: 'string', const: 'text' }, body: { type: 'string', maxLength: 6 } }, required: ['type', 'body'], additionalProperties: false },
      { type: 'object', properties: { type: { type: 'string', const: 'image' }, url: { type: 'string', format: 'uri', maxLength: 30 } }, required: ['type', 'url'], additionalProperties: false },
    ],
    $schema: 'http://json-schema.org/draft-07/schema#',
  },
  zodIntersection: {
    allOf: [
      { type: 'object', properties: { id: { type: 'integer', minimum: 1, maximum: 999 } }, required: ['id'] },
      { type: 'object', properties: { label: { type: 'string', maxLength: 5 }, id: { type: 'integer', maximum: 50 } }, required: ['label'] },
    ],
  },
  anyOfWithSiblings: {
    type: 'object',
    properties: { kind: { enum: ['a', 'b'] }, x: { type: 'integer', minimum: 0, maximum: 9 } },
    required: ['kind'],
    additionalProperties: false,
    anyOf: [{ required: ['x'] }, { properties: { kind: { const: 'b' } } }],
  },
  refWithSiblings: { $defs: { base: { type: 'object', properties: { a: { type: 'boolean' } } } }, $ref: '#/$defs/base', required: ['a'] },
  fractionalBounds: {
    type: 'object',
    properties: {
      ratio: { type: 'number', minimum: 0.5, maximum: 99.95 },
      small: { type: 'number', exclusiveMinimum: -1.25, exclusiveMaximum: 0.001 },
      temp: { type: 'number', minimum: -273.15, maximum: 1e3 },
    },
    required: ['ratio', 'small', 'temp'],
    additionalProperties: false,
  },
  pydanticStrSet: { items: { type: 'string', maxLength: 6 }, title: 'Labels', type: 'array', uniqueItems: true, maxItems: 4 },
  intSet: { type: 'array', items: { type: 'integer', minimum: 1, maximum: 6 }, uniqueItems: true, minItems: 2 },
  minPropsBeyondDeclared: { type: 'object', properties: { id: { type: 'integer', minimum: 0, maximum: 99 } }, required: ['id'], minProperties: 3, additionalProperties: { type: 'integer', minimum: 0, maximum: 9 } },
  mapMinProperties: { type: 'object', additionalProperties: { type: 'boolean' }, minProperties: 3, maxProperties: 4 },
  patternCode: { type: 'string', pattern: '^[A-Z]{2}-\\d{3,5}$' },
  patternUnanchored: { type: 'string', pattern: 'ab+c', maxLength: 10 },
  patternUnicode: { type: 'object', properties: { w: { type: 'string', pattern: '^(?:[äöü]|\\u00df|x\\.y)+$', maxLength: 4 } }, required: ['w'] },
  patternAlternation: { type: 'array', items: { type: 'string', pattern: '^(yes|no|maybe)$|^\\d+$', maxLength: 6 }, maxItems: 3 },
};

/** Property values generated only with characters outside ASCII (hard for some tokenizers). */
export const NON_ASCII_SCHEMAS = ['enumUnicode', 'constCjk', 'emojiKey'];
