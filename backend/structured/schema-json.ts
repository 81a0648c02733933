// A request's JSON Schema kept as its JSON text. A large body's schema (a 100,000-value enum is
// 1.3 MB) is validated on the JSON parser thread; bringing it to the loop as an object, then
// serialising it there for the grammar cache key and structured-cloning it to the compiler thread,
// cost ~90 ms of loop time and GC. As text it crosses as one string copy, is its own cache key and
// is parsed by the compiler thread. The request's field holds a SchemaJson in the schema's place.
import type { RequestSchemaName } from '../../protocol/index.ts';

export class SchemaJson {
  constructor(readonly json: string) {}
}

/**
 * Schemas at least this long as JSON travel as text (below it, an object costs the loop little).
 * SWITCHBOARD_SCHEMA_TEXT_MIN_CHARS overrides it (tests set it low).
 */
export const SCHEMA_TEXT_MIN_CHARS = Number(process.env.SWITCHBOARD_SCHEMA_TEXT_MIN_CHARS) || 64 * 1024;

/** The object holding a validated request's schema and its key, or null when it has none. */
export function schemaSlot(name: RequestSchemaName, data: unknown): { owner: Record<string, unknown>; key: string } | null {
  const rfOf = (o: unknown) => (o && typeof o === 'object' ? ((o as { response_format?: unknown }).response_format as Record<string, unknown> | undefined) : undefined);
  if (name === 'openai.chat' || name === 'openai.completion') {
    const rf = rfOf(data);
    if (rf?.type === 'json_object' && rf.schema) return { owner: rf, key: 'schema' };
    const js = rf?.type === 'json_schema' ? (rf.json_schema as Record<string, unknown> | undefined) : undefined;
    if (js?.schema) return { owner: js, key: 'schema' };
    return null;
  }
  if (name === 'lorax.generate' || name === 'lorax.generate_stream' || name === 'lorax.compat') {
    const rf = rfOf((data as { parameters?: unknown }).parameters);
    if (rf && rf.type !== 'text' && rf.schema) return { owner: rf, key: 'schema' };
  }
  return null;
}
