// Reading a tensor's values in JS, for the few places that compute on weights outside the engine
// (e.g. merging LoRA adapters per request). The engine itself reads file refs in C++ (src/tensor-io.cc);
// this is the same contract: a ref is either inline Float32Array data or (file, offset, nbytes) bytes
// of an F32 / F16 / BF16 little-endian tensor, and it comes back as float32 values in row-major order.

import { open } from 'node:fs/promises';
import { endianness } from 'node:os';
import type { NativeTensorRef } from './addon.d.ts';
import { bfloat16BitsToFloat32, dtypeByteSize, float16BitsToFloat32, formatShape } from './safetensors.ts';

const LITTLE_ENDIAN_HOST = endianness() === 'LE';

function numel(shape: readonly number[]): number {
  return shape.reduce((n, d) => n * d, 1);
}

function where(ref: NativeTensorRef): string {
  return ref.file !== undefined ? `tensor ${ref.name} in ${ref.file}` : `tensor ${ref.name}`;
}

/** Converts raw little-endian bytes of `dtype` to float32 values. */
function decode(bytes: Uint8Array, dtype: NativeTensorRef['dtype'], n: number): Float32Array {
  const out = new Float32Array(n);
  if (LITTLE_ENDIAN_HOST && bytes.byteOffset % 4 === 0) {
    if (dtype === 'F32') {
      out.set(new Float32Array(bytes.buffer, bytes.byteOffset, n));
      return out;
    }
    const u16 = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
    if (dtype === 'BF16') {
      // bfloat16 is the top half of a float32 (bfloat16BitsToFloat32, without a call per value).
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) bits[i] = u16[i]! << 16;
    } else {
      for (let i = 0; i < n; i++) out[i] = float16BitsToFloat32(u16[i]!);
    }
    return out;
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < n; i++) {
    if (dtype === 'F32') out[i] = view.getFloat32(i * 4, true);
    else if (dtype === 'BF16') out[i] = bfloat16BitsToFloat32(view.getUint16(i * 2, true));
    else out[i] = float16BitsToFloat32(view.getUint16(i * 2, true));
  }
  return out;
}

/**
 * The values of a tensor as float32: inline data as is (checked against the shape), or the bytes
 * [offset, offset + nbytes) of `file` converted from F32 / F16 / BF16. Errors name the tensor and file.
 */
export async function readTensorF32(ref: NativeTensorRef): Promise<Float32Array> {
  const n = numel(ref.shape);
  if (ref.data !== undefined && ref.data !== null) {
    if (ref.data.length !== n) {
      throw new Error(`${where(ref)}: inline data has ${ref.data.length} values but shape ${formatShape(ref.shape)} needs ${n}`);
    }
    return ref.data;
  }
  if (ref.file === undefined || ref.offset === undefined || ref.nbytes === undefined) {
    throw new Error(`${where(ref)}: has neither inline data nor a file, offset and nbytes`);
  }
  if (ref.dtype !== 'F32' && ref.dtype !== 'F16' && ref.dtype !== 'BF16') {
    throw new Error(`${where(ref)}: unsupported dtype ${String(ref.dtype)} (supported: F32, F16, BF16)`);
  }
  const expected = dtypeByteSize(ref.dtype, ref.shape)!;
  if (ref.nbytes !== expected) {
    throw new Error(`${where(ref)}: ${ref.nbytes} bytes for ${ref.dtype} ${formatShape(ref.shape)}, which needs ${expected}`);
  }
  if (!Number.isSafeInteger(ref.offset) || ref.offset < 0) throw new Error(`${where(ref)}: invalid offset ${ref.offset}`);

  let handle;
  try {
    handle = await open(ref.file, 'r');
  } catch (err) {
    throw new Error(`${where(ref)}: cannot open: ${(err as Error).message}`);
  }
  // A fresh ArrayBuffer is aligned for any typed-array view of it.
  const bytes = new Uint8Array(expected);
  try {
    let done = 0;
    while (done < expected) {
      const { bytesRead } = await handle.read(bytes, done, expected - done, ref.offset + done);
      if (bytesRead === 0) {
        throw new Error(
          `${where(ref)}: file ends before the tensor does (read ${done} of ${expected} bytes at offset ${ref.offset}; truncated?)`,
        );
      }
      done += bytesRead;
    }
  } catch (err) {
    const msg = (err as Error).message;
    throw msg.startsWith(where(ref)) ? err : new Error(`${where(ref)}: read failed: ${msg}`);
  } finally {
    await handle.close();
  }
  return decode(bytes, ref.dtype, n);
}
