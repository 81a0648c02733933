// The default KV cache size on a GPU, as LoRAX's launcher derives it, on hand-computed cases.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { deviceWeightBytes, elementBytes, kvTokensFromMemory } from './kv-budget.ts';

const GiB = 2 ** 30;
// Llama-2-7B at bf16: 32 layers x 32 KV heads x 128 dims, K and V: 512 KiB a token.
const llama7b = { kvBytesPerToken: 2 * 32 * 32 * 128 * 2, weightBytes: 6_738_415_616 * 2 };

describe('KV cache from device memory', () => {
  it('takes what the weights and the adapter reservation leave, times the wiggle room', () => {
    const b = kvTokensFromMemory({ device: { free: 79 * GiB, total: 80 * GiB }, cudaMemoryFraction: 1, adapterMemoryFraction: 0.1, memoryWiggleRoom: 0.9, ...llama7b });
    const want = Math.floor(((79 * GiB - llama7b.weightBytes - 8 * GiB) * 0.9) / llama7b.kvBytesPerToken);
    assert.equal(b.tokens, want);
    assert.ok(b.tokens > 100_000 && b.tokens < 115_000, `${b.tokens}`);
    assert.match(b.explain, /weights 12\.55 GiB/);
  });

  it('is bounded by --cuda-memory-fraction of the total, not only by what is free', () => {
    const half = kvTokensFromMemory({ device: { free: 79 * GiB, total: 80 * GiB }, cudaMemoryFraction: 0.5, adapterMemoryFraction: 0.1, memoryWiggleRoom: 0.9, ...llama7b });
    assert.equal(half.tokens, Math.floor(((40 * GiB - llama7b.weightBytes - 8 * GiB) * 0.9) / llama7b.kvBytesPerToken));
    const busy = kvTokensFromMemory({ device: { free: 30 * GiB, total: 80 * GiB }, cudaMemoryFraction: 1, adapterMemoryFraction: 0, memoryWiggleRoom: 1, ...llama7b });
    assert.equal(busy.tokens, Math.floor((30 * GiB - llama7b.weightBytes) / llama7b.kvBytesPerToken));
  });

  it('is 0 when the weights do not leave room', () => {
    assert.equal(kvTokensFromMemory({ device: { free: 10 * GiB, total: 16 * GiB }, cudaMemoryFraction: 1, adapterMemoryFraction: 0.1, memoryWiggleRoom: 0.9, ...llama7b }).tokens, 0);
  });

  it('counts weights from shapes at the compute element size', () => {
    assert.equal(elementBytes('auto'), 2);
    assert.equal(elementBytes('bfloat16'), 2);
    assert.equal(elementBytes('float32'), 4);
    assert.equal(deviceWeightBytes([{ shape: [4, 8] }, { shape: [8] }], 2), 80);
  });

  it('counts quantized projections at their packed size (the CUDA engine keeps them packed)', () => {
    const packed = {
      layout: 'q4' as const, codebook: 'lut' as const, outFeatures: 4, inFeatures: 8, groupSize: 8,
      codes: new Uint8Array(16), lut: new Float32Array(16), scales: new Float32Array(4), zeros: new Float32Array(4), perm: null,
    };
    // 16 code bytes + 64 lookup-table bytes + 16 scale bytes + 16 zero-point bytes, beside 16 bytes of a 16-bit [8]
    assert.equal(deviceWeightBytes([{ shape: [4, 8], packed }, { shape: [8] }], 2), 16 + 64 + 16 + 16 + 16);
  });
});
