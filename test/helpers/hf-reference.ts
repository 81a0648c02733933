// Runs the transformers + PEFT reference cases (test/fixtures/reference/<model>.json) through an
// engine: prefill with prompt logprobs and top-5, then greedy decoding, every case one at a time
// or all in one batch.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Engine, SeqInput } from '../../native/engine.ts';

export const FIXTURES = join(import.meta.dirname, '..', 'fixtures');
export const GREEDY_STEPS = 16;
export const BLOCK_SIZE = 16;

export interface Case {
  adapter: string | null;
  prompt: number;
  prompt_logprobs: number[];
  top5: { ids: number[]; logprobs: number[] };
  greedy: { ids: number[]; logprobs: number[]; min_margin: number };
}

export interface Reference {
  prompts: { text: string; ids: number[] }[];
  cases: Case[];
}

export interface Result {
  promptLogprobs: number[];
  top5: number[];
  top5Logprobs: number[];
  greedy: number[];
  greedyLogprobs: number[];
}

export function loadReference(model: string): Reference {
  return JSON.parse(readFileSync(join(FIXTURES, 'reference', `${model}.json`), 'utf-8')) as Reference;
}

export const adaptersOf = (ref: Reference) => [...new Set(ref.cases.map((c) => c.adapter).filter((a): a is string => a !== null))];

export function blocksPerCase(ref: Reference): number {
  return Math.ceil((Math.max(...ref.prompts.map((p) => p.ids.length)) + GREEDY_STEPS) / BLOCK_SIZE);
}

/** Loads every adapter the reference uses into its own slot. */
export async function loadAdapters(engine: Engine, model: string, ref: Reference): Promise<Map<string, number>> {
  const slots = new Map<string, number>();
  for (const [i, a] of adaptersOf(ref).entries()) {
    await engine.loadAdapterDir(i, join(FIXTURES, 'adapters', model, a));
    slots.set(a, i);
  }
  return slots;
}

export async function runCases(engine: Engine, ref: Reference, slots: Map<string, number>, cases: Case[]): Promise<Result[]> {
  const per = blocksPerCase(ref);
  const state = cases.map((c, i) => ({
    c,
    table: Array.from({ length: per }, (_, b) => i * per + b),
    pos: 0,
    pending: ref.prompts[c.prompt]!.ids,
    result: { promptLogprobs: [], top5: [], top5Logprobs: [], greedy: [], greedyLogprobs: [] } as Result,
  }));
  for (let step = 0; step < GREEDY_STEPS; step++) {
    const batch: SeqInput[] = state.map((s) => ({
      tokens: s.pending,
      position: s.pos,
      blockTable: s.table,
      adapterSlot: s.c.adapter === null ? -1 : slots.get(s.c.adapter)!,
      promptLogprobs: step === 0,
      topLogprobs: step === 0 ? 5 : 0,
    }));
    const outs = await engine.step(batch);
    state.forEach((s, i) => {
      const o = outs[i]!;
      if (step === 0) {
        s.result.promptLogprobs = Array.from(o.promptLogprobs!);
        s.result.top5 = Array.from(o.top!.ids);
        s.result.top5Logprobs = Array.from(o.top!.logprobs);
      }
      s.result.greedy.push(o.token);
      s.result.greedyLogprobs.push(o.logprob);
      s.pos += s.pending.length;
      s.pending = [o.token];
    });
  }
  return state.map((s) => s.result);
}

export function maxAbsDiff(a: number[], b: number[]): number {
  if (a.length !== b.length) return Infinity;
  return a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]!)), 0);
}
