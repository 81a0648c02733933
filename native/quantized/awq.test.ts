// AWQ GEMM decoding on hand-packed words (nibble i of a word holds column [0,2,4,6,1,3,5,7][i] of each eight).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dequantAwq, unpackAwq } from './awq.ts';

describe('AWQ GEMM layout', () => {
  it('unpacks the interleaved nibble order', () => {
    // Columns 0..7 hold 1..8: nibbles (low to high) hold columns 0,2,4,6,1,3,5,7 -> 1,3,5,7,2,4,6,8.
    assert.deepEqual([...unpackAwq(Int32Array.of(0x86427531 | 0), 1, 8)], [1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it('dequantises (q - zero) * scale into the nn.Linear layout [out, in]', () => {
    const w = dequantAwq({
      qweight: Int32Array.of(0x86427531 | 0, -1), // input row 0: 1..8; input row 1: all 15
      qzeros: Int32Array.of(0x11111111), // one group, zero 1 everywhere
      scales: Float32Array.of(0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 2),
      inFeatures: 2, outFeatures: 8, groupSize: 2,
    });
    // W[o] = [(q[0][o] - 1) * s[o], (15 - 1) * s[o]]
    assert.deepEqual([...w], [0, 7, 0.5, 7, 1, 7, 1.5, 7, 2, 7, 2.5, 7, 3, 7, 14, 28]);
  });

  it('uses each input row\'s own group', () => {
    const w = dequantAwq({
      qweight: Int32Array.of(0x22222222, 0x22222222),
      qzeros: Int32Array.of(0x00000000, 0x11111111),
      scales: Float32Array.from({ length: 16 }, (_, i) => (i < 8 ? 1 : 3)),
      inFeatures: 2, outFeatures: 8, groupSize: 1,
    });
    for (let o = 0; o < 8; o++) assert.deepEqual([w[o * 2], w[o * 2 + 1]], [2, 3]);
  });

  it('refuses sizes the packing cannot hold', () => {
    assert.throws(() => unpackAwq(new Int32Array(1), 1, 6), /multiple of 8/);
    assert.throws(() => dequantAwq({ qweight: new Int32Array(3), qzeros: new Int32Array(1), scales: new Float32Array(8), inFeatures: 3, outFeatures: 8, groupSize: 2 }), /group size/);
  });
});
