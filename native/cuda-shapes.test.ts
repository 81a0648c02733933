// The CUDA engine's load-time refusal (src/cuda-shapes.cc), asked of the CPU addon so it runs
// without a GPU: a shape the CUDA kernels cannot serve, or a family only the CPU engine computes,
// is named with the way out (--device cpu) before any weight is read; supported models pass.
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
      'the CUDA engine cannot serve head_dim 8 (its attention kernels take head dims 16, 32, 64, 96, 128 and 256); use --device cpu',
    );
    assert.match(cudaUnsupported(spec({ ...mistral, head_dim: 80 }))!, /head_dim 80 .*use --device cpu$/);
  });

  test('every head dim the kernels have is served', () => {
    for (const d of [16, 32, 64, 96, 128, 256]) assert.equal(cudaUnsupported(spec({ ...mistral, head_dim: d })), null, `head_dim ${d}`);
  });

  test('more than 8 query heads per kv head is refused', () => {
    assert.match(cudaUnsupported(spec({ ...mistral, hidden_size: 512, num_attention_heads: 32, num_key_value_heads: 2 }))!,
      /cannot serve 16 query heads per key\/value head .*at most 8\).*--device cpu/);
  });

  test('the checked-in llama / mistral / qwen2 fixtures pass', async () => {
    for (const m of ['llama', 'mistral', 'qwen2']) assert.equal(cudaUnsupported((await openModelDir(join(FIXTURES, m))).spec), null, m);
  });

  test('families only the CPU engine computes are refused by name', () => {
    const base = { vocab_size: 64, hidden_size: 64, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16 };
    assert.match(cudaUnsupported(spec({ ...base, architectures: ['Qwen3ForCausalLM'], model_type: 'qwen3' }))!,
      /^the CUDA engine does not serve qwen3 models yet \(q\/k norms\); use --device cpu$/);
    assert.match(cudaUnsupported(spec({ ...base, architectures: ['Gemma2ForCausalLM'], model_type: 'gemma2' }))!,
      /does not serve gemma2 models yet \(Gemma norms, scaled embeddings, gelu-tanh MLP, query_pre_attn_scalar, logit soft-capping\)/);
    assert.match(cudaUnsupported(spec({ ...base, architectures: ['LlamaForCausalLM'], model_type: 'llama', rope_scaling: { rope_type: 'dynamic', factor: 2 } }))!,
      /does not serve llama models yet \(rope type dynamic\)/);
  });
});
