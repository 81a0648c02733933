// Stop sequences over streamed text. A stop string may arrive split across tokens, so the
// matcher looks back far enough, and (for APIs that exclude the stop text, like OpenAI) holds
// back any tail that could still become a stop string.
export class StopMatcher {
  private text = '';
  private emitted = 0;
  private readonly longest: number;

  constructor(
    private readonly stops: readonly string[],
    /** true: the stop text is part of the output (LoRAX/TGI); false: cut before it (OpenAI). */
    private readonly includeStop: boolean,
  ) {
    this.longest = Math.max(0, ...stops.map((s) => s.length));
  }

  /** Adds decoded text; returns what can be released now and whether a stop string matched. */
  push(delta: string): { text: string; stopped: boolean } {
    const from = Math.max(0, this.text.length - this.longest + 1);
    this.text += delta;
    let cut = -1;
    for (const s of this.stops) {
      if (!s) continue;
      const at = this.text.indexOf(s, Math.max(0, from - 1));
      if (at >= 0 && (cut < 0 || at + (this.includeStop ? s.length : 0) < cut)) cut = at + (this.includeStop ? s.length : 0);
    }
    if (cut >= 0) {
      this.text = this.text.slice(0, cut);
      return { text: this.release(this.text.length), stopped: true };
    }
    if (this.includeStop) return { text: this.release(this.text.length), stopped: false };
    return { text: this.release(this.text.length - this.heldTail()), stopped: false };
  }

  /** Releases whatever is held back (generation ended without a stop). */
  flush(): string {
    return this.release(this.text.length);
  }

  /** All text released so far (the generated_text). */
  get output(): string {
    return this.text.slice(0, this.emitted);
  }

  private release(upTo: number): string {
    if (upTo <= this.emitted) return '';
    const out = this.text.slice(this.emitted, upTo);
    this.emitted = upTo;
    return out;
  }

  /** Length of the longest suffix of the text that is a proper prefix of some stop string. */
  private heldTail(): number {
    let best = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, this.text.length); n > best; n--) {
        if (this.text.endsWith(s.slice(0, n))) {
          best = n;
          break;
        }
      }
    }
    return best;
  }
}
