// bitsandbytes-style quantize-at-load on hand-computed blocks: NF4 / FP4 (blocks of 64, absmax), int8 rows.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bnbQuantizeAtLoad, FP4_CODE, int8RowwiseAtLoad, NF4_CODE, quantize4bit } from './bitsandbytes.ts';

const f = Math.fround;

describe('bitsandbytes-style weights', () => {
  it('NF4: nearest code value times the block absmax', () => {
    const w = new Float32Array(64);
    w.set([2, -1, 0, 0.16, 1.4]);
    const d = bnbQuantizeAtLoad('bitsandbytes-nf4', w, 1, 64);
    // normalised: 1, -0.5, 0, 0.08, 0.7 -> 1, -0.52507.., 0, 0.07958.., 0.72295..
    assert.deepEqual([...d.subarray(0, 5)], [2, f(f(-0.5250730514526367) * 2), 0, f(f(0.07958029955625534) * 2), f(f(0.7229568362236023) * 2)]);
  });

  it('FP4: bitsandbytes\' code (largest 12 scaled to 1)', () => {
    const w = new Float32Array(64);
    w.set([12, 6, -2.9, 1]);
    const d = bnbQuantizeAtLoad('bitsandbytes-fp4', w, 1, 64);
    // normalised 1, 0.5, -0.2417 -> -0.25, 0.0833 -> 0.0052 (0.0625 / 12)
    assert.deepEqual([...d.subarray(0, 4)], [12, 6, -3, f(f(0.0625 / 12) * 12)]);
    assert.equal(FP4_CODE.length, 16);
  });

  it('uses one absmax per block of 64 over the flattened weight', () => {
    const w = new Float32Array(65);
    w[0] = 4;
    w[64] = -0.5;
    const q = quantize4bit(w, NF4_CODE);
    assert.deepEqual([...q.absmax], [4, 0.5]);
    assert.equal(NF4_CODE[q.codes[64]!], -1);
  });

  it('int8: row-wise absmax, round half to even', () => {
    const d = int8RowwiseAtLoad(Float32Array.of(127, -63.5, 1, 0, 0, 0), 2, 3);
    assert.deepEqual([...d], [127, -64, 1, 0, 0, 0]);
  });
});
