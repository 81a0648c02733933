// The tensor-core prefill attention (kernels/prefill_attention.cuh) inside the CUDA engine: a
// 300-token prompt, whole and in chunks that start off a tile boundary, in bf16. Truth is the same
// engine in float32 (paged kernel, held to transformers' numbers in cuda-engine.test.ts); the
// tensor-core path must land as close to it as the bf16 paged path does (SWITCHBOARD_PREFILL_ATTENTION=0).
// mistral's fixture has a 16-token sliding window. Skipped where no CUDA engine works (CI).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Engine, cudaUnavailableReason, loadCudaAddon } from '../../native/engine.ts';
import { BLOCK_SIZE, FIXTURES } from '../helpers/hf-reference.ts';

const cuda = loadCudaAddon();
const skip = cuda ? false : `no CUDA engine here: ${cudaUnavailableReason()}`;
const N = 300;

async function promptLogprobs(engine: Engine, prompt: number[], chunks: number[], paged: boolean): Promise<number[][]> {
  if (paged) process.env.SWITCHBOARD_PREFILL_ATTENTION = '0';
  try {
    const table = Array.from({ length: Math.ceil(N / BLOCK_SIZE) + 1 }, (_, b) => b);
    const out: number[][] = [];
    let pos = 0;
    for (const n of chunks) {
      const [o] = await engine.step([{ tokens: prompt.slice(pos, pos + n), position: pos, blockTable: table, promptLogprobs: true }]);
      out.push(Array.from(o!.promptLogprobs!));
      pos += n;
    }
    return out;
  } finally {
    delete process.env.SWITCHBOARD_PREFILL_ATTENTION;
  }
}

const abs = (a: number[], b: number[]) => a.map((x, i) => Math.abs(x - b[i]!));

for (const model of ['llama', 'mistral']) {
  describe(`${model}: prefill attention on tensor cores (bf16)`, { skip }, () => {
    it('is as close to float32 as the paged kernel, on a long prompt whole and chunked', async () => {
      const open = (dtype: 'float32' | 'bfloat16') =>
        Engine.open(join(FIXTURES, 'models', model), { device: 'cuda', dtype, numBlocks: Math.ceil(N / BLOCK_SIZE) + 1, blockSize: BLOCK_SIZE, maxAdapters: 1 });
      const f32 = await open('float32');
      const bf16 = await open('bfloat16');
      try {
        const vocab = bf16.model.spec.vocabSize;
        const prompt = Array.from({ length: N }, (_, i) => (i * 7919 + 13) % vocab);
        const fast: number[] = [];
        const paged: number[] = [];
        for (const chunks of [[N], [100, 100, 100], [37, 200, 63]]) {
          const truth = await promptLogprobs(f32, prompt, chunks, true);
          const a = await promptLogprobs(bf16, prompt, chunks, false);
          const b = await promptLogprobs(bf16, prompt, chunks, true);
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
      }
    });
  });
}
