// The CUDA engine on quantized bases (test/fixtures/models-quant: the dense llama variants and the MoE ones), weights kept packed on the device
// (kernels/quant_gemm.cuh), against transformers + PEFT on the same dequantised weights, on the GPU machine
// (skipped where no CUDA device works). float32 is held to the CPU engine's bound (1e-3); the checkpoint's
// 16-bit type to the bound cuda-engine.test.ts uses for llama (0.25), greedy tokens compared wherever the
// reference's margin is not a near tie. All cases in one batch send the prompts (381 rows for llama) through the
// tensor-core path (dequantised tile + cuBLAS) and the decode steps (12 rows) through the quantized GEMV;
// each case alone sends its prompt (<= 60 rows) through the GEMV too. Device memory: the engine's weight
// bytes must be the packed size, not the 16-bit size, and are printed beside it.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Engine, cudaUnavailableReason, loadCudaAddon } from '../../native/engine.ts';
import { openModelDir, type ModelDir } from '../../native/model-dir.ts';
import { BLOCK_SIZE, FIXTURES, blocksPerCase, loadAdapters, maxAbsDiff, runCases, type Case, type Result } from '../helpers/hf-reference.ts';
import { QUANT, quantVariants } from '../helpers/quant-reference.ts';

const cuda = loadCudaAddon();
const skip = cuda ? false : `no CUDA engine here: ${cudaUnavailableReason()}`;
const variants = quantVariants();

const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** Device bytes of the weights the engine holds as they are (not quantized) at `es` bytes an element. */
function plainBytes(model: ModelDir, es: number): number {
  return model.spec.tensors.filter((t) => !t.packed).reduce((n, t) => n + numel(t.shape) * es, 0);
}

for (const dtype of ['float32', 'auto'] as const) {
  const es = dtype === 'float32' ? 4 : 2;
  for (const { name, model: base, dir, quantize, ref } of variants) {
    describe(`quantized ${base} (${name}): CUDA engine (${dtype}) vs transformers + PEFT`, { skip }, () => {
      // bf16: the MoE references carry transformers' own bf16 drift per case (a near-tied router choice that bf16
      // rounding flips moves logprobs by tenths); a case may be as far from float32 as that run was.
      const tolOf = (c: Case) => (dtype === 'float32' ? 1e-3 : Math.max(0.25, (c as Case & { bf16_drift?: number }).bf16_drift ?? 0));
      const open = async () => {
        const model = await openModelDir(dir !== null ? join(QUANT, dir) : join(FIXTURES, 'models', base), { quantize: quantize ?? undefined });
        const engine = await Engine.open(model, { device: 'cuda', dtype, numBlocks: ref.cases.length * blocksPerCase(ref), blockSize: BLOCK_SIZE, maxAdapters: 4 });
        return { model, engine };
      };
      const compare = (results: Result[], how: string) => {
        let worst = 0;
        results.forEach((r, i) => {
          const c = ref.cases[i]!;
          const where = `${name} (${how}), adapter ${c.adapter ?? 'none'}, prompt ${c.prompt}`;
          const d = Math.max(maxAbsDiff(r.promptLogprobs, c.prompt_logprobs), maxAbsDiff(r.top5Logprobs, c.top5.logprobs));
          const tol = tolOf(c);
          worst = Math.max(worst, d);
          assert.ok(d < tol, `${where}: logprobs differ by ${d} (bound ${tol})`);
          if (dtype === 'float32' || c.greedy.min_margin > 4 * tol) assert.deepEqual(r.greedy, c.greedy.ids, `${where}: greedy tokens`);
        });
        return worst;
      };

      it('matches every case, batched and alone, with the projections packed on the device', async () => {
        const { model, engine } = await open();
        try {
          const slots = await loadAdapters(engine, base, ref);
          const batched = compare(await runCases(engine, ref, slots, ref.cases), 'batched');
          const alone: Result[] = [];
          for (const c of ref.cases) alone.push(...(await runCases(engine, ref, slots, [c])));
          const single = compare(alone, 'alone');
          const q = model.quantization!;
          const weights = engine.info().weightBytes;
          const plain = plainBytes(model, es);
          const as16 = plain + q.quantizedValues * es;
          // Packed: at most the packed arrays (stacked q/k/v share one lookup table) beside the plain tensors.
          assert.ok(weights <= plain + q.packedBytes, `${name}: ${weights} weight bytes on the device, packed would be <= ${plain + q.packedBytes}`);
          console.log(`  ${name} ${dtype}: ${ref.cases.length} cases, worst |logprob - HF| ${batched.toExponential(2)} batched, ${single.toExponential(2)} alone; ` +
            `weights ${(weights / 1024).toFixed(1)} KiB on the device (projections ${((weights - plain) / 1024).toFixed(1)} KiB packed, ${((as16 - plain) / 1024).toFixed(1)} KiB at ${8 * es} bits)`);
        } finally {
          engine.close();
        }
      });
    });
  }
}
