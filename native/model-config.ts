// Hugging Face config.json -> the scalar part of NativeModelSpec.
// Defaults follow transformers' config classes for each architecture (they apply when a key is absent), and both
// the transformers-4 layout (rope_theta + rope_scaling, torch_dtype) and the transformers-5 one (rope_parameters,
// dtype) are read, so a checkpoint re-saved by either gives the same spec.

import { z } from 'zod';
import type { LoraExpertName, LoraModuleName, LoraProjectionName, NativeModelSpec, RopeType } from './addon.d.ts';

export type ModelArch = NativeModelSpec['arch'];

/** NativeModelSpec without the weights: everything config.json decides. */
export type ModelSpecFields = Omit<NativeModelSpec, 'tensors'>;

export interface ModelConfig extends ModelSpecFields {
  /** architectures[0] (or the class implied by model_type), e.g. "LlamaForCausalLM". */
  architecture: string;
  modelType: ModelArch;
  maxPositionEmbeddings: number;
  /** dtype / torch_dtype as written ("bfloat16", ...), or null when config.json does not say. */
  dtype: string | null;
  bosTokenId: number | null;
  eosTokenId: number | number[] | null;
}

const ARCHITECTURES: Readonly<Record<string, ModelArch>> = {
  LlamaForCausalLM: 'llama',
  MistralForCausalLM: 'mistral',
  Qwen2ForCausalLM: 'qwen2',
  Qwen3ForCausalLM: 'qwen3',
  Gemma2ForCausalLM: 'gemma2',
  Gemma3ForCausalLM: 'gemma3',
  Phi3ForCausalLM: 'phi3',
  Qwen3MoeForCausalLM: 'qwen3_moe',
  MixtralForCausalLM: 'mixtral',
  Qwen2MoeForCausalLM: 'qwen2_moe',
};
/** config.json's model_type of each arch (Gemma 3's text-only model is "gemma3_text"). */
const TYPE_OF_ARCH: Readonly<Record<ModelArch, string>> = {
  llama: 'llama', mistral: 'mistral', qwen2: 'qwen2', qwen3: 'qwen3', gemma2: 'gemma2', gemma3: 'gemma3_text', phi3: 'phi3',
  qwen3_moe: 'qwen3_moe', mixtral: 'mixtral', qwen2_moe: 'qwen2_moe',
};
const ARCH_OF_TYPE: Readonly<Record<string, ModelArch>> = Object.fromEntries(
  Object.entries(TYPE_OF_ARCH).map(([arch, type]) => [type, arch as ModelArch]),
);
const CLASS_FOR_TYPE: Readonly<Record<ModelArch, string>> = Object.fromEntries(
  Object.entries(ARCHITECTURES).map(([cls, arch]) => [arch, cls]),
) as Record<ModelArch, string>;
/** Families whose checkpoints need what the engines do not have yet: named in the error instead of "unsupported". */
const NOT_YET: Readonly<Record<string, string>> = {
  Gemma3ForConditionalGeneration: 'Gemma 3 with vision is not supported; use a text-only Gemma3ForCausalLM checkpoint',
};

/** Per-architecture defaults of the transformers config classes, for keys a config.json leaves out. */
interface ArchDefaults {
  /** null: num_attention_heads. */
  numKvHeads: number | null;
  maxPositionEmbeddings: number;
  rmsNormEps: number;
  ropeTheta: number;
  bosTokenId: number | null;
  eosTokenId: number | null;
  slidingWindow: number | null;
}
const ARCH_DEFAULTS: Readonly<Record<ModelArch, ArchDefaults>> = {
  llama: { numKvHeads: null, maxPositionEmbeddings: 2048, rmsNormEps: 1e-6, ropeTheta: 10000, bosTokenId: 1, eosTokenId: 2, slidingWindow: null },
  mistral: { numKvHeads: 8, maxPositionEmbeddings: 4096 * 32, rmsNormEps: 1e-6, ropeTheta: 10000, bosTokenId: 1, eosTokenId: 2, slidingWindow: 4096 },
  qwen2: { numKvHeads: 32, maxPositionEmbeddings: 32768, rmsNormEps: 1e-6, ropeTheta: 10000, bosTokenId: null, eosTokenId: null, slidingWindow: 4096 },
  qwen3: { numKvHeads: 32, maxPositionEmbeddings: 32768, rmsNormEps: 1e-6, ropeTheta: 10000, bosTokenId: null, eosTokenId: null, slidingWindow: 4096 },
  gemma2: { numKvHeads: 4, maxPositionEmbeddings: 8192, rmsNormEps: 1e-6, ropeTheta: 10000, bosTokenId: 2, eosTokenId: 1, slidingWindow: 4096 },
  gemma3: { numKvHeads: 4, maxPositionEmbeddings: 131072, rmsNormEps: 1e-6, ropeTheta: 1e6, bosTokenId: 2, eosTokenId: 1, slidingWindow: 4096 },
  qwen3_moe: { numKvHeads: 4, maxPositionEmbeddings: 32768, rmsNormEps: 1e-6, ropeTheta: 10000, bosTokenId: null, eosTokenId: null, slidingWindow: 4096 },
  mixtral: { numKvHeads: 8, maxPositionEmbeddings: 4096 * 32, rmsNormEps: 1e-5, ropeTheta: 1e6, bosTokenId: 1, eosTokenId: 2, slidingWindow: null },
  qwen2_moe: { numKvHeads: 16, maxPositionEmbeddings: 32768, rmsNormEps: 1e-6, ropeTheta: 10000, bosTokenId: null, eosTokenId: null, slidingWindow: 4096 },
  phi3: { numKvHeads: null, maxPositionEmbeddings: 4096, rmsNormEps: 1e-5, ropeTheta: 10000, bosTokenId: 1, eosTokenId: 32000, slidingWindow: null },
};
/** Gemma 3's sliding-window layers: default RoPE with this base unless rope_local_base_freq says otherwise. */
const GEMMA3_LOCAL_THETA = 10000;

export const SUPPORTED_ROPE_TYPES: readonly RopeType[] = ['default', 'linear', 'llama3', 'yarn', 'dynamic', 'longrope'];

const posInt = z.number().int().positive();

/** One RoPE dict: transformers-4 `rope_scaling` or transformers-5 `rope_parameters` (same keys, plus rope_theta). */
const ropeDictSchema = z.looseObject({
  rope_type: z.string().nullish(),
  type: z.string().nullish(),
  rope_theta: z.number().positive().nullish(),
  factor: z.number().positive().nullish(),
  low_freq_factor: z.number().positive().nullish(),
  high_freq_factor: z.number().positive().nullish(),
  original_max_position_embeddings: posInt.nullish(),
  partial_rotary_factor: z.number().nullish(),
  attention_factor: z.number().positive().nullish(),
  mscale: z.number().nullish(),
  mscale_all_dim: z.number().nullish(),
  beta_fast: z.number().positive().nullish(),
  beta_slow: z.number().positive().nullish(),
  truncate: z.boolean().nullish(),
  short_factor: z.array(z.number().positive()).nullish(),
  long_factor: z.array(z.number().positive()).nullish(),
});
type RopeDict = z.infer<typeof ropeDictSchema>;

export const rawModelConfigSchema = z.looseObject({
  architectures: z.array(z.string()).nullish(),
  model_type: z.string().nullish(),
  vocab_size: posInt,
  hidden_size: posInt,
  intermediate_size: posInt,
  num_hidden_layers: posInt,
  num_attention_heads: posInt,
  num_key_value_heads: posInt.nullish(),
  head_dim: posInt.nullish(),
  hidden_act: z.string().nullish(),
  hidden_activation: z.string().nullish(),
  original_max_position_embeddings: posInt.nullish(),
  rope_local_base_freq: z.number().positive().nullish(),
  sliding_window_pattern: posInt.nullish(),
  query_pre_attn_scalar: z.number().positive().nullish(),
  attn_logit_softcapping: z.number().positive().nullish(),
  final_logit_softcapping: z.number().positive().nullish(),
  use_bidirectional_attention: z.boolean().nullish(),
  num_experts: z.number().int().nonnegative().nullish(),
  num_local_experts: z.number().int().nonnegative().nullish(),
  num_experts_per_tok: posInt.nullish(),
  moe_intermediate_size: posInt.nullish(),
  shared_expert_intermediate_size: z.number().int().nonnegative().nullish(),
  qkv_bias: z.boolean().nullish(),
  norm_topk_prob: z.boolean().nullish(),
  decoder_sparse_step: posInt.nullish(),
  mlp_only_layers: z.array(z.number().int().nonnegative()).nullish(),
  max_position_embeddings: posInt.nullish(),
  rms_norm_eps: z.number().positive().nullish(),
  rope_theta: z.number().positive().nullish(),
  rope_scaling: ropeDictSchema.nullish(),
  // Validated in resolveRope: transformers 5 may key it by layer type ({full_attention: {...}, ...}).
  rope_parameters: z.record(z.string(), z.unknown()).nullish(),
  partial_rotary_factor: z.number().nullish(),
  torch_dtype: z.string().nullish(),
  dtype: z.string().nullish(),
  tie_word_embeddings: z.boolean().nullish(),
  attention_bias: z.boolean().nullish(),
  mlp_bias: z.boolean().nullish(),
  // 0 = none (transformers 5's Qwen2-MoE writes 0 when use_sliding_window is off).
  sliding_window: z.number().int().nonnegative().nullish(),
  use_sliding_window: z.boolean().nullish(),
  max_window_layers: z.number().int().nonnegative().nullish(),
  layer_types: z.array(z.string()).nullish(),
  bos_token_id: z.number().int().nullish(),
  eos_token_id: z.union([z.number().int(), z.array(z.number().int())]).nullish(),
});
export type RawModelConfig = z.infer<typeof rawModelConfigSchema>;

/** "hidden_size: Invalid input: expected number, received string; ..." */
export function formatZodError(error: z.ZodError): string {
  return error.issues
    .map((issue) => (issue.path.length > 0 ? `${issue.path.join('.')}: ${issue.message}` : issue.message))
    .join('; ');
}

function resolveArch(raw: RawModelConfig, source: string): { arch: ModelArch; architecture: string } {
  const supported = Object.keys(ARCHITECTURES).join(', ');
  const declared = raw.architectures?.[0];
  const fromType = raw.model_type != null ? ARCH_OF_TYPE[raw.model_type] : undefined;
  if (declared !== undefined) {
    const arch = ARCHITECTURES[declared];
    if (arch === undefined) {
      const why = NOT_YET[declared];
      throw new Error(`${source}: unsupported architecture "${declared}"${why ? `: ${why}` : ''} (supported: ${supported})`);
    }
    // transformers picks the config class (and so the defaults) by model_type: both must agree.
    if (raw.model_type != null && fromType !== arch) {
      throw new Error(`${source}: architectures[0] is "${declared}" but model_type is "${raw.model_type}"`);
    }
    return { arch, architecture: declared };
  }
  if (fromType !== undefined) return { arch: fromType, architecture: CLASS_FOR_TYPE[fromType] };
  const what = raw.model_type != null ? `model_type "${raw.model_type}"` : 'no architectures or model_type';
  throw new Error(`${source}: unsupported architecture: ${what} (supported: ${supported})`);
}

interface RopeFields {
  ropeTheta: number;
  ropeType: RopeType;
  ropeFactor: number;
  ropeLowFreqFactor: number;
  ropeHighFreqFactor: number;
  ropeOriginalMaxPositions: number;
  ropeAttentionFactor?: number;
  ropeBetaFast?: number;
  ropeBetaSlow?: number;
  ropeTruncate?: boolean;
  ropeShortFactor?: number[];
  ropeLongFactor?: number[];
  ropeLocalTheta?: number;
}

/** What a rope dict needs besides itself: the config's top-level keys and the head size. */
interface RopeContext {
  topTheta: number | null | undefined;
  defaults: ArchDefaults;
  maxPositions: number;
  /** A top-level original_max_position_embeddings (Phi-3 writes it there; it wins, as in transformers). */
  topOriginalMax: number | null | undefined;
  headDim: number;
  source: string;
}

const LAYER_TYPE_KEYS = new Set(['full_attention', 'sliding_attention']);

function isNestedByLayerType(params: Record<string, unknown>): boolean {
  const keys = Object.keys(params);
  return keys.length > 0 && keys.every((k) => LAYER_TYPE_KEYS.has(k));
}

function resolveRopeDict(dict: RopeDict, ctx: RopeContext, where: string): RopeFields {
  const { topTheta, defaults, maxPositions, source } = ctx;
  if (dict.rope_type != null && dict.type != null && dict.rope_type !== dict.type) {
    throw new Error(`${source}: ${where} has rope_type "${dict.rope_type}" and type "${dict.type}"; they must agree`);
  }
  if (dict.rope_theta != null && topTheta != null && dict.rope_theta !== topTheta) {
    throw new Error(`${source}: rope_theta ${topTheta} disagrees with ${where}.rope_theta ${dict.rope_theta}`);
  }
  if (dict.partial_rotary_factor != null && dict.partial_rotary_factor !== 1) {
    throw new Error(`${source}: partial_rotary_factor ${dict.partial_rotary_factor} is not supported (only full rotary)`);
  }
  const ropeTheta = dict.rope_theta ?? topTheta ?? defaults.ropeTheta;
  const declared = dict.rope_type ?? dict.type ?? 'default';
  // "su" is what the first Phi-3 releases called longrope.
  const type = declared === 'su' ? 'longrope' : declared;
  // Neutral values for the fields a rope type does not use, so the engine never sees garbage.
  const neutral: RopeFields = {
    ropeTheta, ropeType: 'default', ropeFactor: 1, ropeLowFreqFactor: 1, ropeHighFreqFactor: 1,
    ropeOriginalMaxPositions: maxPositions,
  };
  const needFactor = (): number => {
    if (dict.factor == null) throw new Error(`${source}: ${where} (rope type ${type}) needs factor`);
    return dict.factor;
  };
  switch (type) {
    case 'default':
      return neutral;
    case 'linear':
      return { ...neutral, ropeType: 'linear', ropeFactor: needFactor() };
    case 'dynamic':
      // transformers scales against max_position_embeddings, whatever else the dict says.
      return { ...neutral, ropeType: 'dynamic', ropeFactor: needFactor() };
    case 'llama3': {
      const { factor, low_freq_factor: low, high_freq_factor: high } = dict;
      if (factor == null || low == null || high == null) {
        throw new Error(`${source}: ${where} (rope type llama3) needs factor, low_freq_factor and high_freq_factor`);
      }
      if (high <= low) {
        throw new Error(`${source}: ${where} (rope type llama3) needs high_freq_factor > low_freq_factor, got ${high} <= ${low}`);
      }
      return {
        ropeTheta, ropeType: 'llama3', ropeFactor: factor, ropeLowFreqFactor: low, ropeHighFreqFactor: high,
        // transformers 5 falls back to max_position_embeddings when the key is absent.
        ropeOriginalMaxPositions: dict.original_max_position_embeddings ?? ctx.topOriginalMax ?? maxPositions,
      };
    }
    case 'yarn': {
      const original = ctx.topOriginalMax ?? dict.original_max_position_embeddings ?? maxPositions;
      const factor = dict.factor ?? maxPositions / original;
      // transformers' get_mscale: 0.1 * m * ln(s) + 1 for s > 1.
      const mscale = (scale: number, m = 1): number => (scale <= 1 ? 1 : 0.1 * m * Math.log(scale) + 1);
      const attention = dict.attention_factor ?? (dict.mscale && dict.mscale_all_dim
        ? mscale(factor, dict.mscale) / mscale(factor, dict.mscale_all_dim)
        : mscale(factor));
      return {
        ...neutral, ropeType: 'yarn', ropeFactor: factor, ropeOriginalMaxPositions: original,
        ropeAttentionFactor: attention, ropeBetaFast: dict.beta_fast ?? 32, ropeBetaSlow: dict.beta_slow ?? 1,
        ropeTruncate: dict.truncate ?? true,
      };
    }
    case 'longrope': {
      const half = ctx.headDim / 2;
      const { short_factor: short, long_factor: long } = dict;
      if (short == null || long == null) throw new Error(`${source}: ${where} (rope type longrope) needs short_factor and long_factor`);
      if (short.length !== half || long.length !== half) {
        throw new Error(`${source}: ${where}: short_factor and long_factor need head_dim / 2 = ${half} entries, got ${short.length} and ${long.length}`);
      }
      const original = ctx.topOriginalMax ?? dict.original_max_position_embeddings ?? maxPositions;
      const factor = dict.factor ?? maxPositions / original;
      const attention = dict.attention_factor ?? (factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(original)));
      return {
        ...neutral, ropeType: 'longrope', ropeFactor: factor, ropeOriginalMaxPositions: original,
        ropeAttentionFactor: attention, ropeShortFactor: [...short], ropeLongFactor: [...long],
      };
    }
    default:
      throw new Error(`${source}: unsupported rope type "${declared}" (supported: ${SUPPORTED_ROPE_TYPES.join(', ')})`);
  }
}

function parseRopeDict(value: unknown, source: string, where: string): RopeDict {
  const parsed = ropeDictSchema.safeParse(value);
  if (!parsed.success) throw new Error(`${source}: ${where}: ${formatZodError(parsed.error)}`);
  return parsed.data;
}

/**
 * Gemma 3: the full-attention layers take the model's RoPE (rope_theta, rope_scaling), the sliding ones a
 * plain RoPE of base rope_local_base_freq (transformers 4) or rope_parameters.sliding_attention (5).
 */
function resolveGemma3Rope(raw: RawModelConfig, ctx: RopeContext): RopeFields {
  const params = raw.rope_parameters;
  const scaling = raw.rope_scaling != null && Object.keys(raw.rope_scaling).length > 0 ? raw.rope_scaling : null;
  let full: RopeFields;
  let local: RopeFields;
  const gctx = { ...ctx, defaults: { ...ctx.defaults, ropeTheta: ctx.defaults.ropeTheta } };
  if (params != null && isNestedByLayerType(params)) {
    const f = params.full_attention != null ? parseRopeDict(params.full_attention, ctx.source, 'rope_parameters.full_attention') : {};
    const l = params.sliding_attention != null ? parseRopeDict(params.sliding_attention, ctx.source, 'rope_parameters.sliding_attention') : {};
    full = resolveRopeDict(scaling !== null ? { ...f, ...scaling } : f, { ...gctx, topTheta: f.rope_theta ?? raw.rope_theta }, 'rope_parameters.full_attention');
    local = resolveRopeDict(l, { ...gctx, topTheta: l.rope_theta ?? raw.rope_local_base_freq, defaults: { ...ctx.defaults, ropeTheta: GEMMA3_LOCAL_THETA } }, 'rope_parameters.sliding_attention');
  } else {
    const f = scaling ?? (params != null ? parseRopeDict(params, ctx.source, 'rope_parameters') : {});
    full = resolveRopeDict(f, gctx, scaling !== null ? 'rope_scaling' : 'rope_parameters');
    local = resolveRopeDict({}, { ...gctx, topTheta: raw.rope_local_base_freq ?? GEMMA3_LOCAL_THETA }, 'rope_local_base_freq');
  }
  if (local.ropeType !== 'default') {
    throw new Error(`${ctx.source}: the sliding-window layers' RoPE must be of type default, got ${local.ropeType}`);
  }
  return { ...full, ropeLocalTheta: local.ropeTheta };
}

function resolveRope(raw: RawModelConfig, arch: ModelArch, ctx: RopeContext): RopeFields {
  const { source } = ctx;
  if (raw.partial_rotary_factor != null && raw.partial_rotary_factor !== 1) {
    throw new Error(`${source}: partial_rotary_factor ${raw.partial_rotary_factor} is not supported (only full rotary)`);
  }
  if (arch === 'gemma3') return resolveGemma3Rope(raw, ctx);
  const resolve = (dict: RopeDict, where: string): RopeFields => resolveRopeDict(dict, ctx, where);
  // transformers 5 prefers a non-empty legacy rope_scaling over rope_parameters; transformers 4 only knows rope_scaling.
  const scaling = raw.rope_scaling != null && Object.keys(raw.rope_scaling).length > 0 ? raw.rope_scaling : null;
  if (scaling !== null) return resolve(scaling, 'rope_scaling');
  const params = raw.rope_parameters;
  if (params == null) return resolve({}, 'rope_parameters');
  if (!isNestedByLayerType(params)) return resolve(parseRopeDict(params, source, 'rope_parameters'), 'rope_parameters');
  // The engine has one RoPE for all layers: per-layer-type dicts are fine only if they all say the same.
  const resolved = Object.entries(params)
    .filter(([, d]) => d !== null)
    .map(([k, d]) => resolve(parseRopeDict(d, source, `rope_parameters.${k}`), `rope_parameters.${k}`));
  if (resolved.length === 0) return resolve({}, 'rope_parameters');
  const first = JSON.stringify(resolved[0]);
  if (resolved.some((r) => JSON.stringify(r) !== first)) {
    throw new Error(`${source}: rope_parameters differ between layer types, which is not supported`);
  }
  return resolved[0]!;
}

/**
 * Per-layer attention window (0 = full), following transformers:
 * Mistral applies sliding_window to every layer; Qwen2 only when use_sliding_window, then by layer_types if given,
 * else to layers with index >= max_window_layers.
 */
function resolveSlidingWindow(raw: RawModelConfig, arch: ModelArch, defaults: ArchDefaults, source: string): number[] {
  const n = raw.num_hidden_layers;
  const window = raw.sliding_window === undefined ? defaults.slidingWindow : (raw.sliding_window || null);
  if (arch === 'llama') return new Array<number>(n).fill(0);
  if (arch === 'mistral' || arch === 'phi3' || arch === 'mixtral') return new Array<number>(n).fill(window ?? 0);

  const layerTypes = raw.layer_types ?? null;
  if (layerTypes !== null) {
    if (layerTypes.length !== n) {
      throw new Error(`${source}: layer_types has ${layerTypes.length} entries but num_hidden_layers is ${n}`);
    }
    const bad = layerTypes.find((t) => !LAYER_TYPE_KEYS.has(t));
    if (bad !== undefined) {
      throw new Error(`${source}: unsupported layer type "${bad}" (supported: full_attention, sliding_attention)`);
    }
  }
  if (arch === 'gemma2' || arch === 'gemma3') {
    // Gemma: every pattern-th layer is global, the others slide (Gemma 2: 2, Gemma 3: sliding_window_pattern, 6).
    const pattern = arch === 'gemma2' ? 2 : (raw.sliding_window_pattern ?? 6);
    const types = layerTypes ?? Array.from({ length: n }, (_, i) => ((i + 1) % pattern !== 0 ? 'sliding_attention' : 'full_attention'));
    return types.map((t) => (t === 'sliding_attention' ? (window ?? 0) : 0));
  }
  // Qwen2Config drops sliding_window unless use_sliding_window is set, whatever layer_types says.
  const effective = raw.use_sliding_window === true ? window : null;
  if (effective == null) return new Array<number>(n).fill(0);
  if (layerTypes !== null) return layerTypes.map((t) => (t === 'sliding_attention' ? effective : 0));
  const maxWindowLayers = raw.max_window_layers ?? 28;
  return Array.from({ length: n }, (_, i) => (i >= maxWindowLayers ? effective : 0));
}

/** Per-family defaults of the MoE config classes (Qwen3MoeConfig, Qwen2MoeConfig, MixtralConfig). */
const MOE_DEFAULTS = {
  qwen3_moe: { experts: 128, perToken: 8, width: 768, shared: 0 },
  qwen2_moe: { experts: 60, perToken: 4, width: 1408, shared: 5632 },
  mixtral: { experts: 8, perToken: 2, width: null, shared: 0 },
} as const;

/**
 * The mixture-of-experts fields. Qwen3-MoE and Qwen2-MoE: a layer is MoE unless listed in mlp_only_layers, every
 * decoder_sparse_step-th; experts of moe_intermediate_size; top-k renormalised when norm_topk_prob; Qwen2-MoE adds a
 * shared expert. Mixtral: every layer, experts of intermediate_size, top-k always renormalised (MixtralTopKRouter).
 */
function resolveMoe(raw: RawModelConfig, arch: 'qwen3_moe' | 'qwen2_moe' | 'mixtral', source: string): FamilyFields {
  // transformers 5 may write num_local_experts (an attribute map's name for num_experts), 4 writes num_experts.
  if (raw.num_experts != null && raw.num_local_experts != null && raw.num_experts !== raw.num_local_experts) {
    throw new Error(`${source}: num_experts ${raw.num_experts} disagrees with num_local_experts ${raw.num_local_experts}`);
  }
  const d = MOE_DEFAULTS[arch];
  const experts = raw.num_experts ?? raw.num_local_experts ?? d.experts;
  const perToken = raw.num_experts_per_tok ?? d.perToken;
  if (experts > 0 && perToken > experts) {
    throw new Error(`${source}: num_experts_per_tok ${perToken} is more than num_experts ${experts}`);
  }
  if (arch === 'mixtral') {
    if (experts === 0) throw new Error(`${source}: Mixtral needs num_local_experts > 0`);
    return {
      numExperts: experts, expertsPerToken: perToken, moeIntermediateSize: raw.intermediate_size, normTopkProb: true,
      moeLayers: new Array<boolean>(raw.num_hidden_layers).fill(true),
    };
  }
  const step = raw.decoder_sparse_step ?? 1;
  const dense = new Set(raw.mlp_only_layers ?? []);
  const out: FamilyFields = {
    numExperts: experts, expertsPerToken: perToken, moeIntermediateSize: raw.moe_intermediate_size ?? d.width!,
    normTopkProb: raw.norm_topk_prob ?? false,
    moeLayers: Array.from({ length: raw.num_hidden_layers }, (_, i) => experts > 0 && !dense.has(i) && (i + 1) % step === 0),
  };
  if (arch === 'qwen2_moe') {
    const shared = raw.shared_expert_intermediate_size ?? d.shared;
    if (shared === 0) throw new Error(`${source}: shared_expert_intermediate_size 0 is not supported (Qwen2-MoE always has a shared expert)`);
    out.sharedExpertIntermediateSize = shared;
  }
  return out;
}

/** Validates a parsed config.json object and derives the spec fields; `source` names the file in errors. */
export function parseModelConfig(json: unknown, source = 'config.json'): ModelConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new Error(`${source}: expected a JSON object`);
  }
  // Check the architecture before the schema, so a GPT-2 config says "unsupported architecture", not "missing hidden_size".
  const pre = z.looseObject({ architectures: z.array(z.string()).nullish(), model_type: z.string().nullish() }).safeParse(json);
  if (!pre.success) throw new Error(`${source}: ${formatZodError(pre.error)}`);
  resolveArch(pre.data as RawModelConfig, source);

  const parsed = rawModelConfigSchema.safeParse(json);
  if (!parsed.success) throw new Error(`${source}: ${formatZodError(parsed.error)}`);
  const raw = parsed.data;
  const { arch, architecture } = resolveArch(raw, source);
  const defaults = ARCH_DEFAULTS[arch];

  const gemma = arch === 'gemma2' || arch === 'gemma3';
  // Gemma reads hidden_activation (hidden_act is ignored there); both gelu_pytorch_tanh and gelu_new are the tanh form.
  const hiddenAct = gemma ? (raw.hidden_activation ?? 'gelu_pytorch_tanh') : (raw.hidden_act ?? 'silu');
  const act = hiddenAct === 'silu' ? 'silu' : hiddenAct === 'gelu_pytorch_tanh' || hiddenAct === 'gelu_new' ? 'gelu_tanh' : null;
  if (act === null) {
    throw new Error(`${source}: ${gemma ? 'hidden_activation' : 'hidden_act'} "${hiddenAct}" is not supported (only silu, gelu_pytorch_tanh)`);
  }
  if (arch !== 'qwen2' && arch !== 'mistral' && raw.attention_bias === true) {
    // These families' attention_bias also adds an o_proj bias, which the engine has no slot for.
    throw new Error(`${source}: attention_bias=true is not supported for ${arch}`);
  }
  if ((arch === 'qwen3_moe' || arch === 'qwen2_moe') && raw.use_sliding_window === true) {
    throw new Error(`${source}: use_sliding_window=true is not supported for ${arch === 'qwen3_moe' ? 'Qwen3-MoE' : 'Qwen2-MoE'}`);
  }
  if (gemma && raw.use_bidirectional_attention === true) {
    throw new Error(`${source}: use_bidirectional_attention=true (an encoder) is not supported`);
  }
  if (arch === 'llama' && raw.mlp_bias === true) throw new Error(`${source}: mlp_bias=true is not supported`);

  const numHeads = raw.num_attention_heads;
  const numKvHeads =
    raw.num_key_value_heads === undefined
      ? (defaults.numKvHeads ?? numHeads)
      : (raw.num_key_value_heads ?? numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw new Error(`${source}: num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);
  }
  let headDim = raw.head_dim ?? null;
  if (headDim === null) {
    if (raw.hidden_size % numHeads !== 0) {
      throw new Error(`${source}: hidden_size ${raw.hidden_size} is not a multiple of num_attention_heads ${numHeads} and head_dim is not given`);
    }
    headDim = raw.hidden_size / numHeads;
  }
  if (headDim % 2 !== 0) throw new Error(`${source}: head_dim ${headDim} is odd; RoPE needs an even head_dim`);

  const maxPositionEmbeddings = raw.max_position_embeddings ?? defaults.maxPositionEmbeddings;
  const rope = resolveRope(raw, arch, {
    topTheta: raw.rope_theta, defaults, maxPositions: maxPositionEmbeddings, topOriginalMax: raw.original_max_position_embeddings,
    headDim, source,
  });
  // transformers' defaults when the key is absent (an explicit null turns soft-capping off).
  const softcap = (v: number | null | undefined, dflt: number | null): number => (v === undefined ? (dflt ?? 0) : (v ?? 0));
  const family: FamilyFields = {};
  if (arch === 'qwen3' || arch === 'gemma3' || arch === 'qwen3_moe') family.qkNorm = true;
  if (arch === 'qwen3_moe' || arch === 'qwen2_moe' || arch === 'mixtral') Object.assign(family, resolveMoe(raw, arch, source));
  if (gemma) {
    Object.assign(family, {
      gemmaNorm: true, sandwichNorm: true,
      // The embedding is multiplied by sqrt(hidden_size) as a float32 number in a float32 forward.
      embedScale: Math.fround(Math.sqrt(raw.hidden_size)),
      attnScale: (raw.query_pre_attn_scalar ?? 256) ** -0.5,
      attnSoftcap: softcap(raw.attn_logit_softcapping, arch === 'gemma2' ? 50 : null),
      finalSoftcap: softcap(raw.final_logit_softcapping, arch === 'gemma2' ? 30 : null),
    });
  }
  if (act !== 'silu') family.hiddenAct = act;

  return {
    arch,
    hiddenSize: raw.hidden_size,
    intermediateSize: raw.intermediate_size,
    numLayers: raw.num_hidden_layers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: raw.vocab_size,
    rmsNormEps: raw.rms_norm_eps ?? defaults.rmsNormEps,
    ...rope,
    slidingWindow: resolveSlidingWindow(raw, arch, defaults, source),
    // Qwen2-MoE's q/k/v biases follow qkv_bias (transformers 4 always had them).
    attentionBias: arch === 'qwen2' || (arch === 'qwen2_moe' && (raw.qkv_bias ?? true)),
    // Gemma ties by default (its config class says so); the others do not.
    tieWordEmbeddings: raw.tie_word_embeddings ?? gemma,
    ...family,
    architecture,
    modelType: arch,
    maxPositionEmbeddings,
    dtype: raw.dtype ?? raw.torch_dtype ?? null,
    bosTokenId: raw.bos_token_id === undefined ? defaults.bosTokenId : raw.bos_token_id,
    eosTokenId: raw.eos_token_id === undefined ? defaults.eosTokenId : raw.eos_token_id,
  };
}

/** The optional family fields of NativeModelSpec (absent = the Llama behaviour). */
type FamilyFields = Partial<Pick<NativeModelSpec,
  'qkNorm' | 'gemmaNorm' | 'sandwichNorm' | 'embedScale' | 'hiddenAct' | 'attnScale' | 'attnSoftcap' | 'finalSoftcap' |
  'numExperts' | 'expertsPerToken' | 'moeIntermediateSize' | 'normTopkProb' | 'moeLayers' | 'sharedExpertIntermediateSize'>>;

const OPTIONAL_SPEC_FIELDS = [
  'qkNorm', 'gemmaNorm', 'sandwichNorm', 'embedScale', 'hiddenAct', 'attnScale', 'attnSoftcap', 'finalSoftcap',
  'ropeLocalTheta', 'ropeAttentionFactor', 'ropeBetaFast', 'ropeBetaSlow', 'ropeTruncate', 'ropeShortFactor', 'ropeLongFactor',
  'numExperts', 'expertsPerToken', 'moeIntermediateSize', 'normTopkProb', 'moeLayers', 'sharedExpertIntermediateSize',
] as const;

/** The NativeModelSpec fields of a ModelConfig, without the server-side extras. */
export function modelSpecFields(config: ModelConfig): ModelSpecFields {
  const {
    arch, hiddenSize, intermediateSize, numLayers, numHeads, numKvHeads, headDim, vocabSize, rmsNormEps,
    ropeTheta, ropeType, ropeFactor, ropeLowFreqFactor, ropeHighFreqFactor, ropeOriginalMaxPositions,
    slidingWindow, attentionBias, tieWordEmbeddings,
  } = config;
  const out: ModelSpecFields = {
    arch, hiddenSize, intermediateSize, numLayers, numHeads, numKvHeads, headDim, vocabSize, rmsNormEps,
    ropeTheta, ropeType, ropeFactor, ropeLowFreqFactor, ropeHighFreqFactor, ropeOriginalMaxPositions,
    slidingWindow: [...slidingWindow], attentionBias, tieWordEmbeddings,
  };
  for (const k of OPTIONAL_SPEC_FIELDS) {
    const v = config[k];
    if (v !== undefined) (out as unknown as Record<string, unknown>)[k] = Array.isArray(v) ? [...v] : v;
  }
  return out;
}

export interface ProjectionFeatures {
  inFeatures: number;
  outFeatures: number;
}

/**
 * in/out features of a module LoRA may target: the shape contract for weights and LoRA factors (lora_A
 * [r, in], lora_B [out, r]). embed_tokens reads as vocab -> hidden, the shapes of PEFT's lora_embedding_A / B.
 * The expert modules give one expert's features. With `layer`, gate/up/down_proj of a MoE layer with a shared
 * expert (Qwen2-MoE) are the shared expert's.
 */
export function projectionFeatures(spec: ModelSpecFields, module: LoraModuleName, layer = -1): ProjectionFeatures {
  const q = spec.numHeads * spec.headDim;
  const kv = spec.numKvHeads * spec.headDim;
  const h = spec.hiddenSize;
  const shared = layer >= 0 && spec.moeLayers?.[layer] === true ? (spec.sharedExpertIntermediateSize ?? 0) : 0;
  const inter = shared > 0 ? shared : spec.intermediateSize;
  const m = spec.moeIntermediateSize ?? 0;
  switch (module) {
    case 'q_proj': return { inFeatures: h, outFeatures: q };
    case 'k_proj':
    case 'v_proj': return { inFeatures: h, outFeatures: kv };
    case 'o_proj': return { inFeatures: q, outFeatures: h };
    case 'gate_proj':
    case 'up_proj': return { inFeatures: h, outFeatures: inter };
    case 'down_proj': return { inFeatures: inter, outFeatures: h };
    case 'lm_head': return { inFeatures: h, outFeatures: spec.vocabSize };
    case 'embed_tokens': return { inFeatures: spec.vocabSize, outFeatures: h };
    case 'experts.gate_up_proj': return { inFeatures: h, outFeatures: 2 * m };
    case 'experts.down_proj': return { inFeatures: m, outFeatures: h };
  }
}

/** The fused expert parameters PEFT's target_parameters may adapt, in their order in a MoE layer. */
export const EXPERT_LORA_MODULES: readonly LoraExpertName[] = ['experts.gate_up_proj', 'experts.down_proj'];

export function isExpertModule(module: LoraModuleName): module is LoraExpertName {
  return module === 'experts.gate_up_proj' || module === 'experts.down_proj';
}

/** The decoder projections (what PEFT's "all-linear" expands to here: every nn.Linear but the output head). */
export const LORA_MODULES: readonly LoraProjectionName[] = [
  'q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj',
];

/** Modules outside the decoder layers that LoRA may target (layer -1 in a NativeLoraModule), by PEFT's module name. */
export const MODEL_LORA_MODULES: Readonly<Record<'embed_tokens' | 'lm_head', string>> = {
  embed_tokens: 'model.embed_tokens',
  lm_head: 'lm_head',
};

/** A module's place in an adapter's order: the embedding, the projections layer by layer, the head. */
export function loraModuleOrder(layer: number, module: LoraModuleName): number {
  if (module === 'embed_tokens') return -1;
  if (module === 'lm_head') return Number.MAX_SAFE_INTEGER;
  const per = LORA_MODULES.length + EXPERT_LORA_MODULES.length;
  return layer * per + (isExpertModule(module) ? LORA_MODULES.length + EXPERT_LORA_MODULES.indexOf(module) : LORA_MODULES.indexOf(module));
}

/** PEFT's name of a module inside the base model, e.g. "model.layers.3.self_attn.q_proj" or "lm_head". */
export function peftModuleName(layer: number, module: LoraModuleName): string {
  if (module === 'embed_tokens' || module === 'lm_head') return MODEL_LORA_MODULES[module];
  if (isExpertModule(module)) return `model.layers.${layer}.mlp.${module}`;
  return `model.layers.${layer}.${moduleParent(module)}.${module}`;
}

/** The HF submodule (self_attn / mlp) each projection lives under. */
export function moduleParent(module: LoraProjectionName): 'self_attn' | 'mlp' {
  return module === 'gate_proj' || module === 'up_proj' || module === 'down_proj' ? 'mlp' : 'self_attn';
}
