// The addon's side of the packed layout (src/addon.cc parsePacked): a packed ref that does not fit its
// shape, or whose permutation is not one, is a TypeError naming the tensor, never a crash or a misread.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Engine } from '../engine.ts';
import { openModelDir } from '../model-dir.ts';

const AWQ = join(import.meta.dirname, '..', '..', 'test', 'fixtures', 'models-quant', 'awq');
const Q = 'model.layers.0.self_attn.q_proj.weight';

async function openWith(edit: (p: NonNullable<import('../addon.d.ts').NativeTensorRef['packed']>) => void): Promise<Engine> {
  const model = await openModelDir(AWQ);
  const ref = model.spec.tensors.find((t) => t.name === Q)!;
  ref.packed = { ...ref.packed! };
  edit(ref.packed);
  return Engine.open(model, { device: 'cpu', numBlocks: 4, blockSize: 16, maxAdapters: 1 });
}

describe('packed refs through the addon', () => {
  it('refuses codes, scales and lookup tables that do not fit', async () => {
    await assert.rejects(openWith((p) => (p.codes = p.codes.subarray(1))), /packed\..*do not fit the sizes/);
    await assert.rejects(openWith((p) => (p.scales = new Float32Array(3))), /packed\..*do not fit the sizes/);
    await assert.rejects(openWith((p) => (p.lut = new Float32Array(8))), /packed\..*do not fit the sizes/);
    await assert.rejects(openWith((p) => (p.outFeatures = 32)), /packed\.outFeatures and inFeatures must be the tensor's shape/);
  });

  it('refuses a permutation that is not one, and a layout without its codebook', async () => {
    await assert.rejects(openWith((p) => (p.perm = new Int32Array(64))), /packed\.perm must be a permutation/);
    await assert.rejects(openWith((p) => (p.codebook = 'e4m3')), /q4 goes with codebook lut/);
  });

  it('opens the same weights when nothing is edited', async () => {
    const engine = await openWith(() => {});
    engine.close();
  });
});
