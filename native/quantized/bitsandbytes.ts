// --quantize bitsandbytes / bitsandbytes-nf4 / bitsandbytes-fp4: 16-bit weights quantized at load the way
// bitsandbytes stores them, then dequantised for the engine (no bitsandbytes kernel runs here):
//  - NF4 / FP4: the weight flattened row-major, blocks of 64 values, one float32 absmax per block, each value
//    the nearest of 16 code values (x absmax); no double quantization of the absmax.
//  - int8 (LLM.int8's weight side): one absmax per output row, q = round(w * 127 / absmax) in [-127, 127],
//    w' = q * absmax / 127. Activations stay 16-bit: no outlier decomposition and no int8 activations, so
//    this is weight-only int8 (what LLM.int8 computes for the non-outlier part only approximately).
// Both end in the engines' packed layout (packed.ts): q4 with the code values as lookup table, or q8 s8.

import { checkPacked, dequantPacked, packNibbles, type PackedLinear } from './packed.ts';

/** bitsandbytes' NF4 code values, by 4-bit code. */
export const NF4_CODE = Float32Array.from([
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
  -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
  0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
  0.7229568362236023, 1.0,
]);

/** bitsandbytes' FP4 (sign, 2 exponent bits, 1 mantissa bit; largest magnitude 12 scaled to 1), by code. */
export const FP4_CODE = (() => {
  const pos = [0, 0.0625, 8, 12, 4, 6, 2, 3].map((v) => v / 12);
  return Float32Array.from([...pos, ...pos.map((v) => -v)]);
})();

export const BNB_BLOCKSIZE = 64;

/** Sorted code values with their codes and float32 midpoints: a value above a midpoint takes the upper code. */
function decisionTable(code: Float32Array): { codes: number[]; mids: Float32Array } {
  const codes = [...code.keys()].sort((a, b) => code[a]! - code[b]! || a - b);
  const mids = new Float32Array(codes.length - 1);
  for (let i = 0; i < mids.length; i++) mids[i] = Math.fround(code[codes[i]!]! + code[codes[i + 1]!]!) / 2;
  return { codes, mids };
}

/** Code of the nearest value; an exact midpoint goes to the smaller value. */
function nearest(table: { codes: number[]; mids: Float32Array }, x: number): number {
  let lo = 0;
  let hi = table.mids.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (x > table.mids[mid]!) lo = mid + 1;
    else hi = mid;
  }
  return table.codes[lo]!;
}

export interface Blockwise4bit {
  /** One 4-bit code per value (unpacked: this is for dequantising, not for storage). */
  codes: Uint8Array;
  absmax: Float32Array;
}

/** bitsandbytes-style blockwise 4-bit quantization of `w` (any shape, flattened row-major). */
export function quantize4bit(w: Float32Array, code: Float32Array, blocksize = BNB_BLOCKSIZE): Blockwise4bit {
  const table = decisionTable(code);
  const blocks = Math.ceil(w.length / blocksize);
  const absmax = new Float32Array(blocks);
  const codes = new Uint8Array(w.length);
  for (let b = 0; b < blocks; b++) {
    const end = Math.min(w.length, (b + 1) * blocksize);
    let m = 0;
    for (let i = b * blocksize; i < end; i++) m = Math.max(m, Math.abs(w[i]!));
    absmax[b] = m;
    const div = m === 0 ? 1 : m;
    for (let i = b * blocksize; i < end; i++) codes[i] = nearest(table, Math.fround(w[i]! / div));
  }
  return { codes, absmax };
}

/** Round half to even, as torch.round / numpy.round do. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Row-wise absmax int8 of W [out, in] in the engines' packed layout: s8 codes, one scale absmax / 127 per row. */
export function repackInt8Rowwise(w: Float32Array, outFeatures: number, inFeatures: number): PackedLinear {
  const codes = new Uint8Array(w.length);
  const scales = new Float32Array(outFeatures);
  for (let r = 0; r < outFeatures; r++) {
    let scb = 0;
    for (let c = 0; c < inFeatures; c++) scb = Math.max(scb, Math.abs(w[r * inFeatures + c]!));
    if (scb === 0) continue;
    scales[r] = scb / 127;
    const inv = Math.fround(127 / scb);
    for (let c = 0; c < inFeatures; c++) {
      const i = r * inFeatures + c;
      codes[i] = Math.max(-127, Math.min(127, roundHalfEven(Math.fround(w[i]! * inv)))) & 0xff;
    }
  }
  return checkPacked({ layout: 'q8', codebook: 's8', lut: null, outFeatures, inFeatures, groupSize: inFeatures, codes, scales, zeros: null, perm: null });
}

/** Row-wise absmax int8 of W [out, in], returned dequantised. */
export function int8RowwiseAtLoad(w: Float32Array, outFeatures: number, inFeatures: number): Float32Array {
  return dequantPacked(repackInt8Rowwise(w, outFeatures, inFeatures));
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/**
 * NF4 / FP4 of W [out, in] in the engines' packed layout: q4 with the code values as lookup table. The
 * blocks of 64 run over the flattened weight; a group of gcd(64, in) inputs never straddles two blocks (nor
 * two rows), so each group takes its block's absmax.
 */
export function repack4bit(w: Float32Array, outFeatures: number, inFeatures: number, code: Float32Array, blocksize = BNB_BLOCKSIZE): PackedLinear {
  const q = quantize4bit(w, code, blocksize);
  const g = gcd(blocksize, inFeatures);
  const groups = inFeatures / g;
  const scales = new Float32Array(outFeatures * groups);
  for (let o = 0; o < outFeatures; o++) {
    for (let j = 0; j < groups; j++) scales[o * groups + j] = q.absmax[Math.floor((o * inFeatures + j * g) / blocksize)]!;
  }
  return checkPacked({
    layout: 'q4', codebook: 'lut', lut: code, outFeatures, inFeatures, groupSize: g,
    codes: packNibbles(outFeatures, inFeatures, (o, k) => q.codes[o * inFeatures + k]!), scales, zeros: null, perm: null,
  });
}

export type BnbMethod = 'bitsandbytes' | 'bitsandbytes-nf4' | 'bitsandbytes-fp4';

/** A bitsandbytes-quantized layer in the engines' packed layout, from the 16-bit weights (W [out, in]). */
export function bnbRepackAtLoad(method: BnbMethod, w: Float32Array, outFeatures: number, inFeatures: number): PackedLinear {
  if (method === 'bitsandbytes') return repackInt8Rowwise(w, outFeatures, inFeatures);
  return repack4bit(w, outFeatures, inFeatures, method === 'bitsandbytes-nf4' ? NF4_CODE : FP4_CODE);
}

/** The weights a bitsandbytes-quantized layer computes with, from the 16-bit ones (W [out, in]). */
export function bnbQuantizeAtLoad(method: BnbMethod, w: Float32Array, outFeatures: number, inFeatures: number): Float32Array {
  return dequantPacked(bnbRepackAtLoad(method, w, outFeatures, inFeatures));
}
