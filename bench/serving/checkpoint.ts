// Random-weight checkpoints for the serving benchmark, streamed to disk: a Mistral-7B-shaped model
// is 14.5 GB in bf16, past what one Buffer (and test/helpers/random-model.ts's in-memory writer)
// can hold, and drawing 7 billion normals in JS would take minutes. Each tensor is instead cut
// from a pool of a million N(0, std) values at a random offset: the weights are random and finite,
// which is all timing needs (numerical truth lives in test/fixtures, not here).
// Tensor names and shapes come from native/model-dir.ts's expectedModelTensors, the loader's own
// contract, so whatever architecture the config names is written the way the engine reads it.
import { copyFile, mkdir, open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LORA_MODULES, modelSpecFields, moduleParent, parseModelConfig, projectionFeatures } from '../../native/model-config.ts';
import type { ModelSpecFields } from '../../native/model-config.ts';
import { expectedModelTensors } from '../../native/model-dir.ts';
import { mulberry32 } from '../../test/helpers/prng.ts';

export type Dtype = 'F32' | 'BF16';

const FIXTURE_TOKENIZER = join(import.meta.dirname, '..', '..', 'test', 'fixtures', 'models', 'llama');
// The fixture tokenizer's special tokens (tokenizer.json's added_tokens).
const BOS = 562;
const EOS = [563, 566];

/** Model shapes by name. vocab 576 matches the fixture tokenizer; Mistral-7B keeps its own 32000
 *  (ids past the tokenizer's vocabulary decode to nothing, as the Rust tokenizers do). */
export const SHAPES: Record<string, Record<string, unknown>> = {
  tiny: { architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 64, intermediate_size: 176, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 576 },
  small: { architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 256, intermediate_size: 704, num_hidden_layers: 4, num_attention_heads: 8, num_key_value_heads: 4, vocab_size: 576 },
  // Mistral-7B's config at a CPU-sized width: the same code path (architecture, bf16, vocab 32000) in seconds.
  'mistral-mini': {
    architectures: ['MistralForCausalLM'], model_type: 'mistral', hidden_size: 128, intermediate_size: 448, num_hidden_layers: 2,
    num_attention_heads: 4, num_key_value_heads: 2, head_dim: 32, vocab_size: 32000, rope_theta: 1e6, sliding_window: null,
  },
  'mistral-7b': {
    architectures: ['MistralForCausalLM'], model_type: 'mistral', hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32,
    num_attention_heads: 32, num_key_value_heads: 8, head_dim: 128, vocab_size: 32000, rope_theta: 1e6, sliding_window: null,
  },
};

/** N(0, std) pools, one per std, in the file's byte layout (little-endian f32, or bf16 by truncation). */
class Pools {
  private readonly pools = new Map<number, Buffer>();
  /** Values per pool: a million, or the largest tensor's size where that is less (tiny shapes write in milliseconds). */
  readonly size: number;
  constructor(private readonly dtype: Dtype, private readonly seed: number, largest: number) {
    this.size = Math.min(1 << 20, largest);
  }

  get(std: number): Buffer {
    let p = this.pools.get(std);
    if (p) return p;
    const u = mulberry32(this.seed + this.pools.size * 7919);
    const POOL = this.size;
    const f = new Float32Array(POOL);
    // std 0 marks a norm weight: ones, as a freshly initialised RMSNorm has.
    for (let i = 0; i < POOL; i++) f[i] = std === 0 ? 1 : std * Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
    if (this.dtype === 'F32') p = Buffer.from(f.buffer);
    else {
      const bits = new Uint32Array(f.buffer);
      const h = new Uint16Array(POOL);
      for (let i = 0; i < POOL; i++) h[i] = bits[i]! >>> 16;
      p = Buffer.from(h.buffer);
    }
    this.pools.set(std, p);
    return p;
  }
}

interface Planned {
  name: string;
  shape: number[];
  std: number;
}

/** One safetensors file, written tensor by tensor from the pools. */
async function writeShard(file: string, tensors: Planned[], dtype: Dtype, pools: Pools, rand: () => number): Promise<void> {
  const width = dtype === 'F32' ? 4 : 2;
  const header: Record<string, unknown> = {};
  let cursor = 0;
  for (const t of tensors) {
    const bytes = t.shape.reduce((a, b) => a * b, 1) * width;
    header[t.name] = { dtype, shape: t.shape, data_offsets: [cursor, cursor + bytes] };
    cursor += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  const fh = await open(file, 'w');
  try {
    await fh.write(Buffer.concat([len, Buffer.from(json)]));
    for (const t of tensors) {
      const pool = pools.get(t.std);
      let left = t.shape.reduce((a, b) => a * b, 1) * width;
      let off = Math.floor(rand() * pools.size) * width;
      while (left > 0) {
        const n = Math.min(left, pool.length - off);
        await fh.write(pool, off, n);
        left -= n;
        off = 0;
      }
    }
  } finally {
    await fh.close();
  }
}

const largest = (groups: Map<string, Planned[]>) => Math.max(1, ...[...groups.values()].flat().map((t) => t.shape.reduce((a, b) => a * b, 1)));

export interface Checkpoint {
  dir: string;
  spec: ModelSpecFields;
  /** Bytes of weights written. */
  bytes: number;
}

/** A model directory: config.json, the fixture tokenizer, and one weight shard per layer (plus one for embeddings and head). */
export async function writeCheckpoint(dir: string, shape: string, dtype: Dtype, seed = 1): Promise<Checkpoint> {
  const base = SHAPES[shape];
  if (!base) throw new Error(`unknown --shape ${shape} (one of ${Object.keys(SHAPES).join(', ')})`);
  const config = {
    ...base,
    max_position_embeddings: 4096, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false,
    ...('rope_theta' in base ? { rope_theta: base.rope_theta } : {}),
    torch_dtype: dtype === 'F32' ? 'float32' : 'bfloat16', bos_token_id: BOS, eos_token_id: EOS,
  };
  const spec = modelSpecFields(parseModelConfig(config));
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) await copyFile(join(FIXTURE_TOKENIZER, f), join(dir, f));
  const groups = new Map<string, Planned[]>();
  let bytes = 0;
  for (const t of expectedModelTensors(spec)) {
    if (t.slice) throw new Error(`--shape ${shape}: fused checkpoints are not written by this bench`);
    const layer = /^model\.layers\.(\d+)\./.exec(t.name)?.[1];
    const key = layer === undefined ? 'outer' : `layer${layer.padStart(4, '0')}`;
    const std = t.shape.length === 1 ? 0 : t.name.includes('embed_tokens') ? 1 : 1 / Math.sqrt(t.shape[1]!);
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key)!.push({ name: t.name, shape: t.shape, std });
    bytes += t.shape.reduce((a, b) => a * b, 1) * (dtype === 'F32' ? 4 : 2);
  }
  const pools = new Pools(dtype, seed, largest(groups));
  const rand = mulberry32(seed ^ 0x5eed);
  for (const [key, tensors] of groups) await writeShard(join(dir, `model-${key}.safetensors`), tensors, dtype, pools, rand);
  return { dir, spec, bytes };
}

/** A PEFT LoRA adapter directory (rank r on all seven projections) for `spec`, under dir/name. */
export async function writeAdapter(dir: string, spec: ModelSpecFields, dtype: Dtype, r: number, seed: number): Promise<string> {
  await mkdir(dir, { recursive: true });
  const tensors: Planned[] = [];
  for (let l = 0; l < spec.numLayers; l++) {
    for (const m of LORA_MODULES) {
      const { inFeatures, outFeatures } = projectionFeatures(spec, m);
      const p = `base_model.model.model.layers.${l}.${moduleParent(m)}.${m}`;
      tensors.push({ name: `${p}.lora_A.weight`, shape: [r, inFeatures], std: 1 / Math.sqrt(inFeatures) });
      tensors.push({ name: `${p}.lora_B.weight`, shape: [outFeatures, r], std: 0.05 });
    }
  }
  await writeShard(join(dir, 'adapter_model.safetensors'), tensors, dtype, new Pools(dtype, seed, largest(new Map([['', tensors]]))), mulberry32(seed));
  await writeFile(join(dir, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r, lora_alpha: 2 * r, target_modules: [...LORA_MODULES], bias: 'none' }));
  return dir;
}
