// Engine options: every default (environment variables included) is filled in once, at open, and
// an explicit option beats the environment; the addon checks the types of what reaches C++.
// The CUDA-only options are parsed and checked by both addons, so this runs on the CPU engine.
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { after, afterEach, before, describe, it } from 'node:test';
import { writeRandomModel } from '../test/helpers/random-model.ts';
import { Engine, loadAddon, resolveEngineOptions } from './engine.ts';
import { openModelDir } from './model-dir.ts';

const VARS = ['SWITCHBOARD_DEVICE', 'SWITCHBOARD_CUDA_GRAPHS', 'SWITCHBOARD_PREFILL_ATTENTION'] as const;

describe('engine options', () => {
  const saved = Object.fromEntries(VARS.map((v) => [v, process.env[v]]));
  afterEach(() => {
    for (const v of VARS) {
      if (saved[v] === undefined) delete process.env[v];
      else process.env[v] = saved[v];
    }
  });
  const clear = () => VARS.forEach((v) => delete process.env[v]);

  it('defaults to auto, graphs and tensor-core prefill on, without environment', () => {
    clear();
    assert.deepEqual(resolveEngineOptions(), {
      numBlocks: 256, blockSize: 16, maxAdapters: 8, device: 'auto', cudaGraphs: true, prefillAttention: true,
    });
  });

  it('takes the environment as the default', () => {
    clear();
    process.env.SWITCHBOARD_DEVICE = 'cpu';
    process.env.SWITCHBOARD_CUDA_GRAPHS = '0';
    process.env.SWITCHBOARD_PREFILL_ATTENTION = 'off';
    const o = resolveEngineOptions();
    assert.equal(o.device, 'cpu');
    assert.equal(o.cudaGraphs, false);
    assert.equal(o.prefillAttention, false);
    process.env.SWITCHBOARD_CUDA_GRAPHS = 'true';
    assert.equal(resolveEngineOptions().cudaGraphs, true);
  });

  it('lets an explicit option beat the environment', () => {
    clear();
    process.env.SWITCHBOARD_DEVICE = 'cuda';
    process.env.SWITCHBOARD_CUDA_GRAPHS = '0';
    process.env.SWITCHBOARD_PREFILL_ATTENTION = '1';
    const o = resolveEngineOptions({ device: 'cpu', cudaGraphs: true, prefillAttention: false });
    assert.equal(o.device, 'cpu');
    assert.equal(o.cudaGraphs, true);
    assert.equal(o.prefillAttention, false);
  });

  it('refuses an environment value it cannot read, naming the variable', () => {
    clear();
    process.env.SWITCHBOARD_CUDA_GRAPHS = 'maybe';
    assert.throws(() => resolveEngineOptions(), /SWITCHBOARD_CUDA_GRAPHS must be 1 or 0 .*got "maybe"/);
    clear();
    process.env.SWITCHBOARD_DEVICE = 'tpu';
    assert.throws(() => resolveEngineOptions(), /device must be auto, cpu or cuda, got "tpu"/);
    assert.throws(() => resolveEngineOptions({ device: 'gpu' as 'cuda' }), /device must be auto, cpu or cuda, got "gpu"/);
  });

  describe('at the addon', () => {
    let dir: string;
    before(async () => {
      dir = await writeRandomModel({ arch: 'llama', seed: 5 });
    });
    after(async () => {
      await rm(dir, { recursive: true, force: true });
    });
    const base = { numBlocks: 4, blockSize: 4, maxAdapters: 1, threads: 1 };

    it('rejects CUDA options of the wrong type with a TypeError naming them', async () => {
      const { NativeEngine } = loadAddon();
      const { spec } = await openModelDir(dir);
      const bad: [Record<string, unknown>, RegExp][] = [
        [{ cudaGraphs: 'no' }, /options\.cudaGraphs must be a boolean/],
        [{ prefillAttention: 0 }, /options\.prefillAttention must be a boolean/],
        [{ dtype: 'int8' }, /options\.dtype must be float32, float16 or bfloat16, got int8/],
        [{ dtype: 16 }, /options\.dtype must be a string/],
        [{ threads: 1.5 }, /options\.threads must be an integer/],
        [{ quantGemvRows: 257 }, /options\.quantGemvRows must be 0\.\.256, got 257/],
        [{ quantGemvRows: -1 }, /options\.quantGemvRows must be 0\.\.256, got -1/],
        [{ quantGemvRows: 'all' }, /options\.quantGemvRows must be/],
      ];
      for (const [extra, message] of bad) {
        assert.throws(() => new NativeEngine(spec, { ...base, ...extra } as never), (err: Error) => err instanceof TypeError && message.test(err.message), JSON.stringify(extra));
      }
      // Well-typed CUDA options are accepted by the CPU engine, which has no use for them.
      const ok = new NativeEngine(spec, { ...base, dtype: 'float16', cudaGraphs: false, prefillAttention: false, quantGemvRows: 16 });
      await ok.load();
      ok.close();
    });
  });
});
