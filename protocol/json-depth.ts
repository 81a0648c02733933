// The nesting depth of a JSON text, found by one linear scan of its characters before JSON.parse
// (and everything after it that recurses: zod, JSON.stringify, schema checks) ever sees the value.
// A 100,000-level `[[[[...` body is refused here in microseconds instead of overflowing a stack.

/** Deepest nesting of objects/arrays a request body may have (a JSON Schema inside counts too). */
export const MAX_JSON_DEPTH = 100;

/**
 * Whether `text` nests objects/arrays deeper than `max` (brackets inside strings do not count;
 * escapes are skipped). Malformed JSON is left for JSON.parse to describe.
 */
export function jsonTooDeep(text: string, max = MAX_JSON_DEPTH): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (inString) {
      if (ch === 0x5c) i++; // backslash: skip the escaped character
      else if (ch === 0x22) inString = false;
    } else if (ch === 0x22) {
      inString = true;
    } else if (ch === 0x5b || ch === 0x7b) {
      if (++depth > max) return true;
    } else if (ch === 0x5d || ch === 0x7d) {
      depth--;
    }
  }
  return false;
}
