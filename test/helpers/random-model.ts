// Writes a small random Llama/Qwen2-shaped model directory (and LoRA adapters for it) for tests
// that check the engine's own invariants (paging, batching, bad input). Numerical truth comes
// from the transformers + PEFT fixtures under test/fixtures, not from these.
import { mkdtemp, mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeSafetensors } from '../../native/safetensors.ts';
import { mulberry32 } from './prng.ts';

export interface RandomModelOptions {
  arch?: 'llama' | 'qwen2' | 'mistral';
  hidden?: number;
  intermediate?: number;
  layers?: number;
  heads?: number;
  kvHeads?: number;
  vocab?: number;
  slidingWindow?: number | null;
  seed?: number;
}

/** Deterministic normal(0, 1) stream (mulberry32 + Box-Muller). */
export function randn(seed: number): () => number {
  const uni = mulberry32(seed);
  // 1 - u keeps the logarithm's argument in (0, 1].
  return () => Math.sqrt(-2 * Math.log(1 - uni())) * Math.cos(2 * Math.PI * uni());
}

function tensor(rand: () => number, shape: number[], std: number, mean = 0) {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = mean + std * rand();
  return data;
}

export async function writeRandomModel(opts: RandomModelOptions = {}): Promise<string> {
  const arch = opts.arch ?? 'llama';
  const H = opts.hidden ?? 32, I = opts.intermediate ?? 64, L = opts.layers ?? 2;
  const NH = opts.heads ?? 4, NKV = opts.kvHeads ?? 2, V = opts.vocab ?? 96, D = H / NH;
  const rand = randn(opts.seed ?? 1);
  const dir = await mkdtemp(join(tmpdir(), `sb-model-${arch}-`));
  const config: Record<string, unknown> = {
    architectures: [arch === 'llama' ? 'LlamaForCausalLM' : arch === 'qwen2' ? 'Qwen2ForCausalLM' : 'MistralForCausalLM'],
    model_type: arch,
    hidden_size: H,
    intermediate_size: I,
    num_hidden_layers: L,
    num_attention_heads: NH,
    num_key_value_heads: NKV,
    vocab_size: V,
    max_position_embeddings: 512,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    tie_word_embeddings: arch === 'qwen2',
    torch_dtype: 'float32',
    bos_token_id: 1,
    eos_token_id: 2,
  };
  if (arch === 'mistral') config.sliding_window = opts.slidingWindow ?? 8;
  const t: { name: string; dtype: 'F32'; shape: number[]; data: Float32Array }[] = [];
  const add = (name: string, shape: number[], std: number, mean = 0) =>
    t.push({ name, dtype: 'F32', shape, data: tensor(rand, shape, std, mean) });
  add('model.embed_tokens.weight', [V, H], 1);
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}.`;
    add(p + 'input_layernorm.weight', [H], 0.1, 1);
    add(p + 'post_attention_layernorm.weight', [H], 0.1, 1);
    add(p + 'self_attn.q_proj.weight', [NH * D, H], 1 / Math.sqrt(H));
    add(p + 'self_attn.k_proj.weight', [NKV * D, H], 1 / Math.sqrt(H));
    add(p + 'self_attn.v_proj.weight', [NKV * D, H], 1 / Math.sqrt(H));
    add(p + 'self_attn.o_proj.weight', [H, NH * D], 1 / Math.sqrt(H));
    if (arch === 'qwen2') {
      add(p + 'self_attn.q_proj.bias', [NH * D], 0.1);
      add(p + 'self_attn.k_proj.bias', [NKV * D], 0.1);
      add(p + 'self_attn.v_proj.bias', [NKV * D], 0.1);
    }
    add(p + 'mlp.gate_proj.weight', [I, H], 1 / Math.sqrt(H));
    add(p + 'mlp.up_proj.weight', [I, H], 1 / Math.sqrt(H));
    add(p + 'mlp.down_proj.weight', [H, I], 1 / Math.sqrt(I));
  }
  add('model.norm.weight', [H], 0.1, 1);
  if (arch !== 'qwen2') add('lm_head.weight', [V, H], 2 / Math.sqrt(H));
  await writeFile(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  await writeSafetensors(join(dir, 'model.safetensors'), t);
  return dir;
}

/** A PEFT-layout LoRA adapter for a model written by writeRandomModel. */
export async function writeRandomAdapter(
  modelDir: string,
  name: string,
  opts: { r: number; alpha: number; targets: string[]; seed: number; hidden?: number; intermediate?: number; heads?: number; kvHeads?: number; layers?: number; vocab?: number },
): Promise<string> {
  const H = opts.hidden ?? 32, I = opts.intermediate ?? 64, L = opts.layers ?? 2;
  const NH = opts.heads ?? 4, NKV = opts.kvHeads ?? 2, D = H / NH;
  const dims: Record<string, [number, number]> = {
    q_proj: [H, NH * D], k_proj: [H, NKV * D], v_proj: [H, NKV * D], o_proj: [NH * D, H],
    gate_proj: [H, I], up_proj: [H, I], down_proj: [I, H],
  };
  const rand = randn(opts.seed);
  const dir = join(modelDir, 'adapters', name);
  await mkdir(dir, { recursive: true });
  const t: { name: string; dtype: 'F32'; shape: number[]; data: Float32Array }[] = [];
  // The model-level modules, named as PEFT saves them (an Embedding LoRA's factors have no ".weight").
  const V = opts.vocab ?? 96;
  if (opts.targets.includes('embed_tokens')) {
    const p = 'base_model.model.model.embed_tokens.';
    t.push({ name: p + 'lora_embedding_A', dtype: 'F32', shape: [opts.r, V], data: tensor(rand, [opts.r, V], 1) });
    t.push({ name: p + 'lora_embedding_B', dtype: 'F32', shape: [H, opts.r], data: tensor(rand, [H, opts.r], 0.3) });
  }
  if (opts.targets.includes('lm_head')) {
    t.push({ name: 'base_model.model.lm_head.lora_A.weight', dtype: 'F32', shape: [opts.r, H], data: tensor(rand, [opts.r, H], 1 / Math.sqrt(H)) });
    t.push({ name: 'base_model.model.lm_head.lora_B.weight', dtype: 'F32', shape: [V, opts.r], data: tensor(rand, [V, opts.r], 0.3) });
  }
  for (let l = 0; l < L; l++) {
    for (const m of opts.targets) {
      if (m === 'embed_tokens' || m === 'lm_head') continue;
      const [inF, outF] = dims[m]!;
      const mod = ['gate_proj', 'up_proj', 'down_proj'].includes(m) ? 'mlp' : 'self_attn';
      const p = `base_model.model.model.layers.${l}.${mod}.${m}.`;
      t.push({ name: p + 'lora_A.weight', dtype: 'F32', shape: [opts.r, inF], data: tensor(rand, [opts.r, inF], 1 / Math.sqrt(inF)) });
      t.push({ name: p + 'lora_B.weight', dtype: 'F32', shape: [outF, opts.r], data: tensor(rand, [outF, opts.r], 0.3) });
    }
  }
  await writeFile(
    join(dir, 'adapter_config.json'),
    JSON.stringify({ peft_type: 'LORA', r: opts.r, lora_alpha: opts.alpha, target_modules: opts.targets, bias: 'none', base_model_name_or_path: modelDir }),
  );
  await writeSafetensors(join(dir, 'adapter_model.safetensors'), t);
  return dir;
}
