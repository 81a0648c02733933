// The CUDA engine's LoRA on lm_head and embed_tokens (issue 17) against the CPU engine on the same
// synthetic PEFT adapters (helpers/lora-extra.ts; the CPU engine itself is checked against the adapters
// merged into the weights in test/engine-lora-extra.test.ts, and both against transformers + PEFT in the
// lora-extra-vs-hf tests). llama and gemma2 (tied head, scaled embeddings, soft-capping), float32 and
// bfloat16: each adapter alone, then all adapters and the base model interleaved in one batch whose
// decode steps replay CUDA graphs, and adapters swapped between slots (the slot tables are rewritten).
// Skipped where no CUDA device works.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Engine, cudaUnavailableReason, loadCudaAddon } from '../../native/engine.ts';
import { openModelDir } from '../../native/model-dir.ts';
import { BLOCK_SIZE, FIXTURES, loadReference, maxAbsDiff, runCases, type Reference, type Result } from '../helpers/hf-reference.ts';
import { casesOf, writeAdapters } from '../helpers/lora-extra.ts';

const cuda = loadCudaAddon();
const skip = cuda ? false : `no CUDA engine here: ${cudaUnavailableReason()}`;

let tmp: string;
before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'sb-lora-extra-gpu-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

for (const modelName of ['llama', 'gemma2']) {
  describe(`${modelName}: CUDA engine's LoRA on lm_head and embed_tokens vs the CPU engine`, { skip }, () => {
    it('agrees in float32 and bfloat16, alone, in a mixed batch and after slot swaps', async () => {
      const model = await openModelDir(path.join(FIXTURES, 'models', modelName));
      const hf = loadReference(modelName);
      const ref: Reference = { prompts: hf.prompts, cases: [] };
      const numBlocks = 4 * hf.prompts.length * Math.ceil((Math.max(...hf.prompts.map((p) => p.ids.length)) + 16) / BLOCK_SIZE);
      const { defs, dirs } = await writeAdapters(model, path.join(tmp, modelName));
      const names = defs.map((d) => d.name);
      const cases = [...names.flatMap((n) => casesOf(ref, n)), ...casesOf(ref, null)];
      const order = cases.map((_, i) => i).sort((x, y) => (x % 4) - (y % 4) || x - y);

      const cpu = await Engine.open(model, { device: 'cpu', numBlocks, blockSize: BLOCK_SIZE, maxAdapters: 4 });
      const slots = new Map<string, number>();
      for (const [i, n] of names.entries()) {
        await cpu.loadAdapterDir(i, dirs.get(n)!);
        slots.set(n, i);
      }
      const want: Result[] = [];
      for (const c of cases) want.push(...(await runCases(cpu, ref, slots, [c])));
      cpu.close();

      for (const dtype of ['float32', 'bfloat16'] as const) {
        const tol = dtype === 'float32' ? 1e-3 : 0.25;
        const gpu = await Engine.open(model, { device: 'cuda', dtype, numBlocks, blockSize: BLOCK_SIZE, maxAdapters: 4 });
        try {
          for (const [i, n] of names.entries()) await gpu.loadAdapterDir(i, dirs.get(n)!);
          let worst = 0;
          const alone: Result[] = [];
          for (const [i, c] of cases.entries()) {
            const [r] = await runCases(gpu, ref, slots, [c]);
            alone.push(r!);
            const d = Math.max(maxAbsDiff(r!.promptLogprobs, want[i]!.promptLogprobs), dtype === 'float32' ? maxAbsDiff(r!.greedyLogprobs, want[i]!.greedyLogprobs) : 0);
            worst = Math.max(worst, d);
            const where = `${dtype} ${c.adapter ?? 'base'} prompt ${c.prompt}`;
            assert.ok(d < tol, `${where}: logprobs differ from the CPU engine's by ${d}`);
            if (dtype === 'float32') {
              assert.deepEqual(r!.greedy, want[i]!.greedy, `${where}: greedy tokens`);
              assert.deepEqual(r!.top5, want[i]!.top5, `${where}: top-5`);
            }
          }
          const graphs = gpu.info().graphSteps;
          const mixed = await runCases(gpu, ref, slots, order.map((i) => cases[i]!));
          let drift = 0;
          order.forEach((ci, j) => {
            drift = Math.max(drift, maxAbsDiff(mixed[j]!.promptLogprobs, alone[ci]!.promptLogprobs), maxAbsDiff(mixed[j]!.greedyLogprobs, alone[ci]!.greedyLogprobs));
            if (dtype === 'float32') assert.deepEqual(mixed[j]!.greedy, alone[ci]!.greedy, `case ${ci}: greedy changed in the mixed batch`);
          });
          assert.ok(drift < (dtype === 'float32' ? 1e-4 : tol), `${dtype}: the mixed batch moved logprobs by ${drift}`);
          const graphSteps = gpu.info().graphSteps - graphs;
          assert.ok(graphSteps > 0, `${dtype}: no decode step of the mixed batch replayed a CUDA graph`);
          // Swap the adapters' slots (tables rewritten under captured graphs), then the same again.
          for (const [i, n] of names.entries()) gpu.unloadAdapter(i);
          const swapped = new Map(names.map((n, i) => [n, names.length - 1 - i]));
          for (const [n, s] of swapped) await gpu.loadAdapterDir(s, dirs.get(n)!);
          const again = await runCases(gpu, ref, swapped, order.map((i) => cases[i]!));
          order.forEach((ci, j) => {
            const d = maxAbsDiff(again[j]!.promptLogprobs, mixed[j]!.promptLogprobs);
            assert.ok(d < (dtype === 'float32' ? 1e-4 : tol), `case ${ci}: after the slot swap logprobs moved by ${d}`);
          });
          console.log(`  ${modelName} ${gpu.info().deviceName}: ${cases.length} cases, worst |CUDA - CPU| = ${worst.toExponential(2)}, mixed-batch drift ${drift.toExponential(2)}, ${graphSteps} graph steps`);
        } finally {
          gpu.close();
        }
      }
    });
  });
}
