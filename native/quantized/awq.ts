// AWQ checkpoints in AutoAWQ's GEMM layout (quant_method "awq", version "gemm"), dequantised to
// W [out, in]: qweight int32 [in, out/8] and qzeros int32 [in/group, out/8] hold eight 4-bit values per
// word in the interleaved order AutoAWQ packs (nibble i holds column AWQ_PACK_ORDER[i] of each eight),
// scales [in/group, out]; W^T[i, o] = (q[i, o] - zero[i/group, o]) * scale[i/group, o]. repackAwq turns it
// into the engines' packed layout (packed.ts).

import { checkPacked, dequantPacked, IDENTITY_LUT4, packNibbles, transposeF32, type PackedLinear } from './packed.ts';

/** Column (within each run of eight) stored in nibble i of a packed word. */
export const AWQ_PACK_ORDER = [0, 2, 4, 6, 1, 3, 5, 7] as const;
/** Bit shift of column c (within each run of eight): the inverse of AWQ_PACK_ORDER, times 4. */
const SHIFT_OF_COLUMN = (() => {
  const s = new Array<number>(8);
  AWQ_PACK_ORDER.forEach((col, nibble) => (s[col] = nibble * 4));
  return s;
})();

/** Unpacks an AWQ-packed int32 matrix [rows, cols/8] to 4-bit values [rows, cols]. */
export function unpackAwq(packed: Int32Array, rows: number, cols: number): Uint8Array {
  if (cols % 8 !== 0) throw new Error(`AWQ packs 8 columns per int32: ${cols} columns is not a multiple of 8`);
  if (packed.length !== (rows * cols) / 8) throw new Error(`AWQ packed matrix has ${packed.length} words, [${rows}, ${cols / 8}] needs ${(rows * cols) / 8}`);
  const out = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let w = 0; w < cols / 8; w++) {
      const word = packed[r * (cols / 8) + w]!;
      for (let c = 0; c < 8; c++) out[r * cols + w * 8 + c] = (word >>> SHIFT_OF_COLUMN[c]!) & 0xf;
    }
  }
  return out;
}

export interface AwqWeight {
  qweight: Int32Array;
  qzeros: Int32Array;
  /** float32 values of the stored (fp16) scales, [in/group, out]. */
  scales: Float32Array;
  inFeatures: number;
  outFeatures: number;
  groupSize: number;
}

/** The engines' packed layout (packed.ts): codes transposed to [out, in], zeros and scales to [out, groups]. */
export function repackAwq(w: AwqWeight): PackedLinear {
  const { inFeatures: inF, outFeatures: out, groupSize: g } = w;
  if (inF % g !== 0) throw new Error(`in_features ${inF} is not a multiple of the group size ${g}`);
  const groups = inF / g;
  if (w.scales.length !== groups * out) throw new Error(`scales have ${w.scales.length} values, [${groups}, ${out}] needs ${groups * out}`);
  const q = unpackAwq(w.qweight, inF, out);
  return checkPacked({
    layout: 'q4', codebook: 'lut', lut: IDENTITY_LUT4, outFeatures: out, inFeatures: inF, groupSize: g,
    codes: packNibbles(out, inF, (o, k) => q[k * out + o]!),
    scales: transposeF32(w.scales, groups, out),
    zeros: transposeF32(unpackAwq(w.qzeros, groups, out), groups, out),
    perm: null,
  });
}

/** W [out, in] (the nn.Linear layout) as float32. */
export function dequantAwq(w: AwqWeight): Float32Array {
  return dequantPacked(repackAwq(w));
}
