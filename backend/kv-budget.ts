// LoRAX's default --max-batch-total-tokens: the KV cache takes what is left of the device after
// the weights and the adapter reservation, within --cuda-memory-fraction, times
// --memory-wiggle-room (the rest: activations, CUDA graphs, allocator slack). Measured before the
// engine opens (the engine allocates its cache when it opens), so the weights are counted from
// their shapes at the compute element size rather than observed.

import { packedByteLength, type PackedLinear } from '../native/quantized/packed.ts';

export interface DeviceMemory {
  free: number;
  total: number;
}

export interface KvBudgetInput {
  device: DeviceMemory;
  cudaMemoryFraction: number;
  adapterMemoryFraction: number;
  memoryWiggleRoom: number;
  /** Bytes the weights take on the device. */
  weightBytes: number;
  /** K and V of one token over every layer. */
  kvBytesPerToken: number;
}

export interface KvBudget {
  tokens: number;
  /** One line saying where the number came from, for the start-up log. */
  explain: string;
}

const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;

export function kvTokensFromMemory(i: KvBudgetInput): KvBudget {
  const allowed = Math.min(i.device.free, i.device.total * i.cudaMemoryFraction);
  const adapters = i.device.total * i.adapterMemoryFraction;
  const left = allowed - i.weightBytes - adapters;
  const kv = Math.max(0, left) * i.memoryWiggleRoom;
  const tokens = Math.floor(kv / i.kvBytesPerToken);
  return {
    tokens,
    explain:
      `KV cache of ${tokens} tokens (${gib(kv)}): min(free ${gib(i.device.free)}, ${i.cudaMemoryFraction} x total ${gib(i.device.total)})` +
      ` - weights ${gib(i.weightBytes)} - adapters ${i.adapterMemoryFraction} x total (${gib(adapters)}), x ${i.memoryWiggleRoom} (--memory-wiggle-room)`,
  };
}

/** Bytes of one element at the CUDA engine's compute type (`auto`: 16-bit). */
export function elementBytes(dtype: string): number {
  return dtype === 'float32' ? 4 : 2;
}

/** Weight bytes on the device: every tensor's elements at the compute element size, quantized ones packed. */
export function deviceWeightBytes(tensors: readonly { shape: readonly number[]; packed?: PackedLinear | undefined }[], elemBytes: number): number {
  let n = 0;
  for (const t of tensors) n += t.packed ? packedByteLength(t.packed) : t.shape.reduce((a, b) => a * b, 1) * elemBytes;
  return n;
}
