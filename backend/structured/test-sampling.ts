// Random members of an automaton's language, for the structured-output property tests
// (compile.test.ts, features.test.ts): every sample must parse and validate.
import type { LazyDfa } from './automaton.ts';

/** A random byte string of the automaton's language (null if it ran past maxLen). */
export function sample(dfa: LazyDfa, rand: () => number, maxLen = 4000): Uint8Array | null {
  const byClass: number[][] = Array.from({ length: dfa.numClasses }, () => []);
  for (let b = 0; b < 256; b++) byClass[dfa.classOf[b]!]!.push(b);
  const out: number[] = [];
  let s = dfa.start;
  while (out.length < maxLen) {
    dfa.expand(s);
    const C = dfa.numClasses;
    const moves: number[] = [];
    for (let c = 0; c < C; c++) if (dfa.trans[s * C + c]! >= 0) moves.push(c);
    if (dfa.accepting[s] && (moves.length === 0 || rand() < 0.3)) return Uint8Array.from(out);
    const c = moves[Math.floor(rand() * moves.length)]!;
    const bytes = byClass[c]!;
    const b = bytes[Math.floor(rand() * bytes.length)]!;
    out.push(b);
    s = dfa.trans[s * C + c]!;
  }
  return null;
}
