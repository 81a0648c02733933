import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  bfloat16BitsToFloat32, dtypeByteSize, float16BitsToFloat32, float32ToBfloat16Bits, float32ToFloat16Bits,
  readSafetensorsHeader, requireWeightDtype, writeSafetensors,
} from './safetensors.ts';

let tmp: string;
before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'sb-safetensors-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** A file with a hand-written header, to produce headers writeSafetensors never would. */
async function writeRaw(name: string, header: unknown, dataBytes: number, lengthOverride?: bigint): Promise<string> {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthOverride ?? BigInt(json.length));
  const file = path.join(tmp, name);
  await writeFile(file, Buffer.concat([len, json, Buffer.alloc(dataBytes)]));
  return file;
}

describe('float conversions', () => {
  test('float32 -> float16 rounds to nearest even, with subnormals and specials', () => {
    const cases: Array<[number, number]> = [
      [0, 0x0000], [-0, 0x8000], [1, 0x3c00], [-2, 0xc000], [0.5, 0x3800], [0.1, 0x2e66],
      [65504, 0x7bff], [65520, 0x7c00], [1e6, 0x7c00], [-Infinity, 0xfc00],
      [2 ** -14, 0x0400], [2 ** -24, 0x0001], [2 ** -25, 0x0000], [3 * 2 ** -26, 0x0001],
      [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02],
    ];
    for (const [v, bits] of cases) assert.equal(float32ToFloat16Bits(v), bits, `f16(${v})`);
    assert.equal(float32ToFloat16Bits(NaN) & 0x7c00, 0x7c00);
    assert.notEqual(float32ToFloat16Bits(NaN) & 0x3ff, 0);
    assert.equal(float16BitsToFloat32(0x3c02), 1 + 2 ** -9);
    assert.equal(float16BitsToFloat32(0x0001), 2 ** -24);
  });

  test('float32 -> bfloat16 rounds to nearest even', () => {
    assert.equal(float32ToBfloat16Bits(1), 0x3f80);
    assert.equal(float32ToBfloat16Bits(1 + 2 ** -8), 0x3f80); // tie, stays even
    assert.equal(float32ToBfloat16Bits(1 + 3 * 2 ** -8), 0x3f82); // tie, rounds up to even
    assert.equal(float32ToBfloat16Bits(1 + 2 ** -8 + 2 ** -20), 0x3f81); // above the tie
    assert.equal(float32ToBfloat16Bits(-Infinity), 0xff80);
    assert.equal(float32ToBfloat16Bits(NaN), 0x7fc0);
    assert.equal(bfloat16BitsToFloat32(0x3f82), 1 + 2 ** -6);
  });
});

describe('readSafetensorsHeader', () => {
  test('round-trips F32/F16/BF16 tensors and metadata written by writeSafetensors', async () => {
    const file = path.join(tmp, 'roundtrip.safetensors');
    const values = new Float32Array([1, -2, 0.5, 3.25, 1 + 3 * 2 ** -8, 100]);
    await writeSafetensors(
      file,
      [
        { name: 'a', dtype: 'F32', shape: [2, 3], data: values },
        { name: 'b', dtype: 'F16', shape: [6], data: values },
        { name: 'c', dtype: 'BF16', shape: [3, 2], data: values },
        { name: 'empty', dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
      ],
      { format: 'pt' },
    );
    const h = await readSafetensorsHeader(file);
    assert.equal(h.headerLength % 8, 0);
    assert.equal(h.dataOffset, 8 + h.headerLength);
    assert.deepEqual(h.metadata, { format: 'pt' });
    assert.deepEqual([...h.tensors.keys()], ['a', 'b', 'c', 'empty']);
    const a = h.tensors.get('a')!;
    const b = h.tensors.get('b')!;
    const c = h.tensors.get('c')!;
    assert.deepEqual(a, { name: 'a', dtype: 'F32', shape: [2, 3], offset: h.dataOffset, nbytes: 24 });
    assert.deepEqual(b, { name: 'b', dtype: 'F16', shape: [6], offset: h.dataOffset + 24, nbytes: 12 });
    assert.deepEqual(c, { name: 'c', dtype: 'BF16', shape: [3, 2], offset: h.dataOffset + 36, nbytes: 12 });
    assert.equal(h.fileSize, h.dataOffset + 48);

    const bytes = await readFile(file);
    const f32 = Array.from({ length: 6 }, (_, i) => bytes.readFloatLE(a.offset + 4 * i));
    assert.deepEqual(f32, [...values]);
    const f16 = Array.from({ length: 6 }, (_, i) => float16BitsToFloat32(bytes.readUInt16LE(b.offset + 2 * i)));
    assert.deepEqual(f16, [...values]); // all exactly representable in binary16
    const bf16 = Array.from({ length: 6 }, (_, i) => bfloat16BitsToFloat32(bytes.readUInt16LE(c.offset + 2 * i)));
    assert.deepEqual(bf16, [1, -2, 0.5, 3.25, 1 + 2 ** -6, 100]);
  });

  test('a file cut short is reported as truncated, naming the tensor and sizes', async () => {
    const file = path.join(tmp, 'model.safetensors');
    await writeSafetensors(file, [
      { name: 'x', dtype: 'F32', shape: [4], data: new Float32Array(4) },
      { name: 'model.layers.1.mlp.down_proj.weight', dtype: 'F32', shape: [4, 4], data: new Float32Array(16) },
    ]);
    const full = (await readSafetensorsHeader(file)).fileSize;
    await truncate(file, full - 10);
    await assert.rejects(readSafetensorsHeader(file), (err: Error) => {
      assert.equal(
        err.message,
        `${file}: truncated: tensor model.layers.1.mlp.down_proj.weight needs bytes up to ${full} but the file has ${full - 10}`,
      );
      return true;
    });
    await truncate(file, 20);
    await assert.rejects(readSafetensorsHeader(file), /truncated: the header needs bytes up to \d+ but the file has 20/);
    await truncate(file, 3);
    await assert.rejects(readSafetensorsHeader(file), /truncated/);
  });

  test('rejects insane header lengths, bad JSON and inconsistent entries', async () => {
    const huge = await writeRaw('huge.safetensors', {}, 0, 1n << 40n);
    await assert.rejects(readSafetensorsHeader(huge), /header length 1099511627776 exceeds 100000000 bytes/);
    const notJson = await writeRaw('notjson.safetensors', '{"a": ', 0);
    await assert.rejects(readSafetensorsHeader(notJson), /notjson\.safetensors: header is not valid UTF-8 JSON/);
    const arr = await writeRaw('array.safetensors', '[1, 2]', 0);
    await assert.rejects(readSafetensorsHeader(arr), /header is not a JSON object/);
    const size = await writeRaw('size.safetensors', { w: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 12] } }, 12);
    await assert.rejects(readSafetensorsHeader(size), /tensor w: F32 \[2, 2\] needs 16 bytes but data_offsets span 12/);
    const order = await writeRaw('order.safetensors', { w: { dtype: 'F32', shape: [1], data_offsets: [8, 4] } }, 8);
    await assert.rejects(readSafetensorsHeader(order), /end before begin/);
    const shape = await writeRaw('shape.safetensors', { w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 4);
    await assert.rejects(readSafetensorsHeader(shape), /shape is not a list of non-negative integers/);
    const overlap = await writeRaw('overlap.safetensors', {
      p: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
      q: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
    }, 12);
    await assert.rejects(readSafetensorsHeader(overlap), /tensors p and q overlap/);
    const meta = await writeRaw('meta.safetensors', { __metadata__: { n: 1 } }, 0);
    await assert.rejects(readSafetensorsHeader(meta), /__metadata__\.n is not a string/);
    await assert.rejects(readSafetensorsHeader(path.join(tmp, 'absent.safetensors')), /absent\.safetensors: cannot open/);
  });

  test('parses every dtype but only F32/F16/BF16 pass requireWeightDtype', async () => {
    const file = path.join(tmp, 'dtypes.safetensors');
    await writeSafetensors(file, [
      { name: 'ids', dtype: 'I64', shape: [3], data: new Float32Array([1, 2, 3]) },
      { name: 'w64', dtype: 'F64', shape: [2], data: new Float32Array([1, 2]) },
      { name: 'ok', dtype: 'BF16', shape: [2], data: new Float32Array([1, 2]) },
    ]);
    const h = await readSafetensorsHeader(file);
    assert.equal(h.tensors.get('ids')!.nbytes, 24);
    assert.equal(requireWeightDtype(h.tensors.get('ok')!, file), 'BF16');
    assert.throws(
      () => requireWeightDtype(h.tensors.get('w64')!, file),
      { message: `${file}: unsupported dtype F64 for tensor w64 (supported: F32, F16, BF16)` },
    );
    assert.throws(() => requireWeightDtype(h.tensors.get('ids')!, file), /unsupported dtype I64 for tensor ids/);
    // An exotic or future dtype still parses (its size just goes unchecked) so it cannot block unrelated tensors.
    const exotic = await writeRaw('exotic.safetensors', { q: { dtype: 'Q4_K', shape: [32], data_offsets: [0, 18] } }, 18);
    assert.equal((await readSafetensorsHeader(exotic)).tensors.get('q')!.nbytes, 18);
    assert.equal(dtypeByteSize('F8_E4M3', [3, 5]), 15);
    assert.equal(dtypeByteSize('Q4_K', [1]), null);
  });
});
