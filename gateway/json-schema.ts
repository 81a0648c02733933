// Checks a caller's JSON Schema (response_format, tool parameters) before anything reaches a GPU:
// size and nesting limits, only local `$ref`s that resolve, and validity against the JSON Schema
// meta-schema, using @cfworker/json-schema (pure JS, runs on Workers as on Node).
//
// The meta-schema is draft-07's (one self-contained document) plus the 2019-09/2020-12 keywords
// clients actually send ($defs, prefixItems, dependentRequired, ...), so both dialects are checked
// keyword by keyword; unknown keywords are allowed, as the spec says.
import { Validator, type Schema } from '@cfworker/json-schema';
import { utf8Length } from './lib/bytes.ts';

export interface SchemaLimits {
  /** Serialized size in bytes. */
  maxBytes: number;
  /** Nesting depth of objects/arrays. */
  maxDepth: number;
}

export const DEFAULT_SCHEMA_LIMITS: SchemaLimits = { maxBytes: 64 * 1024, maxDepth: 32 };

const META: Schema = {
  $id: 'https://switchboard.invalid/meta-schema',
  definitions: {
    schemaArray: { type: 'array', minItems: 1, items: { $ref: '#' } },
    nonNegativeInteger: { type: 'integer', minimum: 0 },
    simpleTypes: { enum: ['array', 'boolean', 'integer', 'null', 'number', 'object', 'string'] },
    stringArray: { type: 'array', items: { type: 'string' }, uniqueItems: true },
    schemaMap: { type: 'object', additionalProperties: { $ref: '#' } },
  },
  type: ['object', 'boolean'],
  properties: {
    $id: { type: 'string' },
    $schema: { type: 'string' },
    $ref: { type: 'string' },
    $anchor: { type: 'string', pattern: '^[A-Za-z_][-A-Za-z0-9._]*$' },
    $comment: { type: 'string' },
    $defs: { $ref: '#/definitions/schemaMap' },
    definitions: { $ref: '#/definitions/schemaMap' },
    title: { type: 'string' },
    description: { type: 'string' },
    readOnly: { type: 'boolean' },
    writeOnly: { type: 'boolean' },
    deprecated: { type: 'boolean' },
    examples: { type: 'array' },
    multipleOf: { type: 'number', exclusiveMinimum: 0 },
    maximum: { type: 'number' },
    exclusiveMaximum: { type: ['number', 'boolean'] },
    minimum: { type: 'number' },
    exclusiveMinimum: { type: ['number', 'boolean'] },
    maxLength: { $ref: '#/definitions/nonNegativeInteger' },
    minLength: { $ref: '#/definitions/nonNegativeInteger' },
    pattern: { type: 'string', format: 'regex' },
    additionalItems: { $ref: '#' },
    items: { anyOf: [{ $ref: '#' }, { $ref: '#/definitions/schemaArray' }] },
    prefixItems: { $ref: '#/definitions/schemaArray' },
    unevaluatedItems: { $ref: '#' },
    maxItems: { $ref: '#/definitions/nonNegativeInteger' },
    minItems: { $ref: '#/definitions/nonNegativeInteger' },
    uniqueItems: { type: 'boolean' },
    contains: { $ref: '#' },
    minContains: { $ref: '#/definitions/nonNegativeInteger' },
    maxContains: { $ref: '#/definitions/nonNegativeInteger' },
    maxProperties: { $ref: '#/definitions/nonNegativeInteger' },
    minProperties: { $ref: '#/definitions/nonNegativeInteger' },
    required: { $ref: '#/definitions/stringArray' },
    additionalProperties: { $ref: '#' },
    unevaluatedProperties: { $ref: '#' },
    properties: { $ref: '#/definitions/schemaMap' },
    patternProperties: { type: 'object', additionalProperties: { $ref: '#' }, propertyNames: { format: 'regex' } },
    dependencies: { type: 'object', additionalProperties: { anyOf: [{ $ref: '#' }, { $ref: '#/definitions/stringArray' }] } },
    dependentSchemas: { $ref: '#/definitions/schemaMap' },
    dependentRequired: { type: 'object', additionalProperties: { $ref: '#/definitions/stringArray' } },
    propertyNames: { $ref: '#' },
    enum: { type: 'array' },
    type: {
      anyOf: [
        { $ref: '#/definitions/simpleTypes' },
        { type: 'array', items: { $ref: '#/definitions/simpleTypes' }, minItems: 1, uniqueItems: true },
      ],
    },
    format: { type: 'string' },
    contentMediaType: { type: 'string' },
    contentEncoding: { type: 'string' },
    if: { $ref: '#' },
    then: { $ref: '#' },
    else: { $ref: '#' },
    allOf: { $ref: '#/definitions/schemaArray' },
    anyOf: { $ref: '#/definitions/schemaArray' },
    oneOf: { $ref: '#/definitions/schemaArray' },
    not: { $ref: '#' },
  },
};

let metaValidator: Validator | null = null;

/** Depth of nested objects/arrays (a scalar is 0). Stops counting past `cap`. */
function depthOf(value: unknown, cap: number, d = 0): number {
  if (d > cap || value === null || typeof value !== 'object') return d;
  let max = d + 1;
  for (const v of Array.isArray(value) ? value : Object.values(value)) {
    if (v !== null && typeof v === 'object') max = Math.max(max, depthOf(v, cap, d + 1));
    if (max > cap) break;
  }
  return max;
}

function pointer(root: unknown, ptr: string): boolean {
  if (ptr === '') return true;
  if (!ptr.startsWith('/')) return false;
  let cur: unknown = root;
  for (const raw of ptr.slice(1).split('/')) {
    const key = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
    if (cur === null || typeof cur !== 'object' || !(key in (cur as object))) return false;
    cur = (cur as Record<string, unknown>)[key];
  }
  return true;
}

function collect(value: unknown, visit: (node: Record<string, unknown>, path: string) => void, path = '#'): void {
  if (value === null || typeof value !== 'object') return;
  if (Array.isArray(value)) {
    value.forEach((v, i) => collect(v, visit, `${path}/${i}`));
    return;
  }
  visit(value as Record<string, unknown>, path);
  for (const [k, v] of Object.entries(value)) collect(v, visit, `${path}/${k.replace(/~/g, '~0').replace(/\//g, '~1')}`);
}

/** Problem with the schema in one sentence, or null when it is acceptable. */
export function checkJsonSchema(schema: unknown, limits: SchemaLimits = DEFAULT_SCHEMA_LIMITS): string | null {
  if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) return 'must be a JSON object (a JSON Schema)';
  const bytes = utf8Length(JSON.stringify(schema));
  if (bytes > limits.maxBytes) return `is too large (${bytes} bytes; at most ${limits.maxBytes})`;
  const depth = depthOf(schema, limits.maxDepth);
  if (depth > limits.maxDepth) return `is nested too deeply (more than ${limits.maxDepth} levels)`;
  const anchors = new Set<string>();
  const refs: Array<{ ref: string; at: string }> = [];
  collect(schema, (node, at) => {
    if (typeof node.$anchor === 'string') anchors.add(node.$anchor);
    for (const k of ['$ref', '$dynamicRef', '$recursiveRef']) {
      if (typeof node[k] === 'string') refs.push({ ref: node[k] as string, at });
    }
  });
  for (const { ref, at } of refs) {
    if (!ref.startsWith('#')) return `${at}: only local references ("#/...") are allowed, got $ref "${ref}"`;
    const frag = ref.slice(1);
    const ok = frag.startsWith('/') || frag === '' ? pointer(schema, frag) : anchors.has(frag);
    if (!ok) return `${at}: $ref "${ref}" does not resolve inside the schema`;
  }
  metaValidator ??= new Validator(META, '7', false);
  const r = metaValidator.validate(schema);
  if (!r.valid) {
    // The most specific complaint: the deepest instance location, skipping the "X does not match" wrappers.
    const errs = r.errors.filter((e) => !['properties', 'additionalProperties', 'items', 'anyOf', '$ref', 'allOf'].includes(e.keyword));
    const e = (errs.length ? errs : r.errors).reduce((a, b) => (b.instanceLocation.length > a.instanceLocation.length ? b : a));
    return `is not a valid JSON Schema: at ${e.instanceLocation}: ${e.error}`;
  }
  try {
    // Compile it (and run it once) with the validator the backend's grammar would see.
    new Validator(schema as Schema, '2020-12', true).validate({});
  } catch (err) {
    return `is not a usable JSON Schema: ${(err as Error).message.split('\n')[0]}`;
  }
  return null;
}
