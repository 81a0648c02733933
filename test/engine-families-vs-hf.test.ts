// The CPU engine against transformers + PEFT on the families of issue 18 (references made by
// scripts/make-family-fixtures.py: tiny random models, two PEFT adapters each, the qwen2 fixture's
// tokenizer and prompts): prompt logprobs within 1e-3, top-5 next tokens and 16 greedy tokens
// identical, one case at a time and all cases as one mixed-adapter batch.
import { engineVsHfSuite } from './helpers/engine-vs-hf-suite.ts';

// Each exercises what its family adds: q/k norms (qwen3); (1+w) norms, embedding scale, gelu-tanh, sandwich norms,
// soft-capping, alternating windows, query_pre_attn_scalar (gemma2, gemma3 + local/global RoPE bases); fused
// qkv/gate_up with adapters on the fused modules and longrope (phi3); yarn (qwen2-yarn); dynamic NTK (llama-dynamic);
// mixture of experts with top-k routing and renormalisation, adapters on attention (qwen3-moe).
export const FAMILIES = ['qwen3', 'gemma2', 'gemma3', 'phi3', 'qwen2-yarn', 'llama-dynamic', 'qwen3-moe'];

// LoRA on the fused expert tensors (PEFT target_parameters) is refused at load for now; its cases are left out.
const REFUSED_ADAPTERS: Readonly<Record<string, RegExp>> = { 'r4-experts': /target_parameters/ };

for (const model of FAMILIES) engineVsHfSuite(model, { maxAdapters: 4, minAdapters: 2, refusedAdapters: REFUSED_ADAPTERS });
