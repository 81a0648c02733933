// float8_e4m3fn decoding/encoding and the three scale layouts, on hand-computed values.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dequantFp8, E4M3_VALUES, encodeE4M3, fp8QuantizeAtLoad, fp8ScaleLayout } from './fp8.ts';

describe('float8 e4m3fn', () => {
  it('decodes normals, subnormals, the maximum and NaN', () => {
    assert.equal(E4M3_VALUES[0x38], 1); // exponent 7 (bias 7), mantissa 0
    assert.equal(E4M3_VALUES[0x44], 3); // 1.5 * 2
    assert.equal(E4M3_VALUES[0xc4], -3);
    assert.equal(E4M3_VALUES[0x01], 2 ** -9); // smallest subnormal
    assert.equal(E4M3_VALUES[0x7e], 448);
    assert.ok(Number.isNaN(E4M3_VALUES[0x7f]!) && Number.isNaN(E4M3_VALUES[0xff]!));
  });

  it('encodes to nearest, ties to even, saturating at 448', () => {
    assert.equal(encodeE4M3(1), 0x38);
    assert.equal(encodeE4M3(1.0625), 0x38); // halfway 1 .. 1.125: even mantissa
    assert.equal(encodeE4M3(1.1875), 0x3a); // halfway 1.125 .. 1.25: even mantissa
    assert.equal(encodeE4M3(-3), 0xc4);
    assert.equal(encodeE4M3(1000), 0x7e);
    assert.equal(encodeE4M3(0), 0);
  });

  it('applies per-tensor, per-channel and per-block scales', () => {
    const codes = Uint8Array.of(0x38, 0x44, 0xc4, 0x38); // [[1, 3], [-3, 1]]
    const w = { codes, outFeatures: 2, inFeatures: 2 };
    assert.deepEqual([...dequantFp8({ ...w, scale: Float32Array.of(0.5), scaleShape: [1] })], [0.5, 1.5, -1.5, 0.5]);
    assert.deepEqual([...dequantFp8({ ...w, scale: Float32Array.of(2, 10), scaleShape: [2, 1] })], [2, 6, -30, 10]);
    assert.deepEqual([...dequantFp8({ ...w, scale: Float32Array.of(1, 2, 3, 4), scaleShape: [2, 2], blockSize: [1, 1] })], [1, 6, -9, 4]);
    assert.deepEqual([...dequantFp8({ ...w, scale: Float32Array.of(1, 2), scaleShape: [1, 2], blockSize: [2, 1] })], [1, 6, -3, 2]);
  });

  it('refuses a scale that fits no layout, and NaN codes', () => {
    assert.throws(() => fp8ScaleLayout({ outFeatures: 4, inFeatures: 4, scaleShape: [3] }), /fits neither/);
    assert.throws(() => dequantFp8({ codes: Uint8Array.of(0x7f), outFeatures: 1, inFeatures: 1, scale: Float32Array.of(1), scaleShape: [] }), /NaN/);
  });

  it('quantizes at load with a per-row scale absmax / 448', () => {
    const w = Float32Array.of(448, 1, -224, 0, 0, 0);
    const q = fp8QuantizeAtLoad(w, 2, 3);
    assert.deepEqual([...q.subarray(0, 3)], [448, 1, -224]);
    assert.deepEqual([...q.subarray(3)], [0, 0, 0]); // an all-zero row stays zero
  });
});
