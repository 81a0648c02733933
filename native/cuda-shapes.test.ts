// The CUDA engine's load-time refusal (src/cuda-shapes.cc), asked of the CPU addon so it runs
// without a GPU: a shape the CUDA kernels cannot serve is named with the way out (--device cpu)
// before any weight is read; supported models (issue 18's families among them) pass.
// Regression: a small Mistral with head_dim 8 used to load on CUDA and then answer every
// /generate with 424 "CUDA error in attention: invalid argument".
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { loadAddon } from './engine.ts';
import { openModelDir } from './model-dir.ts';
import { modelSpecFields, parseModelConfig } from './model-config.ts';
import type { NativeModelSpec } from './addon.d.ts';

const FIXTURES = join(import.meta.dirname, '..', 'test', 'fixtures', 'models');
const mistral = {
  architectures: ['MistralForCausalLM'], model_type: 'mistral', vocab_size: 64, hidden_size: 32, intermediate_size: 64,
  num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
};
const spec = (cfg: object) => ({ ...modelSpecFields(parseModelConfig(cfg)), tensors: [] });

describe('cudaUnsupported', () => {
  // Exported by both addons (src/addon.cc) beside the engine; engine.ts itself never needs it.
  const { cudaUnsupported } = loadAddon() as unknown as { cudaUnsupported(spec: NativeModelSpec): string | null };

  test('head_dim 8 (the small Mistral) is refused by name, pointing to --device cpu', () => {
    assert.equal(
      cudaUnsupported(spec(mistral)),
      'the CUDA engine cannot serve head_dim 8 (its attention kernels take head dims 16, 32, 64, 80, 96, 128 and 256); use --device cpu',
    );
    assert.match(cudaUnsupported(spec({ ...mistral, head_dim: 48 }))!, /head_dim 48 .*use --device cpu$/);
  });

  test('every head dim the kernels have is served (issue 18: 64, 80, 96, 128, 256 among them)', () => {
    for (const d of [16, 32, 64, 80, 96, 128, 256]) assert.equal(cudaUnsupported(spec({ ...mistral, head_dim: d })), null, `head_dim ${d}`);
  });

  test('more than 8 query heads per kv head is refused', () => {
    assert.match(cudaUnsupported(spec({ ...mistral, hidden_size: 512, num_attention_heads: 32, num_key_value_heads: 2 }))!,
      /cannot serve 16 query heads per key\/value head .*at most 8\).*--device cpu/);
  });

  test('the checked-in llama / mistral / qwen2 fixtures pass', async () => {
    for (const m of ['llama', 'mistral', 'qwen2']) assert.equal(cudaUnsupported((await openModelDir(join(FIXTURES, m))).spec), null, m);
  });

  test('every issue 18 family fixture is served (q/k norms, Gemma, phi3, yarn, dynamic, MoE)', async () => {
    for (const m of ['qwen3', 'gemma2', 'gemma3', 'phi3', 'qwen2-yarn', 'llama-dynamic', 'qwen3-moe']) {
      assert.equal(cudaUnsupported((await openModelDir(join(FIXTURES, m))).spec), null, m);
    }
    const base = { vocab_size: 64, hidden_size: 64, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16 };
    assert.equal(cudaUnsupported(spec({ ...base, architectures: ['Qwen3ForCausalLM'], model_type: 'qwen3' })), null);
    assert.equal(cudaUnsupported(spec({ ...base, architectures: ['Gemma2ForCausalLM'], model_type: 'gemma2', head_dim: 256 })), null);
    assert.equal(cudaUnsupported(spec({ ...base, architectures: ['LlamaForCausalLM'], model_type: 'llama', rope_scaling: { rope_type: 'dynamic', factor: 2 } })), null);
  });

  test('a mixture of experts past the routing kernel\'s bounds is refused by name', () => {
    const moe = {
      architectures: ['Qwen3MoeForCausalLM'], model_type: 'qwen3_moe', vocab_size: 64, hidden_size: 64, intermediate_size: 64, moe_intermediate_size: 32,
      num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, num_experts: 64, num_experts_per_tok: 8,
    };
    assert.equal(cudaUnsupported(spec(moe)), null);
    assert.equal(cudaUnsupported(spec({ ...moe, num_experts: 128, num_experts_per_tok: 40 })),
      'the CUDA engine cannot serve 40 of 128 experts per token (at most 32 of 3072); use --device cpu');
  });
});
