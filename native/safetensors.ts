// The safetensors container format: an 8-byte little-endian header length, a JSON header, then raw tensor bytes.
// We only ever read the header here; the C++ engine reads tensor bytes itself from (file, offset, nbytes), so every
// offset we hand it must already be proven to lie inside the file.

import { open, writeFile } from 'node:fs/promises';
import type { NativeDType } from './addon.d.ts';

/** The same limit the reference implementation uses: a larger header means a corrupt or hostile file. */
export const MAX_HEADER_BYTES = 100_000_000;

/** The dtypes the engine can load as weights. */
export const WEIGHT_DTYPES: readonly NativeDType[] = ['F32', 'F16', 'BF16'];

/** Bits per element of every dtype the format defines (sub-byte float formats included). */
const DTYPE_BITS: Readonly<Record<string, number>> = {
  BOOL: 8, U8: 8, I8: 8, F8_E5M2: 8, F8_E4M3: 8, F8_E8M0: 8,
  I16: 16, U16: 16, F16: 16, BF16: 16,
  I32: 32, U32: 32, F32: 32,
  I64: 64, U64: 64, F64: 64, C64: 64,
  F4: 4, F6_E2M3: 6, F6_E3M2: 6,
};

export interface SafetensorsEntry {
  name: string;
  /** As written in the header; may be a dtype the engine cannot load (see requireWeightDtype). */
  dtype: string;
  shape: number[];
  /** Absolute byte offset of the tensor's data in the file. */
  offset: number;
  nbytes: number;
}

export interface SafetensorsHeader {
  file: string;
  fileSize: number;
  headerLength: number;
  /** Absolute offset where the data section (and data_offsets' origin) starts: 8 + headerLength. */
  dataOffset: number;
  metadata: Record<string, string> | null;
  tensors: Map<string, SafetensorsEntry>;
}

/** Bytes a tensor of this dtype and shape occupies, or null for a dtype this module does not know. */
export function dtypeByteSize(dtype: string, shape: readonly number[]): number | null {
  const bits = DTYPE_BITS[dtype];
  if (bits === undefined) return null;
  const totalBits = shape.reduce((n, d) => n * d, 1) * bits;
  return totalBits / 8;
}

export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** Narrows an entry's dtype to one the engine loads, or throws naming the tensor and file. */
export function requireWeightDtype(entry: SafetensorsEntry, file: string): NativeDType {
  if ((WEIGHT_DTYPES as readonly string[]).includes(entry.dtype)) return entry.dtype as NativeDType;
  throw new Error(
    `${file}: unsupported dtype ${entry.dtype} for tensor ${entry.name} (supported: ${WEIGHT_DTYPES.join(', ')})`,
  );
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isNonNegativeInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function parseEntry(file: string, name: string, raw: unknown, dataOffset: number, dataSize: number): SafetensorsEntry {
  const bad = (what: string): Error => new Error(`${file}: invalid header entry for tensor ${name}: ${what}`);
  if (!isPlainObject(raw)) throw bad('not an object');
  const { dtype, shape, data_offsets: offsets } = raw;
  if (typeof dtype !== 'string') throw bad('dtype is not a string');
  if (!Array.isArray(shape) || !shape.every(isNonNegativeInt)) throw bad('shape is not a list of non-negative integers');
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeInt)) {
    throw bad('data_offsets is not [begin, end]');
  }
  const [begin, end] = offsets as [number, number];
  if (end < begin) throw bad(`data_offsets [${begin}, ${end}] end before begin`);
  const nbytes = end - begin;
  const expected = dtypeByteSize(dtype, shape);
  if (expected !== null && expected !== nbytes) {
    throw bad(`${dtype} ${formatShape(shape)} needs ${expected} bytes but data_offsets span ${nbytes}`);
  }
  if (end > dataSize) {
    throw new Error(
      `${file}: truncated: tensor ${name} needs bytes up to ${dataOffset + end} but the file has ${dataOffset + dataSize}`,
    );
  }
  return { name, dtype, shape: shape as number[], offset: dataOffset + begin, nbytes };
}

function parseMetadata(file: string, raw: unknown): Record<string, string> {
  if (!isPlainObject(raw)) throw new Error(`${file}: __metadata__ is not an object`);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (typeof v !== 'string') throw new Error(`${file}: __metadata__.${k} is not a string`);
    out[k] = v;
  }
  return out;
}

/** Tensors sharing bytes would mean a corrupt header; the engine assumes each tensor owns its range. */
function checkNoOverlap(file: string, entries: SafetensorsEntry[]): void {
  const sorted = entries.filter((e) => e.nbytes > 0).sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (cur.offset < prev.offset + prev.nbytes) {
      throw new Error(`${file}: invalid header: tensors ${prev.name} and ${cur.name} overlap`);
    }
  }
}

/** Reads and validates the header of a safetensors file without touching tensor data. */
export async function readSafetensorsHeader(file: string): Promise<SafetensorsHeader> {
  let handle;
  try {
    handle = await open(file, 'r');
  } catch (err) {
    throw new Error(`${file}: cannot open: ${(err as Error).message}`);
  }
  try {
    const fileSize = (await handle.stat()).size;
    if (fileSize < 8) {
      throw new Error(`${file}: truncated: the file has ${fileSize} bytes, too few for a safetensors header length`);
    }
    const lenBuf = Buffer.alloc(8);
    await handle.read(lenBuf, 0, 8, 0);
    const headerLenBig = lenBuf.readBigUInt64LE(0);
    if (headerLenBig > BigInt(MAX_HEADER_BYTES)) {
      throw new Error(
        `${file}: header length ${headerLenBig} exceeds ${MAX_HEADER_BYTES} bytes (not a safetensors file, or corrupt)`,
      );
    }
    const headerLength = Number(headerLenBig);
    const dataOffset = 8 + headerLength;
    if (dataOffset > fileSize) {
      throw new Error(`${file}: truncated: the header needs bytes up to ${dataOffset} but the file has ${fileSize}`);
    }
    const headerBuf = Buffer.alloc(headerLength);
    const { bytesRead } = await handle.read(headerBuf, 0, headerLength, 8);
    if (bytesRead !== headerLength) {
      throw new Error(`${file}: truncated: read ${bytesRead} of ${headerLength} header bytes`);
    }

    let json: unknown;
    try {
      json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBuf));
    } catch (err) {
      throw new Error(`${file}: header is not valid UTF-8 JSON: ${(err as Error).message}`);
    }
    if (!isPlainObject(json)) throw new Error(`${file}: header is not a JSON object`);

    const dataSize = fileSize - dataOffset;
    const tensors = new Map<string, SafetensorsEntry>();
    let metadata: Record<string, string> | null = null;
    for (const [name, raw] of Object.entries(json)) {
      if (name === '__metadata__') {
        metadata = parseMetadata(file, raw);
        continue;
      }
      tensors.set(name, parseEntry(file, name, raw, dataOffset, dataSize));
    }
    checkNoOverlap(file, [...tensors.values()]);
    return { file, fileSize, headerLength, dataOffset, metadata, tensors };
  } finally {
    await handle.close();
  }
}

/**
 * The raw bytes of one tensor, for the quantized loaders (I32 / U8 / F8_E4M3 / 16-bit scale tensors the
 * engine does not take as weights). The range was checked against the file when the header was read.
 */
export async function readTensorBytes(file: string, entry: SafetensorsEntry): Promise<Uint8Array> {
  let handle;
  try {
    handle = await open(file, 'r');
  } catch (err) {
    throw new Error(`${file}: cannot open: ${(err as Error).message}`);
  }
  try {
    // A fresh ArrayBuffer: aligned for any typed-array view of it.
    const bytes = new Uint8Array(entry.nbytes);
    let done = 0;
    while (done < entry.nbytes) {
      const { bytesRead } = await handle.read(bytes, done, entry.nbytes - done, entry.offset + done);
      if (bytesRead === 0) throw new Error(`${file}: file ends inside tensor ${entry.name} (truncated?)`);
      done += bytesRead;
    }
    return bytes;
  } finally {
    await handle.close();
  }
}

// ---- Encoding: the format's other half, used to build fixtures. ----

export type WritableDType = NativeDType | 'F64' | 'I64' | 'I32';

export interface TensorToWrite {
  name: string;
  dtype: WritableDType;
  shape: number[];
  /** Values in row-major order; converted to `dtype` on write (integers are truncated toward zero). */
  data: Float32Array;
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** Round-to-nearest-even conversion to IEEE binary16, including subnormals, infinities and NaN. */
export function float32ToFloat16Bits(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half: shift the full 24-bit significand down, rounding on the bits shifted out.
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    let half = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (half & 1) === 1)) half++;
    return sign | half;
  }
  // A carry out of the mantissa correctly bumps the exponent (up to infinity).
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1) === 1)) half++;
  return sign | half;
}

export function float16BitsToFloat32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant !== 0 ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** bfloat16 is the top half of a float32; round to nearest even on the dropped half, as torch does. */
export function float32ToBfloat16Bits(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0]!;
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return ((x >>> 16) & 0x8000) | 0x7fc0;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bfloat16BitsToFloat32(bits: number): number {
  u32Scratch[0] = (bits & 0xffff) << 16;
  return f32Scratch[0]!;
}

function encodeTensor(t: TensorToWrite): Buffer {
  const n = t.data.length;
  const bytes = dtypeByteSize(t.dtype, t.shape);
  if (bytes === null) throw new Error(`writeSafetensors: unknown dtype ${t.dtype}`);
  if (t.shape.reduce((a, d) => a * d, 1) !== n) {
    throw new Error(`writeSafetensors: tensor ${t.name} has ${n} values but shape ${formatShape(t.shape)}`);
  }
  const buf = Buffer.alloc(bytes);
  for (let i = 0; i < n; i++) {
    const v = t.data[i]!;
    switch (t.dtype) {
      case 'F32': buf.writeFloatLE(v, i * 4); break;
      case 'F64': buf.writeDoubleLE(v, i * 8); break;
      case 'F16': buf.writeUInt16LE(float32ToFloat16Bits(v), i * 2); break;
      case 'BF16': buf.writeUInt16LE(float32ToBfloat16Bits(v), i * 2); break;
      case 'I32': buf.writeInt32LE(Math.trunc(v), i * 4); break;
      case 'I64': buf.writeBigInt64LE(BigInt(Math.trunc(v)), i * 8); break;
    }
  }
  return buf;
}

/** Writes a safetensors file laid out as the reference writer does (header space-padded to 8 bytes). */
export async function writeSafetensors(
  file: string,
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string>,
): Promise<void> {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  const blobs: Buffer[] = [];
  let cursor = 0;
  for (const t of tensors) {
    if (t.name === '__metadata__' || t.name in header) throw new Error(`writeSafetensors: duplicate name ${t.name}`);
    const blob = encodeTensor(t);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [cursor, cursor + blob.length] };
    blobs.push(blob);
    cursor += blob.length;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const headerBuf = Buffer.from(json, 'utf-8');
  const lenBuf = Buffer.alloc(8);
  lenBuf.writeBigUInt64LE(BigInt(headerBuf.length));
  await writeFile(file, Buffer.concat([lenBuf, headerBuf, ...blobs]));
}
