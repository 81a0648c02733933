// GPU benchmark of issue 18's families at real shapes with synthetic weights (bf16, no checkpoint
// downloaded): Gemma-2-9B (head_dim 256, soft-capping, sandwich norms, gelu-tanh), Phi-3-mini
// (head_dim 96) and Qwen3-30B-A3B (128 experts, 8 per token). Decode ms/step at context 1024 for
// batches 1/16/64 (and batch 16 with 16 rank-16 adapters), TTFT of a 512-token prompt, each beside
// its bandwidth floor as bench.ts does for Mistral-7B: the bytes a step must read (weights, KV
// cache, adapters) over the measured copy bandwidth (ceilings.json). For the MoE only the experts a
// step touches count: with B tokens routing to k of E experts, E * (1 - (1 - k / E)^B) experts
// per layer are expected (the synthetic router spreads tokens evenly), the rest of the weights always.
// Usage (GPU machine): node --import tsx bench/gpu/families.ts [--ceilings bench/gpu/ceilings.json] [--only gemma2-9b,...] [--out DIR]
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { LoraModuleName, NativeAdapterSpec, NativeTensorRef } from '../../native/addon.d.ts';
import { Engine, type SeqInput } from '../../native/engine.ts';
import { LORA_MODULES, modelSpecFields, parseModelConfig, projectionFeatures } from '../../native/model-config.ts';
import { expectedModelTensors, type ModelDir } from '../../native/model-dir.ts';

const { values: args } = parseArgs({
  options: { ceilings: { type: 'string', default: join(import.meta.dirname, 'ceilings.json') }, only: { type: 'string' }, out: { type: 'string' } },
});

const MODELS: Record<string, object> = {
  'gemma2-9b': {
    architectures: ['Gemma2ForCausalLM'], model_type: 'gemma2', hidden_size: 3584, intermediate_size: 14336, num_hidden_layers: 42,
    num_attention_heads: 16, num_key_value_heads: 8, head_dim: 256, vocab_size: 256000, max_position_embeddings: 8192, rms_norm_eps: 1e-6,
    rope_theta: 10000, sliding_window: 4096, query_pre_attn_scalar: 256, attn_logit_softcapping: 50, final_logit_softcapping: 30,
    hidden_activation: 'gelu_pytorch_tanh', torch_dtype: 'bfloat16',
  },
  'phi3-mini': {
    architectures: ['Phi3ForCausalLM'], model_type: 'phi3', hidden_size: 3072, intermediate_size: 8192, num_hidden_layers: 32,
    num_attention_heads: 32, num_key_value_heads: 32, vocab_size: 32064, max_position_embeddings: 4096, rms_norm_eps: 1e-5,
    rope_theta: 10000, sliding_window: 2047, torch_dtype: 'bfloat16',
  },
  'qwen3-30b-a3b': {
    architectures: ['Qwen3MoeForCausalLM'], model_type: 'qwen3_moe', hidden_size: 2048, intermediate_size: 6144, moe_intermediate_size: 768,
    num_hidden_layers: 48, num_attention_heads: 32, num_key_value_heads: 4, head_dim: 128, vocab_size: 151936, num_experts: 128,
    num_experts_per_tok: 8, norm_topk_prob: true, decoder_sparse_step: 1, mlp_only_layers: [], max_position_embeddings: 40960,
    rms_norm_eps: 1e-6, rope_theta: 1e6, tie_word_embeddings: false, torch_dtype: 'bfloat16',
  },
};
const CTX = 1024;
const BS = 16;
const RANK = 16;
const BATCHES = [1, 16, 64];
const WARMUP = 5;
const REPS = 15;

function synthetic(name: string): ModelDir {
  const config = parseModelConfig(MODELS[name]!);
  const fields = modelSpecFields(config);
  let seed = 1;
  const tensors: NativeTensorRef[] = expectedModelTensors(fields).map(({ name: n, shape }) => ({
    name: n, dtype: 'BF16', shape, random: { seed: seed++, std: shape.length === 1 ? 1 : 0.02 },
  }));
  const weightBytes = tensors.reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1) * 2, 0);
  return { dir: `(synthetic ${name})`, spec: { ...fields, tensors }, config, weightBytes };
}

// LoRA on every projection PEFT targets, except the MLPs of MoE layers (refused on every engine).
function adapterModules(model: ModelDir): LoraModuleName[] {
  return LORA_MODULES.filter((m) => !(model.spec.moeLayers?.some(Boolean) && ['gate_proj', 'up_proj', 'down_proj'].includes(m)));
}

function syntheticAdapter(model: ModelDir, seed: number): NativeAdapterSpec {
  const modules = [];
  for (let layer = 0; layer < model.spec.numLayers; layer++) {
    for (const module of adapterModules(model)) {
      const { inFeatures, outFeatures } = projectionFeatures(model.spec, module);
      modules.push({
        layer, module, rank: RANK, scale: 2,
        a: { name: `a.${layer}.${module}`, dtype: 'BF16' as const, shape: [RANK, inFeatures], random: { seed: seed * 1000 + layer * 7 + 1, std: 0.02 } },
        b: { name: `b.${layer}.${module}`, dtype: 'BF16' as const, shape: [outFeatures, RANK], random: { seed: seed * 1000 + layer * 7 + 2, std: 0.02 } },
      });
    }
  }
  return { modules };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function time(engine: Engine, batch: SeqInput[], warmup: number, reps: number): Promise<number> {
  for (let i = 0; i < warmup; i++) await engine.step(batch);
  const t: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await engine.step(batch);
    t.push(performance.now() - t0);
  }
  return median(t);
}

async function bench(name: string, bw: number) {
  const model = synthetic(name);
  const P = model.spec;
  const blocksPerSeq = Math.ceil((CTX + 16) / BS);
  const engine = await Engine.open(model, { device: 'cuda', dtype: 'bfloat16', numBlocks: Math.max(...BATCHES) * blocksPerSeq, blockSize: BS, maxAdapters: 17 });
  const rows: Record<string, unknown>[] = [];
  try {
    for (let i = 0; i < 16; i++) await engine.loadAdapter(i, syntheticAdapter(model, i + 1));
    const adapterBytes = P.numLayers * adapterModules(model).reduce((a, m) => {
      const { inFeatures, outFeatures } = projectionFeatures(P, m);
      return a + RANK * (inFeatures + outFeatures) * 2;
    }, 0);
    const kvBytesPerToken = 2 * P.numKvHeads * P.headDim * 2 * P.numLayers;
    // The MoE's experts: bytes of one expert, and how many a step of B tokens touches per layer.
    const moeLayers = (P.moeLayers ?? []).filter(Boolean).length;
    const expertBytes = moeLayers > 0 ? 3 * P.hiddenSize * P.moeIntermediateSize! * 2 : 0;
    const allExpertBytes = moeLayers > 0 ? moeLayers * P.numExperts! * expertBytes : 0; // (numExperts is undefined for a dense model)
    const touched = (B: number) => (moeLayers > 0 ? P.numExperts! * (1 - (1 - P.expertsPerToken! / P.numExperts!) ** B) : 0);
    const weightFloor = (B: number) => model.weightBytes - allExpertBytes + moeLayers * touched(B) * expertBytes;
    console.log(`${name}: ${engine.info().deviceName}, weights ${(model.weightBytes / 1e9).toFixed(2)} GB${moeLayers ? `, experts ${(allExpertBytes / 1e9).toFixed(2)} GB of it` : ''}`);
    await time(engine, [{ tokens: [1], position: CTX - 1, blockTable: Array.from({ length: blocksPerSeq }, (_, b) => b) }], 50, 1);
    const points: [number, number][] = [...BATCHES.map((b) => [b, 0] as [number, number]), [16, 16]];
    for (const [B, A] of points) {
      const batch: SeqInput[] = Array.from({ length: B }, (_, s) => ({
        tokens: [(s * 7919 + 13) % P.vocabSize], position: CTX - 1,
        blockTable: Array.from({ length: blocksPerSeq }, (_, b) => s * blocksPerSeq + b),
        adapterSlot: A === 0 ? -1 : Math.floor((s * Math.min(A, B)) / B),
      }));
      const ms = await time(engine, batch, WARMUP, REPS);
      const floorMs = ((weightFloor(B) + B * CTX * kvBytesPerToken + Math.min(A, B) * adapterBytes) / bw) * 1000;
      rows.push({ model: name, what: `decode batch ${B}${A ? `, ${A} adapters` : ''}`, ms, tokS: (B / ms) * 1000, floorMs, ratio: floorMs / ms, expertsPerLayer: touched(B) });
      console.log(`  decode batch ${B}${A ? ` with ${A} adapters` : ''}: ${ms.toFixed(2)} ms/step, ${((B / ms) * 1000).toFixed(0)} tok/s (floor ${floorMs.toFixed(2)} ms${moeLayers ? `, ${touched(B).toFixed(1)} experts/layer` : ''}: ${((100 * floorMs) / ms).toFixed(0)}%)`);
    }
    const n = 512;
    const prompt: SeqInput[] = [{ tokens: Array.from({ length: n }, (_, i) => (i * 31 + 7) % P.vocabSize), position: 0, blockTable: Array.from({ length: Math.ceil(n / BS) + 1 }, (_, b) => b) }];
    const ms = await time(engine, prompt, 2, 5);
    const floorMs = (weightFloor(n) / bw) * 1000;
    rows.push({ model: name, what: `TTFT ${n} tokens`, ms, floorMs, ratio: floorMs / ms });
    console.log(`  TTFT ${n} tokens: ${ms.toFixed(1)} ms (byte floor ${floorMs.toFixed(1)} ms)`);
  } finally {
    engine.close();
  }
  return rows;
}

async function main() {
  const ceilings = JSON.parse(await readFile(args.ceilings!, 'utf-8')) as { copy_gbps: number; device: string };
  const names = args.only ? args.only.split(',') : Object.keys(MODELS);
  for (const n of names) if (!(n in MODELS)) throw new Error(`unknown model ${n}; there are ${Object.keys(MODELS).join(', ')}`);
  console.log(`copy bandwidth ${ceilings.copy_gbps.toFixed(0)} GB/s (${args.ceilings}, ${ceilings.device})`);
  const results = [];
  for (const n of names) results.push(...(await bench(n, ceilings.copy_gbps * 1e9)));
  if (args.out) await writeFile(join(args.out, 'families.json'), JSON.stringify({ ceilings, results }, null, 2));
}

await main();
