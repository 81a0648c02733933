// The CPU engine against transformers + PEFT on the families of issue 18 (references made by
// scripts/make-family-fixtures.py: tiny random models, two PEFT adapters each, the qwen2 fixture's
// tokenizer and prompts): prompt logprobs within 1e-3, top-5 next tokens and 16 greedy tokens
// identical, one case at a time and all cases as one mixed-adapter batch.
import { engineVsHfSuite } from './helpers/engine-vs-hf-suite.ts';

// Each exercises what its family adds: q/k norms (qwen3); (1+w) norms, embedding scale, gelu-tanh, sandwich norms,
// soft-capping, alternating windows, query_pre_attn_scalar (gemma2, gemma3 + local/global RoPE bases); fused
// qkv/gate_up with adapters on the fused modules and longrope (phi3); yarn (qwen2-yarn); dynamic NTK (llama-dynamic);
// mixtures of experts with top-k routing (renormalised: qwen3-moe, mixtral; not: qwen2-moe), Mixtral's checkpoint names,
// Qwen2-MoE's sigmoid-gated shared expert and qkv bias; adapters on attention, on the shared expert (qwen2-moe r8-all)
// and on the fused expert weights through PEFT target_parameters (r4-experts: per-expert LoRA on gate_up_proj and
// down_proj, plus o_proj).
export const FAMILIES = ['qwen3', 'gemma2', 'gemma3', 'phi3', 'qwen2-yarn', 'llama-dynamic', 'qwen3-moe', 'mixtral', 'qwen2-moe'];

/** The families whose fixtures carry an r4-experts adapter (target_parameters on the experts; engine-moe-lora.test.ts). */
const EXPERT_LORA_FAMILIES = ['qwen3-moe', 'mixtral', 'qwen2-moe'];

for (const model of FAMILIES) engineVsHfSuite(model, { maxAdapters: 4, minAdapters: EXPERT_LORA_FAMILIES.includes(model) ? 3 : 2 });
