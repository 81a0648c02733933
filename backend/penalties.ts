// OpenAI's frequency and presence penalties and logit_bias, as one additive bias per token that
// the engine adds to the logits before temperature (SeqInput.bias). OpenAI's definition:
//   logit[t] -= presence_penalty * (count[t] > 0) + frequency_penalty * count[t]
// where count[t] is how often t was generated so far in this completion (prompt tokens do not
// count, as in OpenAI's API and vLLM), then logit_bias[t] is added.

export interface Penalties {
  frequency: number;
  presence: number;
  /** OpenAI's logit_bias, token id to bias (-100..100). */
  logitBias: ReadonlyMap<number, number> | null;
}

/** Whether a request's penalties change anything (none: the engine gets no bias list). */
export function penaltiesActive(p: Penalties | null | undefined): p is Penalties {
  return !!p && (p.frequency !== 0 || p.presence !== 0 || (p.logitBias !== null && p.logitBias.size > 0));
}

/**
 * Counts generated tokens incrementally: a sequence's token list only grows (a preempted
 * sequence keeps it), so each step adds the tokens appended since the last one.
 */
export class TokenCounts {
  readonly counts = new Map<number, number>();
  private seen: number;

  /** `from`: the first generated position (the prompt's length). */
  constructor(from: number) {
    this.seen = from;
  }

  update(tokens: readonly number[]): this {
    for (; this.seen < tokens.length; this.seen++) {
      const t = tokens[this.seen]!;
      this.counts.set(t, (this.counts.get(t) ?? 0) + 1);
    }
    return this;
  }
}

/** The engine's bias list for the next token: one entry per token touched, zeros left out. */
export function biasFor(p: Penalties, counts: ReadonlyMap<number, number>): { tokens: Int32Array; values: Float32Array } {
  const bias = new Map<number, number>();
  if (p.frequency !== 0 || p.presence !== 0) {
    for (const [t, c] of counts) if (c > 0) bias.set(t, -(p.presence + p.frequency * c));
  }
  if (p.logitBias) for (const [t, b] of p.logitBias) bias.set(t, (bias.get(t) ?? 0) + b);
  const entries = [...bias].filter(([, v]) => v !== 0);
  return { tokens: Int32Array.from(entries, ([t]) => t), values: Float32Array.from(entries, ([, v]) => v) };
}
