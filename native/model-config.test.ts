import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { modelSpecFields, parseModelConfig, projectionFeatures } from './model-config.ts';

/** Llama-3.1-style config as transformers 4 saves it. */
const llama3V4 = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  vocab_size: 128256,
  hidden_size: 4096,
  intermediate_size: 14336,
  num_hidden_layers: 32,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  hidden_act: 'silu',
  max_position_embeddings: 131072,
  rms_norm_eps: 1e-5,
  rope_theta: 500000.0,
  rope_scaling: {
    factor: 8.0,
    low_freq_factor: 1.0,
    high_freq_factor: 4.0,
    original_max_position_embeddings: 8192,
    rope_type: 'llama3',
  },
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
};

/** The same model as transformers 5 saves it. */
const llama3V5 = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  vocab_size: 128256,
  hidden_size: 4096,
  intermediate_size: 14336,
  num_hidden_layers: 32,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  head_dim: 128,
  hidden_act: 'silu',
  max_position_embeddings: 131072,
  rms_norm_eps: 1e-5,
  rope_parameters: {
    rope_type: 'llama3',
    rope_theta: 500000.0,
    factor: 8.0,
    low_freq_factor: 1.0,
    high_freq_factor: 4.0,
    original_max_position_embeddings: 8192,
  },
  tie_word_embeddings: false,
  dtype: 'bfloat16',
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
};

const tinyQwen2 = {
  architectures: ['Qwen2ForCausalLM'],
  model_type: 'qwen2',
  vocab_size: 151936,
  hidden_size: 896,
  intermediate_size: 4864,
  num_hidden_layers: 6,
  num_attention_heads: 14,
  num_key_value_heads: 2,
  max_position_embeddings: 32768,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  use_sliding_window: false,
  max_window_layers: 4,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  bos_token_id: 151643,
  eos_token_id: 151643,
};

describe('parseModelConfig', () => {
  test('transformers 4 and 5 forms of a Llama 3.1 config give identical results', () => {
    const v4 = parseModelConfig(llama3V4);
    const v5 = parseModelConfig(llama3V5);
    assert.deepEqual(v4, v5);
    assert.deepEqual(modelSpecFields(v4), modelSpecFields(v5));
  });

  test('reads llama3 RoPE and the rest of a Llama 3.1 config', () => {
    const c = parseModelConfig(llama3V4);
    assert.deepEqual(modelSpecFields(c), {
      arch: 'llama',
      hiddenSize: 4096,
      intermediateSize: 14336,
      numLayers: 32,
      numHeads: 32,
      numKvHeads: 8,
      headDim: 128,
      vocabSize: 128256,
      rmsNormEps: 1e-5,
      ropeTheta: 500000,
      ropeType: 'llama3',
      ropeFactor: 8,
      ropeLowFreqFactor: 1,
      ropeHighFreqFactor: 4,
      ropeOriginalMaxPositions: 8192,
      slidingWindow: new Array(32).fill(0),
      attentionBias: false,
      tieWordEmbeddings: false,
    });
    assert.equal(c.architecture, 'LlamaForCausalLM');
    assert.equal(c.modelType, 'llama');
    assert.equal(c.maxPositionEmbeddings, 131072);
    assert.equal(c.dtype, 'bfloat16');
    assert.equal(c.bosTokenId, 128000);
    assert.deepEqual(c.eosTokenId, [128001, 128008, 128009]);
  });

  test('legacy rope_scaling "type" key, linear scaling, and defaults', () => {
    const c = parseModelConfig({
      model_type: 'llama', vocab_size: 32, hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2,
      num_attention_heads: 4, rope_scaling: { type: 'linear', factor: 2.0 },
    });
    assert.equal(c.architecture, 'LlamaForCausalLM');
    assert.equal(c.ropeType, 'linear');
    assert.equal(c.ropeFactor, 2);
    assert.equal(c.ropeTheta, 10000);
    assert.equal(c.numKvHeads, 4); // Llama: defaults to num_attention_heads
    assert.equal(c.headDim, 16);
    assert.equal(c.rmsNormEps, 1e-6);
    assert.equal(c.maxPositionEmbeddings, 2048);
    assert.equal(c.tieWordEmbeddings, false);
    assert.equal(c.dtype, null);
    assert.equal(c.bosTokenId, 1);
    assert.equal(c.eosTokenId, 2);
    const plain = parseModelConfig({ ...llama3V4, rope_scaling: null });
    assert.equal(plain.ropeType, 'default');
    assert.equal(plain.ropeFactor, 1);
  });

  test('transformers 5 fills llama3 original_max_position_embeddings from max_position_embeddings', () => {
    const { original_max_position_embeddings: _drop, ...rope } = llama3V5.rope_parameters;
    const c = parseModelConfig({ ...llama3V5, rope_parameters: rope });
    assert.equal(c.ropeOriginalMaxPositions, 131072);
  });

  test('rope_parameters keyed by layer type are accepted when they agree', () => {
    const rope = { rope_type: 'default', rope_theta: 1e6 };
    const c = parseModelConfig({ ...tinyQwen2, rope_theta: undefined, rope_parameters: { full_attention: rope, sliding_attention: rope } });
    assert.equal(c.ropeTheta, 1e6);
    assert.throws(
      () => parseModelConfig({ ...tinyQwen2, rope_theta: undefined, rope_parameters: { full_attention: rope, sliding_attention: { ...rope, rope_theta: 1e4 } } }),
      /rope_parameters differ between layer types/,
    );
  });

  test('unsupported RoPE types are named', () => {
    for (const type of ['mrope', 'proportional']) {
      assert.throws(
        () => parseModelConfig({ ...llama3V4, rope_scaling: { rope_type: type, factor: 4.0 } }, 'cfg.json'),
        { message: `cfg.json: unsupported rope type "${type}" (supported: default, linear, llama3, yarn, dynamic, longrope)` },
      );
    }
    assert.throws(() => parseModelConfig({ ...llama3V5, rope_parameters: { ...llama3V5.rope_parameters, rope_type: 'mrope' } }), /unsupported rope type "mrope"/);
    assert.throws(() => parseModelConfig({ ...llama3V4, rope_scaling: { rope_type: 'dynamic' } }), /dynamic\) needs factor/);
    assert.throws(() => parseModelConfig({ ...llama3V4, rope_scaling: { rope_type: 'longrope', short_factor: [1], long_factor: [1] } }),
      /short_factor and long_factor need head_dim \/ 2 = \d+ entries, got 1 and 1/);
    assert.throws(() => parseModelConfig({ ...llama3V4, rope_scaling: { rope_type: 'llama3', factor: 8 } }), /llama3\) needs factor, low_freq_factor and high_freq_factor/);
    assert.throws(() => parseModelConfig({ ...llama3V4, rope_scaling: { rope_type: 'linear', type: 'dynamic', factor: 2 } }), /must agree/);
  });

  test('unsupported architectures and inconsistent configs', () => {
    assert.throws(
      () => parseModelConfig({ architectures: ['GPT2LMHeadModel'], model_type: 'gpt2', n_embd: 768 }, 'config.json'),
      { message: 'config.json: unsupported architecture "GPT2LMHeadModel" (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, Phi3ForCausalLM, Qwen3MoeForCausalLM, MixtralForCausalLM, Qwen2MoeForCausalLM)' },
    );
    assert.throws(() => parseModelConfig({ model_type: 'gemma' }), /unsupported architecture: model_type "gemma"/);
    assert.throws(() => parseModelConfig({ ...llama3V4, model_type: 'mistral' }), /architectures\[0\] is "LlamaForCausalLM" but model_type is "mistral"/);
    assert.throws(() => parseModelConfig({ ...llama3V4, hidden_size: undefined }), /config\.json: hidden_size: /);
    assert.throws(() => parseModelConfig({ ...llama3V4, num_key_value_heads: 5 }), /not a multiple of num_key_value_heads 5/);
    assert.throws(() => parseModelConfig({ ...llama3V4, hidden_act: 'gelu' }), /hidden_act "gelu" is not supported/);
    assert.throws(() => parseModelConfig({ ...llama3V4, attention_bias: true }), /attention_bias=true is not supported for llama/);
    assert.throws(() => parseModelConfig({ ...llama3V4, partial_rotary_factor: 0.5 }), /partial_rotary_factor/);
    assert.throws(() => parseModelConfig([]), /expected a JSON object/);
  });

  test('explicit head_dim wins over hidden_size / num_attention_heads', () => {
    const c = parseModelConfig({ ...llama3V4, head_dim: 64 });
    assert.equal(c.headDim, 64);
    assert.deepEqual(projectionFeatures(c, 'q_proj'), { inFeatures: 4096, outFeatures: 32 * 64 });
    assert.deepEqual(projectionFeatures(c, 'o_proj'), { inFeatures: 32 * 64, outFeatures: 4096 });
    assert.deepEqual(projectionFeatures(c, 'k_proj'), { inFeatures: 4096, outFeatures: 8 * 64 });
    assert.deepEqual(projectionFeatures(c, 'down_proj'), { inFeatures: 14336, outFeatures: 4096 });
  });
});

describe('sliding window per layer', () => {
  const mistral = {
    architectures: ['MistralForCausalLM'], model_type: 'mistral', vocab_size: 32000, hidden_size: 4096,
    intermediate_size: 14336, num_hidden_layers: 4, num_attention_heads: 32, num_key_value_heads: 8,
    max_position_embeddings: 32768, rms_norm_eps: 1e-5, rope_theta: 10000.0, sliding_window: 4096,
    tie_word_embeddings: false, torch_dtype: 'bfloat16',
  };

  test('Mistral applies sliding_window to every layer; null means none', () => {
    const c = parseModelConfig(mistral);
    assert.equal(c.arch, 'mistral');
    assert.deepEqual(c.slidingWindow, [4096, 4096, 4096, 4096]);
    assert.equal(c.attentionBias, false);
    assert.deepEqual(parseModelConfig({ ...mistral, sliding_window: null }).slidingWindow, [0, 0, 0, 0]);
  });

  test('Mistral defaults follow MistralConfig (window 4096, 8 KV heads)', () => {
    const c = parseModelConfig({ ...mistral, sliding_window: undefined, num_key_value_heads: undefined });
    assert.deepEqual(c.slidingWindow, [4096, 4096, 4096, 4096]);
    assert.equal(c.numKvHeads, 8);
    assert.equal(parseModelConfig({ ...mistral, num_key_value_heads: null }).numKvHeads, 32);
  });

  test('Qwen2: no window unless use_sliding_window; then layers >= max_window_layers', () => {
    const off = parseModelConfig(tinyQwen2);
    assert.equal(off.arch, 'qwen2');
    assert.equal(off.attentionBias, true);
    assert.equal(off.tieWordEmbeddings, true);
    assert.deepEqual(off.slidingWindow, [0, 0, 0, 0, 0, 0]);
    const on = parseModelConfig({ ...tinyQwen2, use_sliding_window: true, sliding_window: 1024 });
    assert.deepEqual(on.slidingWindow, [0, 0, 0, 0, 1024, 1024]);
  });

  test('Qwen2: layer_types decides which layers slide, still only with use_sliding_window', () => {
    const layer_types = ['sliding_attention', 'full_attention', 'sliding_attention', 'full_attention', 'full_attention', 'full_attention'];
    const on = parseModelConfig({ ...tinyQwen2, use_sliding_window: true, sliding_window: 512, layer_types });
    assert.deepEqual(on.slidingWindow, [512, 0, 512, 0, 0, 0]);
    const off = parseModelConfig({ ...tinyQwen2, use_sliding_window: false, sliding_window: 512, layer_types });
    assert.deepEqual(off.slidingWindow, [0, 0, 0, 0, 0, 0]);
    assert.throws(() => parseModelConfig({ ...tinyQwen2, layer_types: ['full_attention'] }), /layer_types has 1 entries but num_hidden_layers is 6/);
    assert.throws(() => parseModelConfig({ ...tinyQwen2, layer_types: new Array(6).fill('chunked_attention') }), /unsupported layer type "chunked_attention"/);
  });

  test('Qwen2 defaults: tie_word_embeddings false, no bos/eos', () => {
    const { tie_word_embeddings: _t, bos_token_id: _b, eos_token_id: _e, ...rest } = tinyQwen2;
    const c = parseModelConfig(rest);
    assert.equal(c.tieWordEmbeddings, false);
    assert.equal(c.bosTokenId, null);
    assert.equal(c.eosTokenId, null);
  });
});

describe('issue 18 families', () => {
  const tiny = { vocab_size: 64, hidden_size: 64, intermediate_size: 96, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16 };

  test('Gemma 2: transformers defaults for soft-capping (an explicit null turns it off), pattern of windows, gelu-tanh', () => {
    const g = parseModelConfig({ ...tiny, architectures: ['Gemma2ForCausalLM'], model_type: 'gemma2', sliding_window: 8 });
    assert.deepEqual([g.attnSoftcap, g.finalSoftcap, g.hiddenAct, g.tieWordEmbeddings], [50, 30, 'gelu_tanh', true]);
    assert.deepEqual(g.slidingWindow, [8, 0, 8, 0]);
    assert.equal(g.attnScale, 256 ** -0.5);
    assert.equal(g.embedScale, 8);
    const off = parseModelConfig({ ...tiny, architectures: ['Gemma2ForCausalLM'], model_type: 'gemma2', attn_logit_softcapping: null, final_logit_softcapping: null });
    assert.deepEqual([off.attnSoftcap, off.finalSoftcap], [0, 0]);
    assert.throws(() => parseModelConfig({ ...tiny, architectures: ['Gemma2ForCausalLM'], model_type: 'gemma2', hidden_activation: 'gelu' }), /hidden_activation "gelu" is not supported/);
  });

  test('Gemma 3: local and global RoPE bases read the same from either config form', () => {
    const v4 = parseModelConfig({ ...tiny, architectures: ['Gemma3ForCausalLM'], model_type: 'gemma3_text', rope_theta: 1e6, rope_local_base_freq: 1e4, rope_scaling: { rope_type: 'linear', factor: 8 }, sliding_window_pattern: 2 });
    const v5 = parseModelConfig({ ...tiny, architectures: ['Gemma3ForCausalLM'], model_type: 'gemma3_text', layer_types: ['sliding_attention', 'full_attention', 'sliding_attention', 'full_attention'],
      rope_parameters: { full_attention: { rope_type: 'linear', factor: 8, rope_theta: 1e6 }, sliding_attention: { rope_type: 'default', rope_theta: 1e4 } } });
    for (const c of [v4, v5]) {
      assert.deepEqual([c.ropeType, c.ropeFactor, c.ropeTheta, c.ropeLocalTheta, c.qkNorm], ['linear', 8, 1e6, 1e4, true]);
      assert.deepEqual(c.slidingWindow, [4096, 0, 4096, 0]);
    }
    assert.throws(() => parseModelConfig({ ...tiny, architectures: ['Gemma3ForCausalLM'], model_type: 'gemma3_text',
      rope_parameters: { full_attention: { rope_type: 'default' }, sliding_attention: { rope_type: 'linear', factor: 2 } } }), /sliding-window layers' RoPE must be of type default/);
  });

  test('Phi-3 longrope ("su") and yarn: attention factors as transformers computes them', () => {
    const phi = parseModelConfig({ ...tiny, architectures: ['Phi3ForCausalLM'], model_type: 'phi3', max_position_embeddings: 131072, original_max_position_embeddings: 4096,
      rope_scaling: { type: 'su', short_factor: Array(8).fill(1), long_factor: Array(8).fill(2) } });
    assert.equal(phi.ropeType, 'longrope');
    assert.equal(phi.ropeOriginalMaxPositions, 4096);
    assert.ok(Math.abs(phi.ropeAttentionFactor! - Math.sqrt(1 + Math.log(32) / Math.log(4096))) < 1e-12);
    const yarn = parseModelConfig({ ...tiny, architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 32768 } });
    assert.deepEqual([yarn.ropeType, yarn.ropeFactor, yarn.ropeOriginalMaxPositions, yarn.ropeBetaFast, yarn.ropeBetaSlow], ['yarn', 4, 32768, 32, 1]);
    assert.ok(Math.abs(yarn.ropeAttentionFactor! - (0.1 * Math.log(4) + 1)) < 1e-12);
  });

  test('Qwen3-MoE: experts from either key, dense layers by mlp_only_layers and decoder_sparse_step; other MoE named', () => {
    const m = parseModelConfig({ ...tiny, architectures: ['Qwen3MoeForCausalLM'], model_type: 'qwen3_moe', num_local_experts: 8, num_experts_per_tok: 2, moe_intermediate_size: 32, decoder_sparse_step: 2, mlp_only_layers: [3] });
    assert.deepEqual([m.numExperts, m.expertsPerToken, m.moeIntermediateSize, m.normTopkProb], [8, 2, 32, false]);
    assert.deepEqual(m.moeLayers, [false, true, false, false]);
    assert.throws(() => parseModelConfig({ ...tiny, architectures: ['Qwen3MoeForCausalLM'], model_type: 'qwen3_moe', num_experts: 8, num_local_experts: 4 }), /disagrees/);
  });

  test('Mixtral: every layer MoE, experts of intermediate_size, always renormalised, window on every layer', () => {
    const m = parseModelConfig({ ...tiny, architectures: ['MixtralForCausalLM'], model_type: 'mixtral', num_local_experts: 4, num_experts_per_tok: 2, sliding_window: 16 });
    assert.deepEqual([m.numExperts, m.expertsPerToken, m.moeIntermediateSize, m.normTopkProb], [4, 2, tiny.intermediate_size, true]);
    assert.ok(m.moeLayers!.every((x) => x));
    assert.ok(m.slidingWindow.every((w) => w === 16));
    assert.equal(m.sharedExpertIntermediateSize, undefined);
    // MixtralConfig's defaults: 8 experts, 2 per token, rope_theta 1e6.
    const d = parseModelConfig({ ...tiny, architectures: ['MixtralForCausalLM'], model_type: 'mixtral' });
    assert.deepEqual([d.numExperts, d.expertsPerToken, d.ropeTheta], [8, 2, 1e6]);
  });

  test('Qwen2-MoE: shared expert, qkv bias by qkv_bias, no renormalisation by default, sliding_window 0 = none', () => {
    const base = { ...tiny, architectures: ['Qwen2MoeForCausalLM'], model_type: 'qwen2_moe', num_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 32, shared_expert_intermediate_size: 48, sliding_window: 0 };
    const m = parseModelConfig(base);
    assert.deepEqual([m.numExperts, m.moeIntermediateSize, m.sharedExpertIntermediateSize, m.normTopkProb, m.attentionBias], [4, 32, 48, false, true]);
    assert.ok(m.slidingWindow.every((w) => w === 0));
    assert.equal(parseModelConfig({ ...base, qkv_bias: false }).attentionBias, false);
    assert.equal(parseModelConfig({ ...base, shared_expert_intermediate_size: undefined }).sharedExpertIntermediateSize, 5632);
    assert.throws(() => parseModelConfig({ ...base, shared_expert_intermediate_size: 0 }), /shared_expert_intermediate_size 0 is not supported/);
    assert.throws(() => parseModelConfig({ ...base, use_sliding_window: true, sliding_window: 8 }), /use_sliding_window=true is not supported for Qwen2-MoE/);
  });
});
