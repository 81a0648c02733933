// FP8 (float8_e4m3fn) weights: decoding with per-tensor, per-channel or block scales as
// compressed-tensors / llm-compressor ("weight_scale"), transformers' fbgemm_fp8 ("weight_scale" [out, 1])
// and transformers' fine-grained fp8 ("weight_scale_inv" per block: despite the name, it multiplies)
// write them; and quantizing 16-bit weights at load (--quantize fp8 on an unquantized checkpoint). Both end in
// the engines' packed layout (packed.ts, q8 e4m3).

import { checkPacked, dequantPacked, type PackedLinear } from './packed.ts';

/** Every e4m3fn code's value: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities, S.1111.111 is NaN. */
export const E4M3_VALUES: Float32Array = (() => {
  const t = new Float32Array(256);
  for (let b = 0; b < 256; b++) {
    const sign = b & 0x80 ? -1 : 1;
    const e = (b >>> 3) & 0xf;
    const m = b & 7;
    if (e === 15 && m === 7) t[b] = NaN;
    else t[b] = sign * (e === 0 ? (m / 8) * 2 ** -6 : (1 + m / 8) * 2 ** (e - 7));
  }
  return t;
})();

export const E4M3_MAX = 448;

/** Nearest e4m3fn code (ties to the even code), saturating at +-448, as torch's cast after a clamp does. */
export function encodeE4M3(x: number): number {
  const a = Math.min(Math.abs(x), E4M3_MAX);
  if (Number.isNaN(x)) return 0x7f;
  // Positive codes 0..126 ascend with their values: binary search for the first code >= a.
  let lo = 0;
  let hi = 126;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (E4M3_VALUES[mid]! < a) lo = mid + 1;
    else hi = mid;
  }
  let code = lo;
  if (lo > 0) {
    const below = a - E4M3_VALUES[lo - 1]!;
    const above = E4M3_VALUES[lo]! - a;
    if (below < above || (below === above && (lo - 1) % 2 === 0)) code = lo - 1;
  }
  return x < 0 && code !== 0 ? code | 0x80 : code;
}

export interface Fp8Weight {
  /** e4m3fn codes of W [out, in], row-major. */
  codes: Uint8Array;
  outFeatures: number;
  inFeatures: number;
  /** The stored scale, as float32 values, and its stored shape. */
  scale: Float32Array;
  scaleShape: readonly number[];
  /** Block size [rows, cols] when the scale is per block (fine-grained fp8); from quantization_config. */
  blockSize?: readonly [number, number] | undefined;
}

/** How a scale of this shape applies to W [out, in]: one value, one per output row, or one per block. */
export function fp8ScaleLayout(w: Pick<Fp8Weight, 'outFeatures' | 'inFeatures' | 'scaleShape' | 'blockSize'>): 'tensor' | 'channel' | 'block' {
  const n = w.scaleShape.reduce((a, d) => a * d, 1);
  if (n === 1) return 'tensor';
  const [d0, d1] = w.scaleShape;
  if (n === w.outFeatures && (w.scaleShape.length === 1 || (w.scaleShape.length === 2 && d1 === 1))) return 'channel';
  if (w.scaleShape.length === 2 && w.blockSize) {
    const [br, bc] = w.blockSize;
    if (d0 === Math.ceil(w.outFeatures / br) && d1 === Math.ceil(w.inFeatures / bc)) return 'block';
  }
  const hint = w.blockSize ? `, or [${Math.ceil(w.outFeatures / w.blockSize[0])}, ${Math.ceil(w.inFeatures / w.blockSize[1])}] for blocks of ${w.blockSize.join('x')}` : '';
  throw new Error(`scale shape [${w.scaleShape.join(', ')}] fits neither per-tensor ([1]), per-channel ([${w.outFeatures}, 1])${hint}`);
}

/**
 * The engines' packed layout (packed.ts): the codes as they are (q8 e4m3), the scale repeated per output row
 * (tensor, channel) or per row and block of columns (block: groups of the block's width).
 */
export function repackFp8(w: Fp8Weight): PackedLinear {
  const { codes, outFeatures: out, inFeatures: inF, scale } = w;
  if (codes.length !== out * inF) throw new Error(`fp8 weight has ${codes.length} codes, [${out}, ${inF}] needs ${out * inF}`);
  const layout = fp8ScaleLayout(w);
  const [br, bc] = layout === 'block' ? w.blockSize! : [1, inF];
  const groups = Math.ceil(inF / bc);
  const scales = new Float32Array(out * groups);
  for (let r = 0; r < out; r++) {
    for (let j = 0; j < groups; j++) scales[r * groups + j] = layout === 'tensor' ? scale[0]! : layout === 'channel' ? scale[r]! : scale[Math.floor(r / br) * groups + j]!;
  }
  for (let i = 0; i < codes.length; i++) {
    if ((codes[i]! & 0x7f) === 0x7f) throw new Error(`fp8 weight holds a NaN code at [${Math.floor(i / inF)}, ${i % inF}]`);
  }
  return checkPacked({ layout: 'q8', codebook: 'e4m3', lut: null, outFeatures: out, inFeatures: inF, groupSize: bc, codes, scales, zeros: null, perm: null });
}

/** W [out, in] as float32: code value x scale, one float32 product per weight. */
export function dequantFp8(w: Fp8Weight): Float32Array {
  return dequantPacked(repackFp8(w), E4M3_VALUES);
}

/** --quantize fp8 on a 16-bit checkpoint: per-output-channel scale absmax / 448 (as fbgemm_fp8 does), e4m3fn codes. */
export function fp8RepackAtLoad(w: Float32Array, outFeatures: number, inFeatures: number): PackedLinear {
  const codes = new Uint8Array(w.length);
  const scales = new Float32Array(outFeatures);
  for (let r = 0; r < outFeatures; r++) {
    let absmax = 0;
    for (let c = 0; c < inFeatures; c++) absmax = Math.max(absmax, Math.abs(w[r * inFeatures + c]!));
    const scale = Math.fround(absmax / E4M3_MAX);
    if (scale === 0) continue;
    scales[r] = scale;
    for (let c = 0; c < inFeatures; c++) codes[r * inFeatures + c] = encodeE4M3(Math.fround(w[r * inFeatures + c]! / scale));
  }
  return checkPacked({ layout: 'q8', codebook: 'e4m3', lut: null, outFeatures, inFeatures, groupSize: inFeatures, codes, scales, zeros: null, perm: null });
}

/** fp8RepackAtLoad's weights dequantised: what the engine then computes with. */
export function fp8QuantizeAtLoad(w: Float32Array, outFeatures: number, inFeatures: number): Float32Array {
  return dequantPacked(fp8RepackAtLoad(w, outFeatures, inFeatures), E4M3_VALUES);
}
