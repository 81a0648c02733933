// PyTorch checkpoints (torch.save's zip format, e.g. PEFT's adapter_model.bin) read WITHOUT running
// them. A pickle is a program; here a tiny interpreter runs only the opcodes torch.save emits for a
// dict of tensors, and resolves only an allow-list of globals (OrderedDict, torch's tensor/parameter
// rebuilders and storage classes). Anything else (os.system, builtins.eval, an object's __reduce__,
// ...) stops the read with an error naming what was met; nothing is ever called or imported.
//
// The container: a zip whose records are <prefix>/data.pkl (the pickle), <prefix>/data/<key> (raw
// storage bytes, usually stored uncompressed and 64-byte aligned), and <prefix>/byteorder. A stored,
// contiguous tensor becomes a (file, offset, nbytes) reference the engine reads itself, as with
// safetensors; a strided view or a deflated record is copied out into float32.
import { open, type FileHandle } from 'node:fs/promises';
import { inflateRawSync } from 'node:zlib';
import { bfloat16BitsToFloat32, float16BitsToFloat32, formatShape } from './safetensors.ts';

/** One tensor of the checkpoint, shaped like a safetensors entry (plus inline data when it had to be copied). */
export interface TorchTensorEntry {
  name: string;
  /** safetensors' dtype names: F32, F16, BF16, F64, I64, ... (the engine loads the first three). */
  dtype: string;
  shape: number[];
  /** Absolute offset of the data in the checkpoint file (stored, contiguous tensors). */
  offset: number;
  nbytes: number;
  /** float32 copy, for strided views and compressed records. */
  data?: Float32Array;
}

export class CheckpointError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CheckpointError';
  }
}

// ---------------------------------------------------------------------------------------------
// Zip container

interface ZipEntry {
  name: string;
  method: number;
  compressedSize: number;
  size: number;
  localHeader: number;
  encrypted: boolean;
}

const MAX_PICKLE_BYTES = 64 << 20;

async function readAt(fh: FileHandle, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  const { bytesRead } = await fh.read(buf, 0, length, offset);
  if (bytesRead !== length) throw new CheckpointError(`truncated (wanted ${length} bytes at ${offset})`);
  return buf;
}

function u64(b: Buffer, at: number): number {
  const v = b.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new CheckpointError('zip offset too large');
  return Number(v);
}

async function readCentralDirectory(fh: FileHandle, fileSize: number): Promise<ZipEntry[]> {
  const tailLen = Math.min(fileSize, 22 + 0xffff);
  const tail = await readAt(fh, fileSize - tailLen, tailLen);
  let eocd = -1;
  for (let i = tailLen - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new CheckpointError('not a zip archive (no end of central directory)');
  let count = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    // Zip64: a locator just before the EOCD points at the zip64 end record.
    const locAt = fileSize - tailLen + eocd - 20;
    const loc = await readAt(fh, locAt, 20);
    if (loc.readUInt32LE(0) !== 0x07064b50) throw new CheckpointError('zip64 locator missing');
    const rec = await readAt(fh, u64(loc, 8), 56);
    if (rec.readUInt32LE(0) !== 0x06064b50) throw new CheckpointError('zip64 end record missing');
    count = u64(rec, 32);
    cdSize = u64(rec, 40);
    cdOffset = u64(rec, 48);
  }
  if (cdSize > MAX_PICKLE_BYTES || cdOffset + cdSize > fileSize) throw new CheckpointError('central directory out of bounds');
  const cd = await readAt(fh, cdOffset, cdSize);
  const entries: ZipEntry[] = [];
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== 0x02014b50) throw new CheckpointError('corrupt central directory');
    const flags = cd.readUInt16LE(p + 8);
    const method = cd.readUInt16LE(p + 10);
    let compressedSize = cd.readUInt32LE(p + 20);
    let size = cd.readUInt32LE(p + 24);
    const nameLen = cd.readUInt16LE(p + 28);
    const extraLen = cd.readUInt16LE(p + 30);
    const commentLen = cd.readUInt16LE(p + 32);
    let localHeader = cd.readUInt32LE(p + 42);
    const name = cd.toString('utf-8', p + 46, p + 46 + nameLen);
    // Zip64 extended sizes/offset, in this order, for the fields that overflowed.
    let e = p + 46 + nameLen;
    const extraEnd = e + extraLen;
    while (e + 4 <= extraEnd) {
      const id = cd.readUInt16LE(e);
      const len = cd.readUInt16LE(e + 2);
      if (id === 0x0001) {
        let q = e + 4;
        if (size === 0xffffffff) (size = u64(cd, q)), (q += 8);
        if (compressedSize === 0xffffffff) (compressedSize = u64(cd, q)), (q += 8);
        if (localHeader === 0xffffffff) localHeader = u64(cd, q);
      }
      e += 4 + len;
    }
    entries.push({ name, method, compressedSize, size, localHeader, encrypted: (flags & 1) !== 0 });
    p = extraEnd + commentLen;
  }
  return entries;
}

async function dataStart(fh: FileHandle, entry: ZipEntry): Promise<number> {
  const h = await readAt(fh, entry.localHeader, 30);
  if (h.readUInt32LE(0) !== 0x04034b50) throw new CheckpointError(`record ${entry.name}: bad local header`);
  return entry.localHeader + 30 + h.readUInt16LE(26) + h.readUInt16LE(28);
}

async function readRecord(fh: FileHandle, entry: ZipEntry, limit: number): Promise<Buffer> {
  if (entry.encrypted) throw new CheckpointError(`record ${entry.name} is encrypted`);
  if (entry.size > limit) throw new CheckpointError(`record ${entry.name} is too large (${entry.size} bytes)`);
  const raw = await readAt(fh, await dataStart(fh, entry), entry.compressedSize);
  if (entry.method === 0) return raw;
  if (entry.method === 8) {
    const out = inflateRawSync(raw, { maxOutputLength: Math.max(1, entry.size) });
    if (out.length !== entry.size) throw new CheckpointError(`record ${entry.name}: inflated to ${out.length} bytes, expected ${entry.size}`);
    return out;
  }
  throw new CheckpointError(`record ${entry.name}: compression method ${entry.method} is not supported`);
}

// ---------------------------------------------------------------------------------------------
// The pickle machine

class Tuple {
  constructor(readonly items: unknown[]) {}
}
class Dict {
  readonly map = new Map<string | number, unknown>();
}
class Global {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  get qualname(): string {
    return `${this.module}.${this.name}`;
  }
}
class StorageRef {
  constructor(
    readonly dtype: string,
    readonly elementSize: number,
    readonly key: string,
    readonly numel: number,
  ) {}
}
class TensorRef {
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}
}
const MARK = Symbol('mark');

/** torch's legacy typed storage classes: what torch.save names a tensor's storage by. */
const STORAGES: Record<string, [dtype: string, bytes: number]> = {
  FloatStorage: ['F32', 4],
  HalfStorage: ['F16', 2],
  BFloat16Storage: ['BF16', 2],
  DoubleStorage: ['F64', 8],
  LongStorage: ['I64', 8],
  IntStorage: ['I32', 4],
  ShortStorage: ['I16', 2],
  CharStorage: ['I8', 1],
  ByteStorage: ['U8', 1],
  BoolStorage: ['BOOL', 1],
};

const ALLOWED_CALLS = new Set([
  'collections.OrderedDict',
  'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_parameter',
  'torch._utils._rebuild_parameter_with_state',
]);

function isAllowedGlobal(module: string, name: string): boolean {
  return ALLOWED_CALLS.has(`${module}.${name}`) || (module === 'torch' && name in STORAGES);
}

const OPNAMES: Record<number, string> = {
  0x69: 'INST', 0x6f: 'OBJ', 0x81: 'NEWOBJ', 0x92: 'NEWOBJ_EX', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4',
  0x50: 'PERSID', 0x49: 'INT', 0x4c: 'LONG', 0x46: 'FLOAT', 0x53: 'STRING', 0x56: 'UNICODE', 0x67: 'GET', 0x70: 'PUT',
  0x90: 'ADDITEMS', 0x8f: 'EMPTY_SET', 0x91: 'FROZENSET', 0x96: 'BYTEARRAY8', 0x97: 'NEXT_BUFFER', 0x98: 'READONLY_BUFFER',
};

function describe(v: unknown): string {
  if (v === null) return 'None';
  if (v instanceof Global) return v.qualname;
  if (v instanceof Tuple) return 'a tuple';
  if (v instanceof Dict) return 'a dict';
  if (v instanceof TensorRef) return 'a tensor';
  if (v instanceof StorageRef) return 'a storage';
  if (Array.isArray(v)) return 'a list';
  if (v instanceof Uint8Array) return 'bytes';
  return typeof v === 'string' ? 'a string' : typeof v;
}

function intOf(v: unknown, what: string): number {
  if (typeof v === 'number' && Number.isSafeInteger(v)) return v;
  if (typeof v === 'bigint' && v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(v);
  throw new CheckpointError(`${what}: expected an integer, got ${describe(v)}`);
}

function intTuple(v: unknown, what: string): number[] {
  if (!(v instanceof Tuple)) throw new CheckpointError(`${what}: expected a tuple, got ${describe(v)}`);
  return v.items.map((x) => intOf(x, what));
}

function isEmptyDict(v: unknown): boolean {
  return v instanceof Dict && v.map.size === 0;
}

/** Calls one allow-listed function on its (already unpickled) arguments. */
function call(fn: unknown, args: unknown): unknown {
  if (!(fn instanceof Global) || !ALLOWED_CALLS.has(fn.qualname)) {
    throw new CheckpointError(`calls ${describe(fn)}, which is not allowed`);
  }
  if (!(args instanceof Tuple)) throw new CheckpointError(`${fn.qualname}: arguments are ${describe(args)}`);
  const a = args.items;
  switch (fn.qualname) {
    case 'collections.OrderedDict': {
      const d = new Dict();
      if (a.length === 0) return d;
      if (a.length === 1 && Array.isArray(a[0])) {
        for (const pair of a[0]) {
          if (!(pair instanceof Tuple) || pair.items.length !== 2) throw new CheckpointError('OrderedDict: expected (key, value) pairs');
          setItem(d, pair.items[0], pair.items[1]);
        }
        return d;
      }
      throw new CheckpointError('OrderedDict: unexpected arguments');
    }
    case 'torch._utils._rebuild_tensor_v2': {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      if (a.length < 6 || a.length > 7) throw new CheckpointError(`_rebuild_tensor_v2: ${a.length} arguments`);
      const storage = a[0];
      if (!(storage instanceof StorageRef)) throw new CheckpointError(`_rebuild_tensor_v2: storage is ${describe(storage)}`);
      if (!isEmptyDict(a[5])) throw new CheckpointError('_rebuild_tensor_v2: tensors with backward hooks are not read');
      if (a.length === 7 && a[6] !== null && !isEmptyDict(a[6])) throw new CheckpointError('_rebuild_tensor_v2: tensors with extra metadata are not read');
      const shape = intTuple(a[2], 'tensor size');
      const stride = intTuple(a[3], 'tensor stride');
      if (shape.length !== stride.length) throw new CheckpointError('tensor size and stride differ in length');
      return new TensorRef(storage, intOf(a[1], 'storage offset'), shape, stride);
    }
    case 'torch._utils._rebuild_parameter':
    case 'torch._utils._rebuild_parameter_with_state': {
      const t = a[0];
      if (!(t instanceof TensorRef)) throw new CheckpointError(`${fn.name}: data is ${describe(t)}`);
      if (a.length > 2 && !isEmptyDict(a[2])) throw new CheckpointError(`${fn.name}: parameters with backward hooks are not read`);
      if (a.length > 3 && a[3] !== null && !isEmptyDict(a[3])) throw new CheckpointError(`${fn.name}: parameters with extra state are not read`);
      return t;
    }
  }
  throw new CheckpointError(`calls ${fn.qualname}, which is not allowed`);
}

function setItem(d: unknown, k: unknown, v: unknown): void {
  if (!(d instanceof Dict)) throw new CheckpointError(`SETITEM on ${describe(d)}`);
  if (typeof k !== 'string' && typeof k !== 'number') throw new CheckpointError(`dict key is ${describe(k)}`);
  d.map.set(k, v);
}

/** Runs the allow-listed subset of the pickle protocol (2 to 5) over `data`; returns the top object. */
export function unpickle(data: Uint8Array, persistentLoad: (pid: unknown) => unknown): unknown {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  let pos = 0;
  const stack: unknown[] = [];
  const memo = new Map<number, unknown>();
  const need = (n: number) => {
    if (pos + n > buf.length) throw new CheckpointError('pickle ends early');
  };
  const take = (n: number) => {
    need(n);
    const b = buf.subarray(pos, pos + n);
    pos += n;
    return b;
  };
  const line = () => {
    const end = buf.indexOf(0x0a, pos);
    if (end < 0) throw new CheckpointError('pickle ends early');
    const s = buf.toString('utf-8', pos, end);
    pos = end + 1;
    return s;
  };
  const pop = () => {
    if (stack.length === 0) throw new CheckpointError('pickle stack underflow');
    const v = stack.pop();
    if (v === MARK) throw new CheckpointError('pickle pops a mark');
    return v;
  };
  const popMark = () => {
    const i = stack.lastIndexOf(MARK);
    if (i < 0) throw new CheckpointError('pickle has no mark');
    const items = stack.splice(i);
    items.shift();
    return items;
  };
  const top = () => {
    if (stack.length === 0 || stack[stack.length - 1] === MARK) throw new CheckpointError('pickle stack underflow');
    return stack[stack.length - 1];
  };
  const getMemo = (i: number) => {
    if (!memo.has(i)) throw new CheckpointError(`pickle memo ${i} is unset`);
    return memo.get(i);
  };
  const global = (module: string, name: string) => {
    if (!isAllowedGlobal(module, name)) {
      throw new CheckpointError(`it references ${module}.${name}, which is not allowed (only tensors and dicts are read; a pickle can run code)`);
    }
    return new Global(module, name);
  };

  for (;;) {
    need(1);
    const at = pos;
    const op = buf[pos++]!;
    switch (op) {
      case 0x80: take(1); break; // PROTO
      case 0x95: take(8); break; // FRAME
      case 0x2e: { // STOP
        const v = pop();
        return v;
      }
      case 0x28: stack.push(MARK); break;
      case 0x30: pop(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: stack.push(top()); break; // DUP
      case 0x4e: stack.push(null); break; // NONE
      case 0x88: stack.push(true); break;
      case 0x89: stack.push(false); break;
      case 0x4a: stack.push(take(4).readInt32LE(0)); break; // BININT
      case 0x4b: stack.push(take(1)[0]!); break; // BININT1
      case 0x4d: stack.push(take(2).readUInt16LE(0)); break; // BININT2
      case 0x8a: case 0x8b: { // LONG1, LONG4
        const n = op === 0x8a ? take(1)[0]! : take(4).readUInt32LE(0);
        if (n > 64) throw new CheckpointError('integer too long');
        const bytes = take(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]!);
        if (n > 0 && bytes[n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
        stack.push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
        break;
      }
      case 0x47: stack.push(take(8).readDoubleBE(0)); break; // BINFLOAT
      case 0x8c: { const n = take(1)[0]!; stack.push(take(n).toString('utf-8')); break; } // SHORT_BINUNICODE
      case 0x58: { const n = take(4).readUInt32LE(0); stack.push(take(n).toString('utf-8')); break; } // BINUNICODE
      case 0x8d: { const n = u64(take(8), 0); stack.push(take(n).toString('utf-8')); break; } // BINUNICODE8
      case 0x55: { const n = take(1)[0]!; stack.push(take(n).toString('latin1')); break; } // SHORT_BINSTRING
      case 0x54: { const n = take(4).readInt32LE(0); if (n < 0) throw new CheckpointError('negative string length'); stack.push(take(n).toString('latin1')); break; } // BINSTRING
      case 0x43: { const n = take(1)[0]!; stack.push(new Uint8Array(take(n))); break; } // SHORT_BINBYTES
      case 0x42: { const n = take(4).readUInt32LE(0); stack.push(new Uint8Array(take(n))); break; } // BINBYTES
      case 0x8e: { const n = u64(take(8), 0); stack.push(new Uint8Array(take(n))); break; } // BINBYTES8
      case 0x7d: stack.push(new Dict()); break; // EMPTY_DICT
      case 0x5d: stack.push([]); break; // EMPTY_LIST
      case 0x29: stack.push(new Tuple([])); break; // EMPTY_TUPLE
      case 0x74: stack.push(new Tuple(popMark())); break; // TUPLE
      case 0x85: stack.push(new Tuple([pop()])); break;
      case 0x86: { const b = pop(); const a = pop(); stack.push(new Tuple([a, b])); break; }
      case 0x87: { const c = pop(); const b = pop(); const a = pop(); stack.push(new Tuple([a, b, c])); break; }
      case 0x6c: stack.push(popMark()); break; // LIST
      case 0x64: { // DICT
        const items = popMark();
        const d = new Dict();
        for (let i = 0; i + 1 < items.length; i += 2) setItem(d, items[i], items[i + 1]);
        stack.push(d);
        break;
      }
      case 0x71: memo.set(take(1)[0]!, top()); break; // BINPUT
      case 0x72: memo.set(take(4).readUInt32LE(0), top()); break; // LONG_BINPUT
      case 0x94: memo.set(memo.size, top()); break; // MEMOIZE
      case 0x68: stack.push(getMemo(take(1)[0]!)); break; // BINGET
      case 0x6a: stack.push(getMemo(take(4).readUInt32LE(0))); break; // LONG_BINGET
      case 0x73: { const v = pop(); const k = pop(); setItem(top(), k, v); break; } // SETITEM
      case 0x75: { // SETITEMS
        const items = popMark();
        const d = top();
        for (let i = 0; i + 1 < items.length; i += 2) setItem(d, items[i], items[i + 1]);
        break;
      }
      case 0x61: { const v = pop(); const l = top(); if (!Array.isArray(l)) throw new CheckpointError(`APPEND on ${describe(l)}`); l.push(v); break; }
      case 0x65: { const items = popMark(); const l = top(); if (!Array.isArray(l)) throw new CheckpointError(`APPENDS on ${describe(l)}`); l.push(...items); break; }
      case 0x63: { const module = line(); const name = line(); stack.push(global(module, name)); break; } // GLOBAL
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') throw new CheckpointError('STACK_GLOBAL without names');
        stack.push(global(module, name));
        break;
      }
      case 0x52: { const args = pop(); const fn = pop(); stack.push(call(fn, args)); break; } // REDUCE
      case 0x62: { // BUILD: only the attributes torch attaches to a state dict (_metadata) are accepted, and dropped.
        const state = pop();
        const obj = top();
        const attrs = state instanceof Tuple ? state.items[0] : state;
        if (!(obj instanceof Dict) || !(attrs instanceof Dict) || ![...attrs.map.keys()].every((k) => k === '_metadata')) {
          throw new CheckpointError(`BUILD (setting object state) on ${describe(obj)} is not allowed`);
        }
        break;
      }
      case 0x51: stack.push(persistentLoad(pop())); break; // BINPERSID
      default: {
        const name = OPNAMES[op] ?? `0x${op.toString(16).padStart(2, '0')}`;
        throw new CheckpointError(`pickle opcode ${name} (byte ${at}) is not allowed (only dicts of tensors are read)`);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Tensors out of the checkpoint

function contiguousStrides(shape: readonly number[]): number[] {
  const out = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    out[i] = s;
    s *= shape[i]!;
  }
  return out;
}

function isContiguous(t: TensorRef): boolean {
  const want = contiguousStrides(t.shape);
  return t.shape.every((d, i) => d === 1 || t.stride[i] === want[i]);
}

function toFloat32(bytes: Buffer, dtype: string, index: number): number {
  if (dtype === 'F32') return bytes.readFloatLE(index * 4);
  const bits = bytes.readUInt16LE(index * 2);
  return dtype === 'BF16' ? bfloat16BitsToFloat32(bits) : float16BitsToFloat32(bits);
}

/** Gathers a strided view into row-major float32 values. */
function gather(bytes: Buffer, t: TensorRef): Float32Array {
  const n = t.shape.reduce((a, d) => a * d, 1);
  const out = new Float32Array(n);
  const idx = new Array<number>(t.shape.length).fill(0);
  for (let i = 0; i < n; i++) {
    let src = t.offset;
    for (let d = 0; d < idx.length; d++) src += idx[d]! * t.stride[d]!;
    out[i] = toFloat32(bytes, t.storage.dtype, src);
    for (let d = idx.length - 1; d >= 0; d--) {
      if (++idx[d]! < t.shape[d]!) break;
      idx[d] = 0;
    }
  }
  return out;
}

/**
 * Reads the tensors of a torch.save zip checkpoint holding a dict (or OrderedDict) of tensors,
 * without executing anything. Errors name the file and what was refused.
 */
export async function readTorchCheckpoint(file: string): Promise<Map<string, TorchTensorEntry>> {
  let fh: FileHandle;
  try {
    fh = await open(file, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new CheckpointError(code === 'ENOENT' ? `${file}: not found` : `${file}: cannot read: ${(err as Error).message}`);
  }
  try {
    return await readOpen(fh, file);
  } catch (err) {
    if (err instanceof CheckpointError && !err.message.startsWith(`${file}:`)) throw new CheckpointError(`${file}: ${err.message}`);
    throw err;
  } finally {
    await fh.close();
  }
}

async function readOpen(fh: FileHandle, file: string): Promise<Map<string, TorchTensorEntry>> {
  const size = (await fh.stat()).size;
  const head = await readAt(fh, 0, Math.min(size, 4));
  if (head.length >= 2 && head[0] === 0x80 && head[1]! <= 5) {
    throw new CheckpointError('a legacy torch.save file (before PyTorch 1.6, not a zip); load and re-save it with a current PyTorch, or convert it to safetensors');
  }
  if (head.length < 4 || head.readUInt32LE(0) !== 0x04034b50) throw new CheckpointError('not a PyTorch checkpoint (neither a zip nor a pickle)');
  const entries = await readCentralDirectory(fh, size);
  const pkls = entries.filter((e) => e.name === 'data.pkl' || e.name.endsWith('/data.pkl'));
  if (pkls.length !== 1) throw new CheckpointError(`expected one data.pkl record, found ${pkls.length}`);
  const prefix = pkls[0]!.name.slice(0, -'data.pkl'.length);
  const byName = new Map(entries.map((e) => [e.name, e]));
  const order = byName.get(`${prefix}byteorder`);
  if (order) {
    const text = (await readRecord(fh, order, 16)).toString('latin1').trim();
    if (text !== 'little') throw new CheckpointError(`byte order "${text}" is not supported (little-endian only)`);
  }
  const storages = new Map<string, StorageRef>();
  const root = unpickle(await readRecord(fh, pkls[0]!, MAX_PICKLE_BYTES), (pid) => {
    if (!(pid instanceof Tuple) || pid.items[0] !== 'storage' || pid.items.length !== 5) {
      throw new CheckpointError(`persistent id ${describe(pid)} is not a tensor storage`);
    }
    const [, cls, key, , numel] = pid.items;
    if (!(cls instanceof Global) || cls.module !== 'torch' || !(cls.name in STORAGES)) throw new CheckpointError(`storage class ${describe(cls)} is not allowed`);
    if (typeof key !== 'string' || !/^[A-Za-z0-9_]+$/.test(key)) throw new CheckpointError('storage key is not a plain name');
    const [dtype, bytes] = STORAGES[cls.name]!;
    const prev = storages.get(key);
    if (prev) return prev;
    const ref = new StorageRef(dtype, bytes, key, intOf(numel, 'storage size'));
    storages.set(key, ref);
    return ref;
  });
  if (!(root instanceof Dict)) throw new CheckpointError(`holds ${describe(root)}, not a dict of tensors`);

  const out = new Map<string, TorchTensorEntry>();
  const copied = new Map<string, Buffer>();
  for (const [name, value] of root.map) {
    if (typeof name !== 'string') throw new CheckpointError(`key ${String(name)} is not a string`);
    if (!(value instanceof TensorRef)) throw new CheckpointError(`${name} is ${describe(value)}, not a tensor`);
    const s = value.storage;
    const record = byName.get(`${prefix}data/${s.key}`);
    if (!record) throw new CheckpointError(`${name}: storage record data/${s.key} is missing`);
    if (record.size !== s.numel * s.elementSize) {
      throw new CheckpointError(`${name}: storage data/${s.key} holds ${record.size} bytes, expected ${s.numel * s.elementSize}`);
    }
    const numel = value.shape.reduce((a, d) => a * d, 1);
    if (value.shape.some((d) => d < 0) || value.stride.some((d) => d < 0) || value.offset < 0) throw new CheckpointError(`${name}: negative size, stride or offset`);
    const extent = numel === 0 ? 0 : value.shape.reduce((a, d, i) => a + (d - 1) * value.stride[i]!, 1);
    if (value.offset + extent > s.numel) {
      throw new CheckpointError(`${name}: ${formatShape(value.shape)} at offset ${value.offset} runs past its storage (${s.numel} elements)`);
    }
    const entry: TorchTensorEntry = { name, dtype: s.dtype, shape: value.shape, offset: 0, nbytes: numel * s.elementSize };
    const loadable = s.dtype === 'F32' || s.dtype === 'F16' || s.dtype === 'BF16';
    if (record.method === 0 && isContiguous(value)) {
      entry.offset = (await dataStart(fh, record)) + value.offset * s.elementSize;
    } else if (loadable) {
      let bytes = copied.get(s.key);
      if (!bytes) {
        bytes = await readRecord(fh, record, Number.MAX_SAFE_INTEGER);
        copied.set(s.key, bytes);
      }
      entry.data = gather(bytes, value);
    }
    out.set(name, entry);
  }
  return out;
}
