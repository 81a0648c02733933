// The engines' one layout for quantized linear weights (what every on-disk format is repacked into at
// load, see repack* in awq.ts, gptq.ts, bitsandbytes.ts, fp8.ts): W [out, in] row by row, codes along the
// input dim, one scale (and optionally one zero point) per output row and group of `groupSize` inputs:
//   W[o, perm[k]] = (value(code[o, k]) - zero[o, k / groupSize]) * scale[o, k / groupSize]
// - q4: two 4-bit codes per byte, [out, in / 2], the low nibble holds the even k (read as little-endian
//   32-bit words: nibble j of word w is k = 8 w + j); value = lut[code] (16 entries: 0..15 for AWQ / GPTQ
//   integers, bitsandbytes' NF4 / FP4 values).
// - q8: one byte per code, [out, in]; value: the code as unsigned (u8, GPTQ 8-bit), as signed (s8, int8
//   weights), or as float8 e4m3fn (e4m3).
// perm (act-order GPTQ) sorts the inputs by group, so each group is a run of consecutive k; null: identity.
// The CUDA engine keeps this on the device and computes with it (kernels/quant_gemm.cuh); the CPU engine
// dequantises it at load (native/src/tensor-io.cc). dequantPacked below is the same decoding in TS.

import type { NativePackedWeight } from '../addon.d.ts';

/** The layout as the addon takes it (addon.d.ts): groups = ceil(in / groupSize), the last one may be short. */
export type PackedLinear = NativePackedWeight;
export type PackedCodebook = PackedLinear['codebook'];

export const IDENTITY_LUT4 = Float32Array.from({ length: 16 }, (_, i) => i);

export function packedGroups(p: Pick<PackedLinear, 'inFeatures' | 'groupSize'>): number {
  return Math.ceil(p.inFeatures / p.groupSize);
}

/** Bytes of a packed weight's arrays: what it takes in host memory, and on the CUDA device. */
export function packedByteLength(p: PackedLinear): number {
  return p.codes.byteLength + p.scales.byteLength + (p.zeros?.byteLength ?? 0) + (p.perm?.byteLength ?? 0) + (p.lut?.byteLength ?? 0);
}

/** Checks a packed weight's sizes (a repack bug or a malformed N-API argument is caught here). */
export function checkPacked(p: PackedLinear): PackedLinear {
  const { outFeatures: out, inFeatures: inF, groupSize: g } = p;
  const fail = (why: string): never => {
    throw new Error(`packed ${p.layout} weight [${out}, ${inF}]: ${why}`);
  };
  if (!Number.isInteger(g) || g < 1) fail(`group size ${g}`);
  if (p.layout === 'q4') {
    if (inF % 2 !== 0) fail('in_features must be even (two codes per byte)');
    if (p.codebook !== 'lut' || p.lut === null || p.lut.length !== 16) fail('q4 needs a 16-entry lookup table');
    if (p.codes.length !== (out * inF) / 2) fail(`${p.codes.length} code bytes, expected ${(out * inF) / 2}`);
  } else {
    if (p.codebook === 'lut' || p.lut !== null) fail('q8 codes are u8, s8 or e4m3, without a lookup table');
    if (p.codes.length !== out * inF) fail(`${p.codes.length} code bytes, expected ${out * inF}`);
  }
  const n = out * packedGroups(p);
  if (p.scales.length !== n) fail(`${p.scales.length} scales, expected ${n}`);
  if (p.zeros !== null && p.zeros.length !== n) fail(`${p.zeros.length} zero points, expected ${n}`);
  if (p.perm !== null) {
    if (p.perm.length !== inF) fail(`perm has ${p.perm.length} entries, expected ${inF}`);
    const seen = new Uint8Array(inF);
    for (const i of p.perm) {
      if (!(i >= 0 && i < inF) || seen[i]) fail('perm is not a permutation');
      seen[i] = 1;
    }
  }
  return p;
}

/** Value of each q8 code, by codebook (e4m3 values come from fp8.ts's table, passed in to avoid a cycle). */
function q8Values(codebook: PackedCodebook, e4m3: Float32Array | undefined): Float32Array {
  if (codebook === 'u8') return Float32Array.from({ length: 256 }, (_, i) => i);
  if (codebook === 's8') return Float32Array.from({ length: 256 }, (_, i) => (i < 128 ? i : i - 256));
  if (e4m3 === undefined) throw new Error('e4m3 codes need the e4m3 value table');
  return e4m3;
}

/** W [out, in] (the nn.Linear layout) as float32: one subtraction and one float32 product per weight. */
export function dequantPacked(p: PackedLinear, e4m3Values?: Float32Array): Float32Array {
  checkPacked(p);
  const { outFeatures: out, inFeatures: inF, groupSize: g } = p;
  const groups = packedGroups(p);
  const values = p.layout === 'q4' ? p.lut! : q8Values(p.codebook, e4m3Values);
  const res = new Float32Array(out * inF);
  for (let o = 0; o < out; o++) {
    for (let k = 0; k < inF; k++) {
      const code = p.layout === 'q4' ? (p.codes[(o * inF + k) >>> 1]! >>> ((k & 1) * 4)) & 0xf : p.codes[o * inF + k]!;
      const v = values[code]!;
      if (Number.isNaN(v)) throw new Error(`packed weight holds a NaN code at [${o}, ${p.perm ? p.perm[k] : k}]`);
      const gi = o * groups + Math.floor(k / g);
      res[o * inF + (p.perm ? p.perm[k]! : k)] = Math.fround(p.zeros ? v - p.zeros[gi]! : v) * p.scales[gi]!;
    }
  }
  return res;
}

/** q4 code bytes [out, in / 2] from one 4-bit value per weight, given as value(o, k) in kernel input order. */
export function packNibbles(out: number, inF: number, value: (o: number, k: number) => number): Uint8Array {
  if (inF % 2 !== 0) throw new Error(`in_features ${inF} is odd: 4-bit codes pack two per byte`);
  const codes = new Uint8Array((out * inF) / 2);
  for (let o = 0; o < out; o++) {
    for (let k = 0; k < inF; k += 2) codes[(o * inF + k) >>> 1] = (value(o, k) & 0xf) | ((value(o, k + 1) & 0xf) << 4);
  }
  return codes;
}

/** [rows, cols] -> [cols, rows], as float32. */
export function transposeF32(a: ArrayLike<number>, rows: number, cols: number): Float32Array {
  const t = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = a[r * cols + c]!;
  return t;
}
