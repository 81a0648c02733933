// Quantized linear weights -> engine tensor refs: each quantized projection is repacked (or, for the
// at-load methods, quantized) into the engines' packed layout (packed.ts), which the CUDA engine keeps on
// the device and computes with (kernels/quant_gemm.cuh) and the CPU engine dequantises to float32 at load.

import { endianness } from 'node:os';
import type { NativeTensorRef } from '../addon.d.ts';
import { bfloat16BitsToFloat32, float16BitsToFloat32, formatShape, readTensorBytes, type SafetensorsEntry } from '../safetensors.ts';
import { readTensorF32 } from '../tensor-data.ts';
import { repackAwq } from './awq.ts';
import { bnbRepackAtLoad } from './bitsandbytes.ts';
import { fp8RepackAtLoad, repackFp8 } from './fp8.ts';
import { repackGptq } from './gptq.ts';
import type { PackedLinear } from './packed.ts';
import type { QuantScheme } from './scheme.ts';

if (endianness() !== 'LE') throw new Error('quantized checkpoints are read on little-endian hosts only');

export type EntryLookup = (name: string) => { file: string; entry: SafetensorsEntry } | undefined;

export interface QuantizedLinear {
  ref: NativeTensorRef;
  /** Bytes read from disk for this weight (packed values, zeros, scales, ...). */
  diskBytes: number;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

class Parts {
  diskBytes = 0;
  constructor(private readonly lookup: EntryLookup, readonly prefix: string) {}

  has(suffix: string): boolean {
    return this.lookup(`${this.prefix}.${suffix}`) !== undefined;
  }

  private async raw(suffix: string, dtypes: readonly string[], shape?: readonly number[]): Promise<{ bytes: Uint8Array; entry: SafetensorsEntry; file: string }> {
    const name = `${this.prefix}.${suffix}`;
    const found = this.lookup(name);
    if (found === undefined) throw new Error(`missing tensor ${name}`);
    const { file, entry } = found;
    if (!dtypes.includes(entry.dtype)) throw new Error(`${file}: tensor ${name} has dtype ${entry.dtype} (expected ${dtypes.join(' or ')})`);
    if (shape !== undefined && !sameShape(entry.shape, shape)) {
      throw new Error(`${file}: tensor ${name} has shape ${formatShape(entry.shape)} but the layer needs ${formatShape(shape)}`);
    }
    this.diskBytes += entry.nbytes;
    return { bytes: await readTensorBytes(file, entry), entry, file };
  }

  async int32(suffix: string, shape?: readonly number[]): Promise<Int32Array> {
    const { bytes, entry } = await this.raw(suffix, ['I32', 'I64'], shape);
    if (entry.dtype === 'I32') return new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    const wide = new BigInt64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8);
    return Int32Array.from(wide, (v) => Number(v));
  }

  async uint8(suffix: string, dtypes: readonly string[], shape?: readonly number[]): Promise<Uint8Array> {
    return (await this.raw(suffix, dtypes, shape)).bytes;
  }

  /** A float tensor's values as float32, with its stored shape. */
  async floats(suffix: string, shape?: readonly number[]): Promise<{ values: Float32Array; shape: number[] }> {
    const { bytes, entry } = await this.raw(suffix, ['F16', 'BF16', 'F32'], shape);
    const n = entry.shape.reduce((a, d) => a * d, 1);
    if (entry.dtype === 'F32') return { values: new Float32Array(bytes.buffer, bytes.byteOffset, n), shape: entry.shape };
    const u16 = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
    const conv = entry.dtype === 'BF16' ? bfloat16BitsToFloat32 : float16BitsToFloat32;
    return { values: Float32Array.from(u16, conv), shape: entry.shape };
  }
}

/**
 * The packed weight of the linear layer `prefix` (e.g. model.layers.0.self_attn.q_proj), or null when
 * the checkpoint holds that layer unquantized (a module the quantizer skipped): the caller then loads
 * `${prefix}.weight` as usual. `plain` gives that usual ref, for the methods that quantize at load.
 */
export async function loadQuantizedLinear(
  scheme: QuantScheme,
  prefix: string,
  outFeatures: number,
  inFeatures: number,
  lookup: EntryLookup,
  plain: () => NativeTensorRef,
): Promise<QuantizedLinear | null> {
  const p = new Parts(lookup, prefix);
  const at = (e: unknown): never => {
    throw new Error(`${prefix}: ${(e as Error).message}`);
  };
  const name = `${prefix}.weight`;
  const packed = (p: PackedLinear): NativeTensorRef => ({ name, dtype: 'F32', shape: [outFeatures, inFeatures], packed: p });
  try {
    switch (scheme.method) {
      case 'awq': {
        if (!p.has('qweight')) return null;
        const g = scheme.groupSize;
        if (inFeatures % g !== 0) throw new Error(`in_features ${inFeatures} is not a multiple of the AWQ group size ${g}`);
        if (outFeatures % 8 !== 0) throw new Error(`out_features ${outFeatures} is not a multiple of 8 (AWQ packing)`);
        const qweight = await p.int32('qweight', [inFeatures, outFeatures / 8]);
        const qzeros = await p.int32('qzeros', [inFeatures / g, outFeatures / 8]);
        const scales = (await p.floats('scales', [inFeatures / g, outFeatures])).values;
        return { ref: packed(repackAwq({ qweight, qzeros, scales, inFeatures, outFeatures, groupSize: g })), diskBytes: p.diskBytes };
      }
      case 'gptq': {
        if (!p.has('qweight')) return null;
        const per = 32 / scheme.bits;
        const g = scheme.groupSize === -1 ? inFeatures : scheme.groupSize;
        if (inFeatures % per !== 0 || outFeatures % per !== 0) {
          throw new Error(`[${outFeatures}, ${inFeatures}] does not pack into ${scheme.bits}-bit GPTQ words (both must be multiples of ${per})`);
        }
        const groups = Math.ceil(inFeatures / g);
        const qweight = await p.int32('qweight', [inFeatures / per, outFeatures]);
        const qzeros = await p.int32('qzeros', [groups, outFeatures / per]);
        const scales = (await p.floats('scales', [groups, outFeatures])).values;
        const gIdx = p.has('g_idx') ? await p.int32('g_idx', [inFeatures]) : null;
        if (gIdx === null && scheme.descAct) throw new Error('act-order (desc_act) checkpoint without g_idx');
        const w = repackGptq({ qweight, qzeros, scales, gIdx, inFeatures, outFeatures, bits: scheme.bits, groupSize: g, zeroOffset: scheme.zeroOffset });
        return { ref: packed(w), diskBytes: p.diskBytes };
      }
      case 'fp8': {
        const found = lookup(name);
        if (found === undefined || found.entry.dtype !== 'F8_E4M3') return null;
        const codes = await p.uint8('weight', ['F8_E4M3'], [outFeatures, inFeatures]);
        const scaleName = p.has('weight_scale') ? 'weight_scale' : p.has('weight_scale_inv') ? 'weight_scale_inv' : null;
        if (scaleName === null) throw new Error('FP8 weight without weight_scale or weight_scale_inv');
        const scale = await p.floats(scaleName);
        const w = repackFp8({ codes, outFeatures, inFeatures, scale: scale.values, scaleShape: scale.shape, blockSize: scheme.blockSize ?? undefined });
        return { ref: packed(w), diskBytes: p.diskBytes };
      }
      case 'fp8-at-load':
      case 'bitsandbytes':
      case 'bitsandbytes-nf4':
      case 'bitsandbytes-fp4': {
        const base = plain();
        const w = await readTensorF32(base);
        const q = scheme.method === 'fp8-at-load' ? fp8RepackAtLoad(w, outFeatures, inFeatures) : bnbRepackAtLoad(scheme.method, w, outFeatures, inFeatures);
        return { ref: packed(q), diskBytes: base.nbytes ?? 0 };
      }
    }
  } catch (e) {
    return at(e);
  }
}
