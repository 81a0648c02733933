// The CUDA engine on issue 18's families against the same transformers + PEFT references the CPU
// engine meets (test/engine-families-vs-hf.test.ts; fixtures by scripts/make-family-fixtures.py),
// on the GPU machine (skipped where no CUDA device works). Each fixture exercises what its family
// adds: q/k norms (qwen3); (1 + w) and sandwich norms, scaled embeddings, gelu-tanh, soft-capping
// in both attention kernels and on the logits, query_pre_attn_scalar, alternating windows
// (gemma2); a local RoPE base (gemma3); fused qkv/gate_up checkpoints and adapters, longrope
// (phi3); yarn (qwen2-yarn); dynamic NTK past max_position_embeddings (llama-dynamic); mixtures of
// experts (qwen3-moe; mixtral: its checkpoint names, always renormalised; qwen2-moe: not renormalised,
// qkv bias, and the sigmoid-gated shared expert). qwen2-moe's r8-all adapts the shared expert (the CUDA
// engine's usual LoRA path); r4-experts adapts the experts' weights (PEFT target_parameters;
// kernels/moe.cu moeLora after the expert GEMMs). float32 is held to the CPU engine's bounds (logprobs within 1e-3, top-5 and
// greedy tokens identical); bf16 (the checkpoints' type) to 0.25 on logprobs (or transformers' own bf16 drift for
// the case where larger: scripts/measure-bf16-drift.py), with greedy tokens
// identical wherever the reference's own margin is not a near tie, as test/gpu/cuda-engine.test.ts.
// Then every head dim the families use (64, 80, 96, 128, 256), on tiny synthetic models (weights
// from the counter-based generator both engines share), against the CPU engine.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { NativeTensorRef } from '../../native/addon.d.ts';
import { Engine, cudaUnavailableReason, loadCudaAddon, type SeqInput } from '../../native/engine.ts';
import { modelSpecFields, parseModelConfig } from '../../native/model-config.ts';
import { expectedModelTensors, type ModelDir } from '../../native/model-dir.ts';
import { BLOCK_SIZE, FIXTURES, blocksPerCase, loadReference, maxAbsDiff, type Case } from '../helpers/hf-reference.ts';
import { checkCudaAgainstReference } from '../helpers/cuda-vs-hf.ts';

const cuda = loadCudaAddon();
const skip = cuda ? false : `no CUDA engine here: ${cudaUnavailableReason()}`;

const FAMILIES = ['qwen3', 'gemma2', 'gemma3', 'phi3', 'qwen2-yarn', 'llama-dynamic', 'qwen3-moe', 'mixtral', 'qwen2-moe'];
const BF16_TOL = 0.25;
// transformers' own bf16 run against its float32 reference, per case (scripts/measure-bf16-drift.py): a mixture of
// experts moves by tenths where bf16 rounding flips a near-tied router choice, so a bf16 case may be as far from
// float32 as transformers' bf16 run of it is, when that is farther than BF16_TOL.
const HF_BF16_DRIFT = (JSON.parse(readFileSync(join(FIXTURES, 'reference', 'bf16-drift.json'), 'utf-8')) as { drift: Record<string, Record<string, number[]>> }).drift;
const bf16Tol = (model: string) => (c: Case) => Math.max(BF16_TOL, HF_BF16_DRIFT[model]?.[c.adapter ?? 'none']?.[c.prompt] ?? 0);

for (const dtype of ['float32', 'auto'] as const) {
  for (const model of FAMILIES) {
    describe(`${model}: CUDA engine (${dtype}) vs transformers + PEFT`, { skip }, () => {
      const ref = loadReference(model);
      const tol = dtype === 'float32' ? 1e-3 : bf16Tol(model);
      it('matches every case, alone and in one mixed batch', async () => {
        const engine = await Engine.open(join(FIXTURES, 'models', model), {
          device: 'cuda',
          dtype,
          numBlocks: ref.cases.length * blocksPerCase(ref),
          blockSize: BLOCK_SIZE,
          maxAdapters: 16,
        });
        try {
          await checkCudaAgainstReference(engine, model, ref, dtype, tol);
        } finally {
          engine.close();
        }
      });
    });
  }
}

// A tiny model of `cfg`'s family with synthetic weights: norms N(0, 1), matrices N(0, 0.05), the same
// numbers on both engines (kernels/rng.h).
function synthetic(cfg: Record<string, unknown>): ModelDir {
  const config = parseModelConfig({ vocab_size: 256, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, torch_dtype: 'bfloat16', ...cfg });
  const fields = modelSpecFields(config);
  let seed = 11;
  const tensors: NativeTensorRef[] = expectedModelTensors(fields).map(({ name, shape }) => ({
    name, dtype: 'BF16', shape, random: { seed: seed++, std: shape.length === 1 ? 1 : 0.05 },
  }));
  return { dir: '(synthetic)', spec: { ...fields, tensors }, config, weightBytes: 0 };
}

// Two sequences: a 40-token prompt (prompt logprobs; tensor-core attention where it serves the
// dim) and then 12 decode steps each scoring a given next token, so no greedy choice can diverge.
async function scoreStreams(engine: Engine): Promise<number[][]> {
  const streams = [0, 1].map((s) => Array.from({ length: 53 }, (_, i) => (i * 37 + s * 101 + 5) % 256));
  const per = 4;
  const out: number[][] = [[], []];
  let batch: SeqInput[] = streams.map((t, s) => ({
    tokens: t.slice(0, 40), position: 0, blockTable: Array.from({ length: per }, (_, b) => s * per + b), promptLogprobs: true, nextToken: t[40], sample: false,
  }));
  for (let pos = 40; pos < 53; pos++) {
    const outs = await engine.step(batch);
    outs.forEach((o, s) => out[s]!.push(...Array.from(o.promptLogprobs!)));
    if (pos === 52) break;
    batch = streams.map((t, s) => ({ tokens: [t[pos]!], position: pos, blockTable: batch[s]!.blockTable, nextToken: t[pos + 1], sample: false }));
  }
  return out;
}

const HEAD_DIM_MODELS: [string, Record<string, unknown>][] = [
  ['llama d64', { architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 256, intermediate_size: 512, head_dim: 64 }],
  ['llama d80', { architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 320, intermediate_size: 512, head_dim: 80 }],
  ['phi3 d96', { architectures: ['Phi3ForCausalLM'], model_type: 'phi3', hidden_size: 384, intermediate_size: 512, num_key_value_heads: 4 }],
  ['qwen3 d128', { architectures: ['Qwen3ForCausalLM'], model_type: 'qwen3', hidden_size: 256, intermediate_size: 512, head_dim: 128 }],
  ['gemma2 d256', {
    architectures: ['Gemma2ForCausalLM'], model_type: 'gemma2', hidden_size: 256, intermediate_size: 512, head_dim: 256, sliding_window: 16,
    query_pre_attn_scalar: 256, attn_logit_softcapping: 50, final_logit_softcapping: 30, hidden_activation: 'gelu_pytorch_tanh',
  }],
  ['qwen2-moe d64 (shared expert wider than the dense MLP)', {
    architectures: ['Qwen2MoeForCausalLM'], model_type: 'qwen2_moe', hidden_size: 256, intermediate_size: 256, moe_intermediate_size: 128,
    shared_expert_intermediate_size: 384, num_experts: 8, num_experts_per_tok: 2, mlp_only_layers: [1],
  }],
  ['mixtral d64', {
    architectures: ['MixtralForCausalLM'], model_type: 'mixtral', hidden_size: 256, intermediate_size: 128, num_local_experts: 8, num_experts_per_tok: 2,
  }],
  ['qwen3-moe d128', {
    architectures: ['Qwen3MoeForCausalLM'], model_type: 'qwen3_moe', hidden_size: 256, intermediate_size: 512, moe_intermediate_size: 128,
    head_dim: 128, num_experts: 16, num_experts_per_tok: 4, norm_topk_prob: true,
  }],
];

describe('every head dim of the families (64, 80, 96, 128, 256): CUDA engine vs CPU engine on synthetic weights', { skip }, () => {
  for (const [name, cfg] of HEAD_DIM_MODELS) {
    it(name, async () => {
      const model = synthetic(cfg);
      const cpu = await Engine.open(model, { device: 'cpu', numBlocks: 8, blockSize: BLOCK_SIZE, maxAdapters: 1 });
      const want = await scoreStreams(cpu);
      cpu.close();
      const line: string[] = [];
      for (const dtype of ['float32', 'bfloat16'] as const) {
        const engine = await Engine.open(model, { device: 'cuda', dtype, numBlocks: 8, blockSize: BLOCK_SIZE, maxAdapters: 1 });
        try {
          const got = await scoreStreams(engine);
          const d = Math.max(...got.map((g, s) => maxAbsDiff(g, want[s]!)));
          line.push(`${dtype} ${d.toExponential(2)}`);
          // bf16 rounds the weights too (a slightly different model): its bound is the looser one.
          assert.ok(d < (dtype === 'float32' ? 1e-3 : BF16_TOL), `${name} ${dtype}: logprobs differ from the CPU engine by ${d}`);
        } finally {
          engine.close();
        }
      }
      console.log(`  ${name}: max |logprob - CPU engine| over 2 x 52 scored tokens: ${line.join(', ')}`);
    });
  }
});
