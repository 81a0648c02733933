// Which engine Engine.open picks: the CUDA engine where a GPU works, else the CPU engine, with a
// log line when a CUDA build is present but cannot run (no driver, no device) and a clear error
// when the CUDA engine was demanded. CI builds the CUDA addon against cuBLAS from a wheel and has
// no GPU (SWITCHBOARD_EXPECT_CUDA_ADDON=1 there), so the fallback itself is exercised on every run.
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { writeRandomModel } from '../test/helpers/random-model.ts';
import { Engine, cudaAddonBuilt, cudaUnavailableReason, loadCudaAddon } from './engine.ts';

describe('engine selection', () => {
  let dir: string;
  before(async () => {
    dir = await writeRandomModel({ arch: 'llama', seed: 3 });
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('is built where CI expects the CUDA addon', () => {
    if (process.env.SWITCHBOARD_EXPECT_CUDA_ADDON === '1') assert.ok(cudaAddonBuilt(), cudaUnavailableReason());
  });

  it('uses the CUDA engine where a GPU works, else the CPU engine with a log line for an unusable CUDA build', async () => {
    const logs: string[] = [];
    const engine = await Engine.open(dir, { numBlocks: 8, blockSize: 4, log: (m) => logs.push(m) });
    try {
      if (loadCudaAddon()) {
        assert.equal(engine.info().device, 'cuda');
      } else {
        assert.equal(engine.info().device, 'cpu');
        if (cudaAddonBuilt()) {
          assert.equal(logs.length, 1);
          assert.match(logs[0]!, /CUDA engine built but not usable here \(.+\); running on the CPU engine/);
        } else {
          assert.deepEqual(logs, [], 'a CPU-only install says nothing about CUDA');
        }
        const [out] = await engine.step([{ tokens: [1, 2, 3], position: 0, blockTable: [0] }]);
        assert.ok(out!.token >= 0);
      }
    } finally {
      engine.close();
    }
  });

  it('refuses --device cuda with the reason where no CUDA engine can run, and honours --device cpu', async () => {
    if (!loadCudaAddon()) {
      const reason = cudaUnavailableReason();
      await assert.rejects(Engine.open(dir, { device: 'cuda', numBlocks: 8, blockSize: 4 }), (err: Error) => err.message.includes(reason));
    }
    const logs: string[] = [];
    const cpu = await Engine.open(dir, { device: 'cpu', numBlocks: 8, blockSize: 4, log: (m) => logs.push(m) });
    try {
      assert.equal(cpu.info().device, 'cpu');
      assert.deepEqual(logs, []);
    } finally {
      cpu.close();
    }
  });
});
