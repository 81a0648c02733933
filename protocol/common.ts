// Small zod building blocks shared by the LoRAX and OpenAI schemas.
//
// Both APIs treat JSON `null` as "not set": LoRAX's router deserialises into
// serde `Option<T>` (null and absent are the same), and OpenAI SDKs / LangChain
// routinely send `"temperature": null`. Accepting null everywhere and
// normalising it to `undefined` (or to the documented default) means
// consumers of the parsed value only ever check one "unset" state.
import { z } from 'zod';

/**
 * Optional field that also accepts `null`; both come out as `undefined`.
 * Input type: `T | null | undefined` (key optional). Output: `T | undefined`.
 */
export function optional<T extends z.ZodType>(schema: T) {
  return schema
    .nullish()
    .transform((value): z.output<T> | undefined => value ?? undefined)
    .optional();
}

/**
 * Field with a default applied when it is absent or `null`.
 * Input key is optional; output is always `T`. `fallback` may be a thunk so
 * that array/object defaults are never shared between parsed requests.
 */
export function withDefault<T extends z.ZodType>(
  schema: T,
  fallback: z.output<T> | (() => z.output<T>),
) {
  return schema.nullish().transform((value): z.output<T> => {
    if (value !== null && value !== undefined) return value as z.output<T>;
    return typeof fallback === 'function' ? (fallback as () => z.output<T>)() : fallback;
  });
}

/** Non-negative integer counter (token ids, token counts, indices). */
export const Count = z.int().min(0);

/**
 * A JSON Schema given by the caller. We only check that it is a JSON object;
 * compiling it is the server's business (it may reject what it cannot honour).
 */
export const JsonSchemaObject = z.record(z.string(), z.unknown(), {
  error: 'must be a JSON object (a JSON Schema)',
});
export type JsonSchemaObject = z.infer<typeof JsonSchemaObject>;
