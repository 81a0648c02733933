// The engines' packed layout (packed.ts) as each format's repack writes it: nibble order, groups of the
// transposed scales, act-order permutations (exact: each input keeps its own scale and zero), NF4 groups
// that never straddle a block, fp8 block scales per row, and malformed layouts refused.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { repackAwq } from './awq.ts';
import { NF4_CODE, quantize4bit, repack4bit } from './bitsandbytes.ts';
import { E4M3_VALUES, repackFp8 } from './fp8.ts';
import { dequantGptq, repackGptq } from './gptq.ts';
import { checkPacked, dequantPacked, packedGroups } from './packed.ts';

/** A deterministic pseudo-random int32 word stream. */
function words(n: number, seed: number): Int32Array {
  let s = seed >>> 0;
  return Int32Array.from({ length: n }, () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) | 0);
}

describe('packed layout', () => {
  it('AWQ: codes become [out, in] nibbles (low nibble = even input), zeros and scales [out, groups]', () => {
    // in 16, out 8, group 8: input row i holds the AWQ-interleaved word; column c of it is value (c + i) % 16.
    const order = [0, 2, 4, 6, 1, 3, 5, 7];
    const qweight = Int32Array.from({ length: 16 }, (_, i) => order.reduce((w, col, nib) => w | (((col + i) % 16) << (4 * nib)), 0));
    const qzeros = Int32Array.from({ length: 2 }, (_, g) => order.reduce((w, col, nib) => w | (((col + g) % 16) << (4 * nib)), 0));
    const scales = Float32Array.from({ length: 16 }, (_, i) => 1 + i);
    const p = repackAwq({ qweight, qzeros, scales, inFeatures: 16, outFeatures: 8, groupSize: 8 });
    assert.equal(p.layout, 'q4');
    // output 3, inputs 4 and 5: values 7 and 8 -> byte 0x87
    assert.equal(p.codes[(3 * 16 + 4) / 2], 0x87);
    assert.deepEqual([...p.zeros!.subarray(3 * 2, 3 * 2 + 2)], [3, 4]);
    assert.deepEqual([...p.scales.subarray(3 * 2, 3 * 2 + 2)], [4, 12]);
  });

  it('GPTQ act-order: inputs sorted by group, one scale and zero per run, the same weights as g_idx says', () => {
    const inF = 64;
    const out = 16;
    const gIdx = Int32Array.from({ length: inF }, (_, i) => (i * 5) % 4); // 4 groups of 16, interleaved
    const w = {
      qweight: words((inF / 8) * out, 7), qzeros: words(4 * (out / 8), 9),
      scales: Float32Array.from({ length: 4 * out }, (_, i) => 0.01 * (1 + (i % 13))),
      gIdx, inFeatures: inF, outFeatures: out, bits: 4 as const, groupSize: 16, zeroOffset: 1 as const,
    };
    const p = repackGptq(w);
    assert.equal(p.groupSize, 16);
    assert.ok(p.perm !== null);
    for (let k = 0; k < inF; k++) assert.equal(gIdx[p.perm![k]!], Math.floor(k / 16), `input ${p.perm![k]} sorted into group ${Math.floor(k / 16)}`);
    // Against the per-element definition: W[o, i] = scale[g, o] * (q[i, o] - zero[g, o] - 1), g = g_idx[i].
    const d = dequantPacked(p);
    for (const [o, i] of [[0, 0], [5, 17], [15, 63], [9, 42]] as const) {
      const g = gIdx[i]!;
      const q = (w.qweight[(i >> 3) * out + o]! >>> (4 * (i % 8))) & 0xf;
      const z = ((w.qzeros[g * (out / 8) + (o >> 3)]! >>> (4 * (o % 8))) & 0xf) + 1;
      assert.equal(d[o * inF + i], Math.fround(w.scales[g * out + o]! * (q - z)));
    }
    assert.deepEqual(dequantGptq(w), d);
  });

  it('GPTQ without act-order keeps the identity, and 8-bit packs one code a byte', () => {
    const p = repackGptq({ qweight: words(8, 1), qzeros: words(1, 2), scales: new Float32Array(4).fill(0.5), gIdx: Int32Array.of(0, 0, 0, 0, 0, 0, 0, 0), inFeatures: 8, outFeatures: 4, bits: 8, groupSize: 8, zeroOffset: 0 });
    assert.equal(p.perm, null);
    assert.equal(p.layout, 'q8');
    assert.equal(p.codebook, 'u8');
    assert.equal(p.codes.length, 32);
  });

  it('NF4: groups of gcd(64, in) take their block\'s absmax, also where blocks run across rows', () => {
    const out = 4;
    const inF = 160;
    const w = Float32Array.from({ length: out * inF }, (_, i) => Math.sin(i * 0.37) * (1 + (i % 7)));
    const p = repack4bit(w, out, inF, NF4_CODE);
    assert.equal(p.groupSize, 32);
    assert.equal(packedGroups(p), 5);
    const q = quantize4bit(w, NF4_CODE);
    // row 1, group 2 = flat inputs 160 + 64 .. 160 + 95 -> block 3
    assert.equal(p.scales[1 * 5 + 2], q.absmax[3]);
    const d = dequantPacked(p);
    for (let i = 0; i < w.length; i++) assert.equal(d[i], Math.fround(NF4_CODE[q.codes[i]!]! * q.absmax[Math.floor(i / 64)]!));
  });

  it('fp8 blocks: each row takes the scale of its block of rows, one group per block of columns', () => {
    const codes = Uint8Array.from({ length: 4 * 16 }, (_, i) => (i * 3) % 0x7e);
    const p = repackFp8({ codes, outFeatures: 4, inFeatures: 16, scale: Float32Array.of(1, 2, 3, 4), scaleShape: [2, 2], blockSize: [2, 8] });
    assert.equal(p.groupSize, 8);
    assert.deepEqual([...p.scales], [1, 2, 1, 2, 3, 4, 3, 4]);
    assert.equal(dequantPacked(p, E4M3_VALUES)[3 * 16 + 9], Math.fround(E4M3_VALUES[codes[3 * 16 + 9]!]! * 4));
  });

  it('refuses malformed layouts', () => {
    const base = { layout: 'q4' as const, codebook: 'lut' as const, lut: new Float32Array(16), outFeatures: 2, inFeatures: 8, groupSize: 8, codes: new Uint8Array(8), scales: new Float32Array(2), zeros: null, perm: null };
    assert.doesNotThrow(() => checkPacked(base));
    assert.throws(() => checkPacked({ ...base, codes: new Uint8Array(7) }), /code bytes/);
    assert.throws(() => checkPacked({ ...base, scales: new Float32Array(3) }), /scales/);
    assert.throws(() => checkPacked({ ...base, perm: Int32Array.of(0, 1, 2, 3, 4, 5, 6, 6) }), /not a permutation/);
    assert.throws(() => checkPacked({ ...base, layout: 'q8', codes: new Uint8Array(16) }), /without a lookup table/);
  });
});
