// An independent JSON Schema validator for structured-output tests: ajv (draft 2020-12) with
// ajv-formats, which shares no code with the grammar compiler, so a grammar bug cannot hide
// behind the same misreading of a keyword on both sides.
import { createRequire } from 'node:module';
import type { ValidateFunction } from 'ajv';

const require = createRequire(import.meta.url);
// CommonJS packages: their default exports under ESM interop.
const Ajv2020 = require('ajv/dist/2020.js').default as typeof import('ajv/dist/2020.js').default;
const addFormats = require('ajv-formats').default as typeof import('ajv-formats').default;

const ajv = new Ajv2020({ strict: false, validateSchema: false, allErrors: true });
addFormats(ajv);

const compiled = new Map<string, ValidateFunction>();

/** Validates `value` against `schema`: null when valid, else ajv's errors as one line. */
export function validationErrors(schema: unknown, value: unknown): string | null {
  const key = JSON.stringify(schema);
  let v = compiled.get(key);
  if (!v) {
    // Draft-07 schemas name their dialect; ajv's 2020 instance checks them with the same keywords.
    const { $schema: _, ...rest } = schema as Record<string, unknown>;
    v = ajv.compile(typeof schema === 'boolean' ? schema : rest);
    compiled.set(key, v);
  }
  return v(value) ? null : ajv.errorsText(v.errors);
}
