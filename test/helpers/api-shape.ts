// What a well-formed error answer looks like on each API, for black-box tests (fuzz, noisy
// neighbour): LoRAX paths answer `{error: string, error_type: string}`, OpenAI paths (/v1/...,
// /admin/...) `{error: {message: string, type: string, ...}}`. Returns a reason when the body is
// not in its path's shape, null when it is.
export type ApiKind = 'lorax' | 'openai';

export function apiKindOfPath(path: string): ApiKind {
  const p = path.split('?')[0]!;
  return p.startsWith('/v1/') || p === '/v1' || p.startsWith('/admin') ? 'openai' : 'lorax';
}

export function errorShapeProblem(kind: ApiKind, text: string): string | null {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return `not JSON: ${JSON.stringify(text.slice(0, 120))}`;
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return `not a JSON object: ${text.slice(0, 120)}`;
  const e = (body as { error?: unknown }).error;
  if (kind === 'lorax') {
    if (typeof e !== 'string' || e.length === 0) return `LoRAX error without a string "error": ${text.slice(0, 200)}`;
    if (typeof (body as { error_type?: unknown }).error_type !== 'string') return `LoRAX error without "error_type": ${text.slice(0, 200)}`;
    return null;
  }
  if (typeof e !== 'object' || e === null) return `OpenAI error without an "error" object: ${text.slice(0, 200)}`;
  const { message, type } = e as { message?: unknown; type?: unknown };
  if (typeof message !== 'string' || message.length === 0 || typeof type !== 'string') return `OpenAI error without message/type: ${text.slice(0, 200)}`;
  return null;
}

/** The q-quantile (nearest rank) of a sample. */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}
