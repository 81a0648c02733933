// GPTQ decoding on hand-packed words: input rows packed along the input dim, zero points along the output dim.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dequantGptq } from './gptq.ts';

const col = (w: Float32Array, inF: number, o: number) => [...w.subarray(o * inF, (o + 1) * inF)];

describe('GPTQ layout', () => {
  it('4-bit, v1 zeros (stored zero - 1), one group', () => {
    const w = dequantGptq({
      qweight: new Int32Array(8).fill(0x76543210), // input rows 0..7 hold 0..7, for every output column
      qzeros: Int32Array.of(0x33333333), // stored 3 -> zero 4
      scales: new Float32Array(8).fill(0.25),
      gIdx: null, inFeatures: 8, outFeatures: 8, bits: 4, groupSize: 8, zeroOffset: 1,
    });
    for (let o = 0; o < 8; o++) assert.deepEqual(col(w, 8, o), [-1, -0.75, -0.5, -0.25, 0, 0.25, 0.5, 0.75]);
  });

  it('act-order: g_idx, not the row index, picks each row\'s scale and zero', () => {
    const w = dequantGptq({
      qweight: new Int32Array(8).fill(0x76543210),
      qzeros: Int32Array.of(0x33333333, 0x00000000), // group 0: zero 4; group 1: zero 1
      scales: Float32Array.from({ length: 16 }, (_, i) => (i < 8 ? 1 : 2)),
      gIdx: Int32Array.of(1, 0, 1, 0, 1, 0, 1, 0), inFeatures: 8, outFeatures: 8, bits: 4, groupSize: 4, zeroOffset: 1,
    });
    // even rows: group 1 -> 2 * (i - 1); odd rows: group 0 -> 1 * (i - 4)
    assert.deepEqual(col(w, 8, 3), [-2, -3, 2, -1, 6, 1, 10, 3]);
  });

  it('v1: a stored all-ones zero reads as 2^bits (the format\'s flaw, as its readers do); v2 stores zeros as is', () => {
    const args = { qweight: new Int32Array(8).fill(0x76543210), qzeros: Int32Array.of(-1), scales: new Float32Array(8).fill(1), gIdx: null, inFeatures: 8, outFeatures: 8, bits: 4 as const, groupSize: 8 };
    assert.equal(dequantGptq({ ...args, zeroOffset: 1 })[0], -16);
    assert.equal(dequantGptq({ ...args, zeroOffset: 0 })[0], -15);
  });

  it('8-bit: four values per word', () => {
    const word = 1 | (2 << 8) | (3 << 16) | (200 << 24);
    const w = dequantGptq({
      qweight: new Int32Array(4).fill(word), qzeros: Int32Array.of(0x7f7f7f7f), // zero 128
      scales: new Float32Array(4).fill(0.5), gIdx: null, inFeatures: 4, outFeatures: 4, bits: 8, groupSize: 4, zeroOffset: 1,
    });
    assert.deepEqual(col(w, 4, 2), [-63.5, -63, -62.5, 36]);
  });

  it('refuses a g_idx outside the groups and sizes that do not pack', () => {
    const base = { qweight: new Int32Array(8).fill(0), qzeros: Int32Array.of(0), scales: new Float32Array(8), inFeatures: 8, outFeatures: 8, bits: 4 as const, groupSize: 8, zeroOffset: 1 as const };
    assert.throws(() => dequantGptq({ ...base, gIdx: Int32Array.of(0, 0, 0, 0, 0, 0, 0, 1) }), /g_idx\[7\] = 1/);
    assert.throws(() => dequantGptq({ ...base, gIdx: null, inFeatures: 6 }), /multiple of 8/);
  });
});
