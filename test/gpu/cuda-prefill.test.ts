// The tensor-core prefill attention (kernels/prefill_attention.cuh) inside the CUDA engine: a
// 300-token prompt, whole and in chunks that start off a tile boundary, in bf16. Truth is the same
// engine in float32 (paged kernel, held to transformers' numbers in cuda-engine.test.ts); the
// tensor-core path must land as close to it as the bf16 paged path does (SWITCHBOARD_PREFILL_ATTENTION=0).
// mistral's fixture has a 16-token sliding window. With an adapter, prompt chunks of 256 rows or
// more run their LoRA as cuBLAS GEMMs and shorter ones through SGMV: in float32 a whole prompt and
// the same prompt in 50-row chunks must agree. Skipped where no CUDA engine works (CI).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Engine, cudaUnavailableReason, loadCudaAddon } from '../../native/engine.ts';
import { BLOCK_SIZE, FIXTURES, loadAdapters, loadReference, maxAbsDiff } from '../helpers/hf-reference.ts';

const cuda = loadCudaAddon();
const skip = cuda ? false : `no CUDA engine here: ${cudaUnavailableReason()}`;
const N = 300;

async function promptLogprobs(engine: Engine, prompt: number[], chunks: number[], adapterSlot = -1): Promise<number[][]> {
  const table = Array.from({ length: Math.ceil(N / BLOCK_SIZE) + 1 }, (_, b) => b);
  const out: number[][] = [];
  let pos = 0;
  for (const n of chunks) {
    const [o] = await engine.step([{ tokens: prompt.slice(pos, pos + n), position: pos, blockTable: table, promptLogprobs: true, adapterSlot }]);
    out.push(Array.from(o!.promptLogprobs!));
    pos += n;
  }
  return out;
}

const abs = (a: number[], b: number[]) => a.map((x, i) => Math.abs(x - b[i]!));

for (const model of ['llama', 'mistral']) {
  describe(`${model}: prefill attention on tensor cores (bf16)`, { skip }, () => {
    it('is as close to float32 as the paged kernel, on a long prompt whole and chunked', async () => {
      const open = (dtype: 'float32' | 'bfloat16', prefillAttention = true) =>
        Engine.open(join(FIXTURES, 'models', model), { device: 'cuda', dtype, prefillAttention, numBlocks: Math.ceil(N / BLOCK_SIZE) + 1, blockSize: BLOCK_SIZE, maxAdapters: 1 });
      const f32 = await open('float32', false);
      const bf16 = await open('bfloat16');
      const bf16Paged = await open('bfloat16', false);
      try {
        const vocab = bf16.model.spec.vocabSize;
        const prompt = Array.from({ length: N }, (_, i) => (i * 7919 + 13) % vocab);
        const fast: number[] = [];
        const paged: number[] = [];
        for (const chunks of [[N], [100, 100, 100], [37, 200, 63]]) {
          const truth = await promptLogprobs(f32, prompt, chunks);
          const a = await promptLogprobs(bf16, prompt, chunks);
          const b = await promptLogprobs(bf16Paged, prompt, chunks);
          truth.forEach((t, i) => {
            assert.equal(a[i]!.length, chunks[i]! - 1);
            assert.ok(a[i]!.every(Number.isFinite), `chunk ${i}: non-finite logprob`);
            fast.push(...abs(a[i]!, t));
            paged.push(...abs(b[i]!, t));
          });
        }
        const mean = (v: number[]) => v.reduce((x, y) => x + y, 0) / v.length;
        const [fm, pm, fw, pw] = [mean(fast), mean(paged), Math.max(...fast), Math.max(...paged)];
        console.log(`  ${model}: ${N}-token prompt vs float32, whole and chunked: tensor cores mean ${fm.toExponential(2)} worst ${fw.toExponential(2)}; paged mean ${pm.toExponential(2)} worst ${pw.toExponential(2)}`);
        assert.ok(fm <= 1.5 * pm + 1e-3, `mean error ${fm} vs the paged kernel's ${pm}`);
        assert.ok(fw <= 1.5 * pw + 1e-2, `worst error ${fw} vs the paged kernel's ${pw}`);
      } finally {
        f32.close();
        bf16.close();
        bf16Paged.close();
      }
    });
    it('runs long prompt chunks with an adapter through GEMMs, as SGMV would', async () => {
      const ref = loadReference(model);
      const open = (dtype: 'float32' | 'bfloat16') =>
        Engine.open(join(FIXTURES, 'models', model), { device: 'cuda', dtype, numBlocks: 2 * (Math.ceil(N / BLOCK_SIZE) + 1), blockSize: BLOCK_SIZE, maxAdapters: 16 });
      const f32 = await open('float32');
      const bf16 = await open('bfloat16');
      try {
        const slots = await loadAdapters(f32, model, ref);
        await loadAdapters(bf16, model, ref);
        const vocab = f32.model.spec.vocabSize;
        const prompt = Array.from({ length: N }, (_, i) => (i * 7919 + 13) % vocab);
        const small = Array.from({ length: N / 50 }, () => 50);
        for (const slot of slots.values()) {
          const base = (await promptLogprobs(f32, prompt, [N])).flat();
          const whole = (await promptLogprobs(f32, prompt, [N], slot)).flat();
          const chunked = await promptLogprobs(f32, prompt, small, slot);
          // Chunks lose the logprob of each chunk's first token: compare the rows both have.
          const wholeRows = whole.filter((_, j) => (j + 1) % 50 !== 0);
          const d = maxAbsDiff(wholeRows, chunked.flat());
          assert.ok(d < 1e-4, `slot ${slot}: whole (GEMM LoRA) vs 50-row chunks (SGMV) differ by ${d}`);
          assert.ok(maxAbsDiff(whole, base) > 1e-3, `slot ${slot}: the adapter changed nothing`);
          const half = (await promptLogprobs(bf16, prompt, [N], slot)).flat();
          const e = maxAbsDiff(half, whole);
          console.log(`  ${model} adapter slot ${slot}: ${N}-token prompt, GEMM LoRA vs SGMV (fp32) ${d.toExponential(2)}; bf16 vs fp32 ${e.toExponential(2)}`);
          assert.ok(e < 0.25, `slot ${slot}: bf16 with GEMM LoRA differs from fp32 by ${e}`);
        }
        // A long chunk's path is its own choice: beside a short prompt of the same adapter (one SGMV
        // segment if they merged) its numbers stay exactly what they are alone.
        const slot = [...slots.values()][0]!;
        const per = Math.ceil(N / BLOCK_SIZE) + 1;
        const table = (k: number) => Array.from({ length: per }, (_, b) => k * per + b);
        const long = { tokens: prompt, position: 0, blockTable: table(0), promptLogprobs: true, adapterSlot: slot };
        const [alone] = await bf16.step([long]);
        const [, beside] = await bf16.step([{ ...long, tokens: prompt.slice(0, 20), blockTable: table(1) }, long]);
        assert.deepEqual(Array.from(beside!.promptLogprobs!), Array.from(alone!.promptLogprobs!));
      } finally {
        f32.close();
        bf16.close();
      }
    });
  });
}
