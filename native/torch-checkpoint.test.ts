// The allow-list torch.save reader against checkpoints torch itself wrote (test/fixtures/pickle, made
// by scripts/make-interop-fixtures.py): same values as the safetensors twins, views and dtypes, and
// malicious pickles refused by name without anything running.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { copyFile, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { NativeDType, NativeTensorRef } from './addon.d.ts';
import { openModelDir } from './model-dir.ts';
import { openPeftAdapter } from './peft-adapter.ts';
import { readSafetensorsHeader } from './safetensors.ts';
import { readTensorF32 } from './tensor-data.ts';
import { CheckpointError, readTorchCheckpoint, unpickle, type TorchTensorEntry } from './torch-checkpoint.ts';

const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../test/fixtures');
const PICKLE = path.join(FIXTURES, 'pickle');
const R16 = path.join(FIXTURES, 'adapters/llama/r16-all');

function ref(e: TorchTensorEntry, file: string): NativeTensorRef {
  return e.data
    ? { name: e.name, dtype: 'F32', shape: e.shape, data: e.data }
    : { name: e.name, dtype: e.dtype as NativeDType, shape: e.shape, file, offset: e.offset, nbytes: e.nbytes };
}

/** Every tensor of `bin` has the values and shape of the same-named tensor of the safetensors twin. */
async function sameAsSafetensors(bin: string, st: string): Promise<Map<string, TorchTensorEntry>> {
  const got = await readTorchCheckpoint(bin);
  const want = (await readSafetensorsHeader(st)).tensors;
  assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
  for (const [name, w] of want) {
    const g = got.get(name)!;
    assert.deepEqual(g.shape, w.shape, name);
    const a = await readTensorF32(ref(g, bin));
    const b = await readTensorF32({ name, dtype: w.dtype as NativeDType, shape: w.shape, file: st, offset: w.offset, nbytes: w.nbytes });
    assert.deepEqual(a, b, `${name} values`);
  }
  return got;
}

describe('readTorchCheckpoint', () => {
  it("reads PEFT's adapter_model.bin: the r16-all adapter's tensors, referenced in place", async () => {
    const bin = path.join(PICKLE, 'r16-all.bin');
    const got = await sameAsSafetensors(bin, path.join(R16, 'adapter_model.safetensors'));
    // Stored records of contiguous tensors are not copied: the engine reads them from the zip.
    for (const e of got.values()) {
      assert.equal(e.data, undefined);
      assert.equal(e.dtype, 'F32');
      assert.ok(e.offset > 0 && e.nbytes === e.shape.reduce((a, d) => a * d, 4));
    }
  });

  it('reads deflated records (copied out)', async () => {
    const got = await sameAsSafetensors(path.join(PICKLE, 'deflated.bin'), path.join(R16, 'adapter_model.safetensors'));
    assert.ok([...got.values()].every((e) => e.data instanceof Float32Array));
  });

  it('reads float16, bfloat16, float32 and 0-d tensors of an OrderedDict', async () => {
    const got = await sameAsSafetensors(path.join(PICKLE, 'dtypes.bin'), path.join(PICKLE, 'dtypes.safetensors'));
    assert.deepEqual([...got.keys()], ['half', 'bf16', 'f32', 'scalar'], 'order kept');
    assert.deepEqual([...got.values()].map((e) => e.dtype), ['F16', 'BF16', 'F32', 'F32']);
  });

  it('reads views of one storage (offsets, transposes, strided columns) and parameters', async () => {
    const got = await sameAsSafetensors(path.join(PICKLE, 'views.bin'), path.join(PICKLE, 'views.safetensors'));
    const whole = got.get('whole')!;
    const slice = got.get('slice')!;
    assert.equal(slice.offset, whole.offset + 8 * 4, 'a contiguous slice points into the shared storage');
    assert.ok(got.get('transposed')!.data && got.get('column')!.data, 'strided views are gathered');
  });

  it("reads a module's state_dict (an OrderedDict carrying _metadata)", async () => {
    const got = await readTorchCheckpoint(path.join(PICKLE, 'state-dict.bin'));
    assert.deepEqual([...got.keys()], ['0.weight', '0.bias']);
    assert.deepEqual(got.get('0.weight')!.shape, [2, 4]);
  });

  it('reports dtypes it does not load as such, for the caller to refuse', async () => {
    const got = await readTorchCheckpoint(path.join(PICKLE, 'int64.bin'));
    assert.equal(got.get('ids')!.dtype, 'I64');
  });

  it('refuses pickles that would run code, naming what they call, and runs nothing', async () => {
    const marker = '/tmp/switchboard-pickle-ran';
    await assert.rejects(readTorchCheckpoint(path.join(PICKLE, 'malicious-system.bin')), (e: Error) => {
      assert.ok(e instanceof CheckpointError);
      assert.match(e.message, /malicious-system\.bin: it references posix\.system, which is not allowed \(only tensors and dicts are read; a pickle can run code\)/);
      return true;
    });
    await assert.rejects(readTorchCheckpoint(path.join(PICKLE, 'malicious-eval.bin')), /it references __builtin__\.eval, which is not allowed/);
    assert.equal(existsSync(marker), false);
  });

  it('refuses the legacy format and files that are no checkpoint', async () => {
    await assert.rejects(readTorchCheckpoint(path.join(PICKLE, 'legacy.bin')), /a legacy torch\.save file \(before PyTorch 1\.6, not a zip\)/);
    const dir = await mkdtemp(path.join(tmpdir(), 'sb-ckpt-'));
    await writeFile(path.join(dir, 'x.bin'), 'hello world');
    await assert.rejects(readTorchCheckpoint(path.join(dir, 'x.bin')), /x\.bin: not a PyTorch checkpoint/);
    await assert.rejects(readTorchCheckpoint(path.join(dir, 'none.bin')), /none\.bin: not found/);
  });
});

describe('unpickle (the allow-list machine)', () => {
  const P = (...parts: (number[] | string)[]) =>
    Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : Buffer.from(p))));
  const none = () => {
    throw new Error('no persistent ids here');
  };

  it('builds dicts, lists, tuples and OrderedDicts', () => {
    // {'a': [1, 2], 'b': (True, None)} then an OrderedDict() built by REDUCE
    const pkl = P([0x80, 2], '}', '(', [0x8c, 1], 'a', ']', '(', 'K', [1], 'K', [2], 'e', [0x8c, 1], 'b', [0x88], 'N', [0x86], 'u', '.');
    const v = unpickle(pkl, none) as { map: Map<string, unknown> };
    assert.deepEqual(v.map.get('a'), [1, 2]);
    const od = unpickle(P([0x80, 2], 'ccollections\nOrderedDict\n', ')', 'R', '.'), none) as { map: Map<string, unknown> };
    assert.equal(od.map.size, 0);
  });

  it('refuses every global off the list and opcodes torch.save never writes', () => {
    assert.throws(() => unpickle(P([0x80, 2], 'cbuiltins\nexec\n', '.'), none), /references builtins\.exec, which is not allowed/);
    assert.throws(() => unpickle(P([0x80, 4], [0x8c, 2], 'os', [0x8c, 6], 'system', [0x93], '.'), none), /references os\.system/);
    assert.throws(() => unpickle(P('(', 'i', 'os\nsystem\n', '.'), none), /opcode INST \(byte 1\) is not allowed/);
    assert.throws(() => unpickle(P([0x80, 2], ')', [0x81], '.'), none), /opcode NEWOBJ/);
    // A call of anything but an allowed global: REDUCE on a string.
    assert.throws(() => unpickle(P([0x80, 2], [0x8c, 1], 'x', ')', 'R', '.'), none), /calls a string, which is not allowed/);
    assert.throws(() => unpickle(P([0x80, 2], '}', ']', 'b', '.'), none), /BUILD \(setting object state\) on a dict is not allowed/);
    assert.throws(() => unpickle(P([0x80, 2], '}'), none), /pickle ends early/);
    assert.throws(() => unpickle(P([0x80, 2], 'h', [9], '.'), none), /memo 9 is unset/);
  });

  it('an adapter dir with adapter_model.bin only loads like its safetensors twin', async () => {
    const model = await openModelDir(path.join(FIXTURES, 'models/llama'));
    const dir = await mkdtemp(path.join(tmpdir(), 'sb-bin-adapter-'));
    await copyFile(path.join(R16, 'adapter_config.json'), path.join(dir, 'adapter_config.json'));
    await copyFile(path.join(PICKLE, 'r16-all.bin'), path.join(dir, 'adapter_model.bin'));
    const bin = await openPeftAdapter(dir, model);
    const st = await openPeftAdapter(R16, model);
    assert.equal(bin.spec.modules.length, st.spec.modules.length);
    for (let i = 0; i < st.spec.modules.length; i++) {
      const [x, y] = [bin.spec.modules[i]!, st.spec.modules[i]!];
      assert.deepEqual([x.layer, x.module, x.rank, x.scale], [y.layer, y.module, y.rank, y.scale]);
      assert.equal(x.a.file, path.join(dir, 'adapter_model.bin'));
      assert.deepEqual(await readTensorF32(x.a), await readTensorF32(y.a));
      assert.deepEqual(await readTensorF32(x.b), await readTensorF32(y.b));
    }
    // A malicious .bin in an adapter dir is refused by name.
    await copyFile(path.join(PICKLE, 'malicious-system.bin'), path.join(dir, 'adapter_model.bin'));
    await assert.rejects(openPeftAdapter(dir, model), /adapter_model\.bin: it references posix\.system/);
  });
});
