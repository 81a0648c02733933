// openModelDir on the quantized fixtures: packed refs (packed.ts) for the 14 projections, packed bytes
// counted, and clear errors for a config that does not fit the stored tensors.
import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { openModelDir } from '../model-dir.ts';

const FIX = join(import.meta.dirname, '..', '..', 'test', 'fixtures');

async function withConfig(variant: string, edit: (qc: Record<string, unknown>) => void): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'sb-quant-'));
  await cp(join(FIX, 'models-quant', variant), dir, { recursive: true });
  const config = JSON.parse(await readFile(join(dir, 'config.json'), 'utf-8')) as { quantization_config: Record<string, unknown> };
  edit(config.quantization_config);
  await writeFile(join(dir, 'config.json'), JSON.stringify(config));
  return dir;
}

describe('openModelDir with quantized checkpoints', () => {
  it('AWQ: projections become packed refs, everything else stays a file ref', async () => {
    const m = await openModelDir(join(FIX, 'models-quant', 'awq'));
    const q = m.spec.tensors.find((t) => t.name === 'model.layers.0.self_attn.q_proj.weight')!;
    assert.equal(q.dtype, 'F32');
    assert.deepEqual(q.shape, [64, 64]);
    assert.equal(q.packed!.layout, 'q4');
    assert.equal(q.packed!.codes.length, (64 * 64) / 2);
    assert.equal(q.packed!.groupSize, 32);
    // 4-bit codes plus an fp32 scale and zero per 32 weights (and a 16-entry table a layer): ~6 bits a weight.
    const bits = (8 * m.quantization!.packedBytes) / m.quantization!.quantizedValues;
    assert.ok(bits > 6 && bits < 6.5, `${bits} bits a weight`);
    assert.equal(m.spec.tensors.find((t) => t.name === 'lm_head.weight')!.file !== undefined, true);
    assert.equal(m.quantization?.layers, 14);
    assert.match(m.quantization!.description, /AWQ 4-bit \(GEMM layout\), group size 32/);
    const plain = await openModelDir(join(FIX, 'models', 'llama'));
    assert.ok(m.weightBytes < plain.weightBytes, 'packed weights are counted at their stored size');
  });

  it('the at-load methods quantize the 16-bit projections and leave lm_head alone', async () => {
    const m = await openModelDir(join(FIX, 'models', 'llama'), { quantize: 'bitsandbytes-nf4' });
    assert.equal(m.quantization?.layers, 14);
    assert.equal(m.spec.tensors.find((t) => t.name === 'lm_head.weight')!.packed, undefined);
    assert.equal(m.spec.tensors.find((t) => t.name === 'model.layers.1.mlp.down_proj.weight')!.packed!.groupSize, 32, 'gcd(64, 160): no group straddles a block');
  });

  it('a group size that does not match the stored tensors is an error naming the tensor', async () => {
    const dir = await withConfig('awq', (qc) => (qc.group_size = 64));
    try {
      await assert.rejects(openModelDir(dir), /model\.layers\.0\.self_attn\.q_proj: .*qzeros has shape \[2, 8\] but the layer needs \[1, 8\]/);
    } finally {
      await rm(dir, { recursive: true });
    }
  });

  it('GPTQ bits that do not match the stored words are an error', async () => {
    const dir = await withConfig('gptq-4bit', (qc) => (qc.bits = 8));
    try {
      await assert.rejects(openModelDir(dir), /qweight has shape \[8, 64\] but the layer needs \[16, 64\]/);
    } finally {
      await rm(dir, { recursive: true });
    }
  });

  it('--quantize must agree with the checkpoint', async () => {
    await assert.rejects(openModelDir(join(FIX, 'models-quant', 'gptq-4bit'), { quantize: 'awq' }), /--quantize awq contradicts the checkpoint/);
    await assert.rejects(openModelDir(join(FIX, 'models', 'llama'), { quantize: 'gptq' }), /--quantize gptq needs a GPTQ checkpoint/);
  });
});
