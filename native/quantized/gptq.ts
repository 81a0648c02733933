// GPTQ checkpoints (AutoGPTQ / GPTQModel, quant_method "gptq"), dequantised to W [out, in]:
// qweight int32 [in * bits / 32, out] packs 32/bits input rows per word (row j of a word at bit bits*j),
// qzeros int32 [groups, out * bits / 32] packs zero points along the output dim the same way, scales
// [groups, out], g_idx int32 [in] the group of each input row (a permuted map under act-order, desc_act).
// The v1 checkpoint format ("gptq") stores zero - 1 and readers add the 1 back after masking, so a stored
// all-ones field reads as 2^bits (the format's known flaw, kept for fidelity); "gptq_v2" stores the zero as is.
// W^T[i, o] = scale[g, o] * (q[i, o] - zero[g, o]) with g = g_idx[i]. repackGptq turns it into the engines'
// packed layout (packed.ts).

import { checkPacked, dequantPacked, IDENTITY_LUT4, packNibbles, type PackedLinear } from './packed.ts';

export type GptqBits = 2 | 4 | 8;

/** Values [rows * (32/bits), cols] of a matrix packed along its rows: word (r, c) holds rows r*per .. r*per+per-1. */
export function unpackGptqRows(packed: Int32Array, packedRows: number, cols: number, bits: GptqBits): Uint8Array {
  const per = 32 / bits;
  const mask = (1 << bits) - 1;
  if (packed.length !== packedRows * cols) throw new Error(`packed matrix has ${packed.length} words, [${packedRows}, ${cols}] needs ${packedRows * cols}`);
  const out = new Uint8Array(packedRows * per * cols);
  for (let r = 0; r < packedRows; r++) {
    for (let c = 0; c < cols; c++) {
      const word = packed[r * cols + c]!;
      for (let j = 0; j < per; j++) out[(r * per + j) * cols + c] = (word >>> (bits * j)) & mask;
    }
  }
  return out;
}

/** Values [rows, packedCols * (32/bits)] of a matrix packed along its columns (GPTQ's qzeros). */
export function unpackGptqCols(packed: Int32Array, rows: number, packedCols: number, bits: GptqBits): Uint8Array {
  const per = 32 / bits;
  const mask = (1 << bits) - 1;
  if (packed.length !== rows * packedCols) throw new Error(`packed matrix has ${packed.length} words, [${rows}, ${packedCols}] needs ${rows * packedCols}`);
  const cols = packedCols * per;
  const out = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < packedCols; c++) {
      const word = packed[r * packedCols + c]!;
      for (let j = 0; j < per; j++) out[r * cols + c * per + j] = (word >>> (bits * j)) & mask;
    }
  }
  return out;
}

export interface GptqWeight {
  qweight: Int32Array;
  qzeros: Int32Array;
  /** float32 values of the stored scales, [groups, out]. */
  scales: Float32Array;
  /** Group of each input row; null: row i is in group i / groupSize (checkpoints without g_idx). */
  gIdx: Int32Array | null;
  inFeatures: number;
  outFeatures: number;
  bits: GptqBits;
  /** Input rows per group (in_features when quantization_config says -1). */
  groupSize: number;
  /** 1 for the v1 checkpoint format (stored zero - 1), 0 for gptq_v2. */
  zeroOffset: 0 | 1;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/**
 * The engines' packed layout (packed.ts): 2- and 4-bit codes as q4, 8-bit as q8 (u8), zeros with the v1
 * offset added back. Act-order (a g_idx that is not i / group_size) becomes a permutation of the inputs that
 * sorts them by group (exact: each output is the same sum over the same products), and the packed group
 * size the largest run length every group boundary of the sorted order falls on.
 */
export function repackGptq(w: GptqWeight): PackedLinear {
  const { inFeatures: inF, outFeatures: out, bits, groupSize } = w;
  const per = 32 / bits;
  if (inF % per !== 0) throw new Error(`in_features ${inF} is not a multiple of ${per} (${bits}-bit values packed per int32)`);
  if (out % per !== 0) throw new Error(`out_features ${out} is not a multiple of ${per} (${bits}-bit zero points packed per int32)`);
  const groups = w.scales.length / out;
  if (!Number.isInteger(groups) || groups < 1) throw new Error(`scales have ${w.scales.length} values, not a multiple of out_features ${out}`);
  if (w.qweight.length !== (inF / per) * out) throw new Error(`qweight has ${w.qweight.length} words, [${inF / per}, ${out}] needs ${(inF / per) * out}`);
  if (w.gIdx !== null && w.gIdx.length !== inF) throw new Error(`g_idx has ${w.gIdx.length} entries, in_features is ${inF}`);
  const gOf = new Int32Array(inF);
  for (let i = 0; i < inF; i++) {
    const g = w.gIdx !== null ? w.gIdx[i]! : Math.floor(i / groupSize);
    if (g < 0 || g >= groups) throw new Error(`g_idx[${i}] = ${g} is outside the ${groups} groups the scales have`);
    gOf[i] = g;
  }
  // Inputs sorted by group (stable); identity unless act-order.
  const order = Int32Array.from({ length: inF }, (_, i) => i).sort((a, b) => gOf[a]! - gOf[b]! || a - b);
  const perm = order.every((v, i) => v === i) ? null : order;
  let run = 0;
  for (let k = 1; k < inF; k++) if (gOf[order[k]!] !== gOf[order[k - 1]!]) run = gcd(run, k);
  if (run === 0) run = inF;
  const chunks = Math.ceil(inF / run);
  const q = unpackGptqRows(w.qweight, inF / per, out, bits);
  const z = unpackGptqCols(w.qzeros, groups, out / per, bits);
  const scales = new Float32Array(out * chunks);
  const zeros = new Float32Array(out * chunks);
  for (let o = 0; o < out; o++) {
    for (let c = 0; c < chunks; c++) {
      const g = gOf[order[c * run]!]!;
      scales[o * chunks + c] = w.scales[g * out + o]!;
      zeros[o * chunks + c] = z[g * out + o]! + w.zeroOffset;
    }
  }
  const value = (o: number, k: number) => q[order[k]! * out + o]!;
  const codes = bits === 8 ? Uint8Array.from({ length: out * inF }, (_, i) => value(Math.floor(i / inF), i % inF)) : packNibbles(out, inF, value);
  return checkPacked({
    layout: bits === 8 ? 'q8' : 'q4', codebook: bits === 8 ? 'u8' : 'lut', lut: bits === 8 ? null : IDENTITY_LUT4,
    outFeatures: out, inFeatures: inF, groupSize: run, codes, scales, zeros, perm,
  });
}

/** W [out, in] (the nn.Linear layout) as float32. */
export function dequantGptq(w: GptqWeight): Float32Array {
  return dequantPacked(repackGptq(w));
}
