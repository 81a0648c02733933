// One CUDA engine against a transformers + PEFT reference (hf-reference.ts), shared by the GPU
// suites (original fixtures, issue 18 families, LoRA on lm_head/embed_tokens): every case alone
// (prompt logprobs within `tol`; in fp32 also top-5, greedy tokens and their logprobs; in 16-bit
// types greedy tokens wherever the reference's margin is clear of the tolerance), then all cases in
// one mixed-adapter batch, which may move nothing beyond fp32 noise (fp32) or `tol` (16-bit).
// `tol` may be per case (cuda-families.test.ts: transformers' own bf16 drift, where it is larger).
import assert from 'node:assert/strict';
import type { Engine } from '../../native/engine.ts';
import { loadAdapters, maxAbsDiff, runCases, type Case, type Reference, type Result } from './hf-reference.ts';

export async function checkCudaAgainstReference(engine: Engine, model: string, ref: Reference, dtype: 'float32' | 'auto', tolerance: number | ((c: Case) => number)): Promise<void> {
  const tolOf = typeof tolerance === 'number' ? () => tolerance : tolerance;
  assert.equal(engine.info().device, 'cuda');
  const slots = await loadAdapters(engine, model, ref);
  let worst = 0;
  let greedyExact = 0;
  const alone: Result[] = [];
  for (const c of ref.cases) {
    const tol = tolOf(c);
    const [r] = await runCases(engine, ref, slots, [c]);
    alone.push(r!);
    const where = `adapter ${c.adapter ?? 'none'}, prompt ${c.prompt}`;
    const d = maxAbsDiff(r!.promptLogprobs, c.prompt_logprobs);
    worst = Math.max(worst, d);
    assert.ok(d < tol, `${where}: prompt logprobs differ by ${d}`);
    const same = r!.greedy.every((t, i) => t === c.greedy.ids[i]);
    if (same) greedyExact++;
    // A 16-bit engine may flip a near tie; fp32 may not, nor may any type on a clear margin.
    if (dtype === 'float32' || c.greedy.min_margin > 4 * tol) assert.ok(same, `${where}: greedy tokens ${r!.greedy} vs ${c.greedy.ids}`);
    if (dtype === 'float32') {
      assert.deepEqual(r!.top5, c.top5.ids, `${where}: top-5`);
      const dg = maxAbsDiff(r!.greedyLogprobs, c.greedy.logprobs);
      assert.ok(dg < tol, `${where}: greedy logprobs differ by ${dg}`);
    }
  }
  const graphsBefore = engine.info().graphSteps;
  const mixed = await runCases(engine, ref, slots, ref.cases);
  let batchDiff = 0;
  mixed.forEach((r, i) => {
    batchDiff = Math.max(batchDiff, maxAbsDiff(r.promptLogprobs, alone[i]!.promptLogprobs), maxAbsDiff(r.greedyLogprobs, alone[i]!.greedyLogprobs));
    if (dtype === 'float32') assert.deepEqual(r.greedy, alone[i]!.greedy, `case ${i}: greedy changed in the mixed batch`);
  });
  assert.ok(batchDiff < (dtype === 'float32' ? 1e-4 : Math.max(...ref.cases.map(tolOf))), `mixed batch moved logprobs by ${batchDiff}`);
  console.log(
    `  ${model} ${engine.info().deviceName}: ${ref.cases.length} cases, worst |logprob - HF| = ${worst.toExponential(2)}, ` +
      `greedy exact ${greedyExact}/${ref.cases.length}, mixed-batch drift ${batchDiff.toExponential(2)}, graph steps in the mixed run ${engine.info().graphSteps - graphsBefore}`,
  );
}
