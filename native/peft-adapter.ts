// A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors) -> NativeAdapterSpec,
// checked against the base model it will be applied to.
//
// Which modules get LoRA, and with what rank and alpha, follows PEFT's own rules (peft/tuners/tuners_utils.py
// check_target_module_exists, peft/utils/other.py get_pattern_key), applied to the module name PEFT uses inside
// the base model, e.g. "model.layers.3.self_attn.q_proj". Besides the decoder projections, "lm_head" (a Linear)
// and "model.embed_tokens" (PEFT's Embedding LoRA, saved as lora_embedding_A [r, vocab] / lora_embedding_B
// [hidden, r]) may be targeted. A module present in the file that PEFT would not
// target is dropped, as PEFT drops it (it creates no LoRA layer there, so the weights are unexpected keys).
// On mixture-of-experts layers, PEFT's target_parameters LoRA on the fused expert weights
// (experts.gate_up_proj, experts.down_proj: lora.ParamWrapper, nested one per parameter) is read too; in
// Qwen2-MoE, gate/up/down_proj name the shared expert's projections (mlp.shared_expert.*).

import { access } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import type { LoraExpertName, LoraModuleName, LoraProjectionName, NativeAdapterSpec, NativeLoraModule, NativeTensorRef } from './addon.d.ts';
import {
  EXPERT_LORA_MODULES, formatZodError, LORA_MODULES, loraModuleOrder, MODEL_LORA_MODULES, moduleParent, projectionFeatures,
} from './model-config.ts';
import { readJsonFile, type ModelDir } from './model-dir.ts';
import { formatShape, readSafetensorsHeader, requireWeightDtype, type SafetensorsEntry } from './safetensors.ts';
import { readTorchCheckpoint } from './torch-checkpoint.ts';
import {
  layerIndexRegex, MatchBudget, MAX_LAYERS_PATTERNS, MAX_MODULE_LIST, MAX_PATTERN_CHARS, MAX_PATTERN_KEYS, MAX_PATTERN_LENGTH, PatternError, patternKeyMatches,
  patternKeyRegex, pythonRegex,
} from './adapter-patterns.ts';

export { PatternError } from './adapter-patterns.ts';

export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
/** torch.save's zip + pickle format, read when no safetensors file is there (native/torch-checkpoint.ts). */
export const ADAPTER_PICKLE_FILE = 'adapter_model.bin';

const nonNegInt = z.number().int().nonnegative();
const stringOrList = z.union([z.string(), z.array(z.string())]);

export const adapterConfigSchema = z.looseObject({
  peft_type: z.string(),
  // Defaults are LoraConfig's.
  r: z.number().int().positive().default(8),
  lora_alpha: z.number().default(8),
  use_rslora: z.boolean().nullish(),
  rank_pattern: z.record(z.string(), z.number().int().positive()).nullish(),
  alpha_pattern: z.record(z.string(), z.number()).nullish(),
  target_modules: stringOrList.nullish(),
  target_parameters: z.array(z.string()).nullish(),
  exclude_modules: stringOrList.nullish(),
  fan_in_fan_out: z.boolean().nullish(),
  bias: z.string().nullish(),
  use_dora: z.boolean().nullish(),
  lora_bias: z.boolean().nullish(),
  modules_to_save: z.array(z.string()).nullish(),
  layers_to_transform: z.union([nonNegInt, z.array(nonNegInt)]).nullish(),
  layers_pattern: stringOrList.nullish(),
  base_model_name_or_path: z.string().nullish(),
  task_type: z.string().nullish(),
  init_lora_weights: z.union([z.boolean(), z.string()]).nullish(),
  ensure_weight_tying: z.boolean().nullish(),
});
export type RawAdapterConfig = z.infer<typeof adapterConfigSchema>;

/** The adapter_config.json fields that decide which modules get LoRA and how strongly. */
export interface LoraTargeting {
  r: number;
  loraAlpha: number;
  useRslora: boolean;
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
  /** A list of names/suffixes, or a regex string (full match); "all-linear" is expanded to every projection. */
  targetModules: string[] | string;
  excludeModules: string[] | string | null;
  layersToTransform: number[] | null;
  layersPattern: string[] | null;
  /** PEFT target_parameters: parameter names or '.'-suffixes (no regex, no layers_to_transform), e.g. "experts.gate_up_proj". */
  targetParameters: string[];
}

export interface PeftAdapterInfo extends LoraTargeting {
  dir: string;
  baseModelNameOrPath: string | null;
  taskType: string | null;
  fanInFanOut: boolean;
  /** The adapter name found inside tensor names (".lora_A.<name>.weight"), if any. */
  adapterName: string | null;
  /** Modules with weights in the file that the config does not target; PEFT ignores them too. */
  ignoredModules: string[];
  warnings: string[];
  weightBytes: number;
}

export interface PeftAdapter {
  spec: NativeAdapterSpec;
  config: PeftAdapterInfo;
}

/** Config options that change the adapter's forward pass in ways the engine does not implement. */
const UNSUPPORTED_OPTIONS: ReadonlyArray<readonly [key: string, what: string]> = [
  ['trainable_token_indices', 'trainable token embeddings'],
  ['layer_replication', 'layer replication'],
  ['alora_invocation_tokens', 'activated LoRA (aLoRA)'],
  ['use_qalora', 'QALoRA'],
  ['use_bdlora', 'block-diagonal LoRA'],
  ['velora_config', 'VeLoRA'],
  ['monteclora_config', 'MonteCLoRA'],
  ['arrow_config', 'Arrow routing'],
  ['kasa_config', 'KaSA'],
];

/** init_lora_weights values that change the base weights at training time (unless converted before saving). */
const BASE_MODIFYING_INITS = ['pissa', 'olora', 'corda', 'loftq'];

function isSet(value: unknown): boolean {
  if (value === undefined || value === null || value === false) return false;
  if (Array.isArray(value)) return value.length > 0;
  if (typeof value === 'object') return Object.keys(value).length > 0;
  return true;
}

/** Validates adapter_config.json and rejects every option Switchboard cannot serve faithfully. */
export function parseAdapterConfig(json: unknown, source = ADAPTER_CONFIG_FILE): RawAdapterConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error(`${source}: expected a JSON object`);
  const peftType = (json as Record<string, unknown>).peft_type;
  if (peftType !== 'LORA') {
    throw new Error(`${source}: peft_type ${JSON.stringify(peftType ?? null)} is not supported (only LORA adapters are served)`);
  }
  const parsed = adapterConfigSchema.safeParse(json);
  if (!parsed.success) throw new Error(`${source}: ${formatZodError(parsed.error)}`);
  const cfg = parsed.data;
  const bias = cfg.bias ?? 'none';
  if (bias !== 'none') throw new Error(`${source}: adapter trains biases (bias=${bias}), which Switchboard does not serve`);
  if (cfg.use_dora === true) throw new Error(`${source}: DoRA adapters (use_dora=true) are not supported`);
  if (cfg.lora_bias === true) throw new Error(`${source}: adapter has lora_B biases (lora_bias=true), which Switchboard does not serve`);
  if (isSet(cfg.modules_to_save)) {
    throw new Error(
      `${source}: adapter fully trains modules_to_save (${(cfg.modules_to_save ?? []).join(', ')}), which Switchboard does not serve`,
    );
  }
  for (const [key, what] of UNSUPPORTED_OPTIONS) {
    if (isSet((cfg as Record<string, unknown>)[key])) throw new Error(`${source}: ${what} (${key}) is not supported`);
  }
  checkConfigPatterns(cfg, source);
  return cfg;
}

/** The targeting rules of a parsed config; a missing target_modules means PEFT's default for llama/mistral/qwen2. */
export function loraTargeting(cfg: RawAdapterConfig): LoraTargeting {
  let targetModules: string[] | string = cfg.target_modules ?? ['q_proj', 'v_proj'];
  if (typeof targetModules === 'string' && targetModules.toLowerCase() === 'all-linear') {
    // Every nn.Linear except the output head; in these architectures that is exactly the seven projections.
    targetModules = [...LORA_MODULES];
  }
  const ltt = cfg.layers_to_transform;
  const lp = cfg.layers_pattern;
  return {
    r: cfg.r,
    loraAlpha: cfg.lora_alpha,
    useRslora: cfg.use_rslora ?? false,
    rankPattern: { ...(cfg.rank_pattern ?? {}) },
    alphaPattern: { ...(cfg.alpha_pattern ?? {}) },
    targetModules,
    excludeModules: cfg.exclude_modules ?? null,
    layersToTransform: ltt == null ? null : typeof ltt === 'number' ? [ltt] : [...ltt],
    layersPattern: lp == null ? null : typeof lp === 'string' ? [lp] : [...lp],
    targetParameters: [...(cfg.target_parameters ?? [])],
  };
}

/** PEFT's match of a target_parameters entry: the parameter's full name, or a '.'-aligned suffix of it. */
export function isTargetedParameter(t: LoraTargeting, paramKey: string): boolean {
  return t.targetParameters.some((k) => paramKey === k || paramKey.endsWith(`.${k}`));
}

/**
 * PEFT's get_pattern_key: the first key (in the dict's order) such that re.match(rf"(.*\.)?({key})$", moduleKey)
 * matches, i.e. the key matches a '.'-aligned suffix of the module name, or all of it.
 * Returns undefined when no key matches (PEFT then looks the module name up verbatim, which we also do).
 */
export function findPatternKey(patternKeys: Iterable<string>, moduleKey: string, what = 'pattern key'): string | undefined {
  for (const key of patternKeys) {
    if (patternKeyMatches(key, moduleKey, what)) return key;
  }
  return undefined;
}

/** The config's patterns with the field each belongs to, for checking and compiling. */
function configPatterns(cfg: RawAdapterConfig): { what: string; compile: () => unknown }[] {
  const out: { what: string; compile: () => unknown }[] = [];
  for (const field of ['rank_pattern', 'alpha_pattern'] as const) {
    for (const k of Object.keys(cfg[field] ?? {})) out.push({ what: `${field} key`, compile: () => patternKeyRegex(k, `${field} key`) });
    // (plain keys are matched without the engine, but compiling them too keeps one rule for what is accepted)
  }
  for (const field of ['target_modules', 'exclude_modules'] as const) {
    const v = cfg[field];
    if (typeof v === 'string' && !(field === 'target_modules' && v.toLowerCase() === 'all-linear')) out.push({ what: field, compile: () => pythonRegex(v, field) });
  }
  const lp = cfg.layers_pattern == null ? [] : typeof cfg.layers_pattern === 'string' ? [cfg.layers_pattern] : cfg.layers_pattern;
  for (const p of lp) out.push({ what: 'layers_pattern', compile: () => layerIndexRegex(p) });
  return out;
}

/**
 * The cheap checks of a config's patterns, run when it is parsed: how many there are and how long
 * each is (compiling them, which costs more, is compileConfigPatterns' job).
 */
export function checkConfigPatterns(cfg: RawAdapterConfig, source = ADAPTER_CONFIG_FILE): void {
  const fail = (msg: string): never => {
    throw new PatternError(`${source}: ${msg}`);
  };
  for (const field of ['rank_pattern', 'alpha_pattern'] as const) {
    const keys = Object.keys(cfg[field] ?? {});
    if (keys.length > MAX_PATTERN_KEYS) fail(`${field} has ${keys.length} keys (at most ${MAX_PATTERN_KEYS})`);
    const chars = keys.reduce((n, k) => n + k.length, 0);
    if (chars > MAX_PATTERN_CHARS) fail(`${field} keys total ${chars} characters (at most ${MAX_PATTERN_CHARS})`);
    for (const k of keys) if (k.length > MAX_PATTERN_LENGTH) fail(`${field} key ${JSON.stringify(k.slice(0, 64))}... is ${k.length} characters long (at most ${MAX_PATTERN_LENGTH})`);
  }
  for (const field of ['target_modules', 'exclude_modules'] as const) {
    const v = cfg[field];
    if (typeof v === 'string' && v.length > MAX_PATTERN_LENGTH) fail(`${field} ${JSON.stringify(v.slice(0, 64))}... is ${v.length} characters long (at most ${MAX_PATTERN_LENGTH})`);
    if (Array.isArray(v) && v.length > MAX_MODULE_LIST) fail(`${field} lists ${v.length} modules (at most ${MAX_MODULE_LIST})`);
  }
  const tp = cfg.target_parameters ?? [];
  if (tp.length > MAX_MODULE_LIST) fail(`target_parameters lists ${tp.length} parameters (at most ${MAX_MODULE_LIST})`);
  for (const p of tp) if (p.length > MAX_PATTERN_LENGTH) fail(`target_parameters entry ${JSON.stringify(p.slice(0, 64))}... is ${p.length} characters long (at most ${MAX_PATTERN_LENGTH})`);
  const lp = cfg.layers_pattern == null ? [] : typeof cfg.layers_pattern === 'string' ? [cfg.layers_pattern] : cfg.layers_pattern;
  if (lp.length > MAX_LAYERS_PATTERNS) fail(`layers_pattern has ${lp.length} entries (at most ${MAX_LAYERS_PATTERNS})`);
  for (const p of lp) if (p.length > MAX_PATTERN_LENGTH) fail(`layers_pattern ${JSON.stringify(p.slice(0, 64))}... is ${p.length} characters long (at most ${MAX_PATTERN_LENGTH})`);
}

/**
 * Compiles every pattern of a (parsed, so bounded) config, handing the event loop back between
 * patterns within `budget`: a pattern RE2 cannot run is refused here, naming it, before any module
 * is matched. Run at upload and before an adapter's modules are matched.
 */
export async function compileConfigPatterns(cfg: RawAdapterConfig, source = ADAPTER_CONFIG_FILE, budget = new MatchBudget()): Promise<void> {
  for (const p of configPatterns(cfg)) {
    await budget.tick();
    try {
      p.compile();
    } catch (err) {
      if (err instanceof PatternError) throw new PatternError(`${source}: ${err.message}`);
      throw err;
    }
  }
}

function patternValue(pattern: Record<string, number>, moduleKey: string, fallback: number, what: string): number {
  const key = findPatternKey(Object.keys(pattern), moduleKey, what) ?? moduleKey;
  return pattern[key] ?? fallback;
}

export interface ModuleScaling {
  rank: number;
  alpha: number;
  scale: number;
}

/** r and lora_alpha after rank_pattern / alpha_pattern, and the resulting scale (alpha/r, or alpha/sqrt(r) with rslora). */
export function moduleScaling(t: LoraTargeting, moduleKey: string): ModuleScaling {
  const rank = patternValue(t.rankPattern, moduleKey, t.r, 'rank_pattern key');
  const alpha = patternValue(t.alphaPattern, moduleKey, t.loraAlpha, 'alpha_pattern key');
  return { rank, alpha, scale: t.useRslora ? alpha / Math.sqrt(rank) : alpha / rank };
}

/** PEFT's check_target_module_exists for a module name such as "model.layers.3.self_attn.q_proj". */
export function isTargetedModule(t: LoraTargeting, moduleKey: string): boolean {
  const ex = t.excludeModules;
  if (ex !== null) {
    if (typeof ex === 'string') {
      if (pythonRegex(ex, 'exclude_modules').fullmatch(moduleKey)) return false;
    } else if (ex.some((e) => moduleKey === e || moduleKey.endsWith(`.${e}`))) {
      return false;
    }
  }
  if (typeof t.targetModules === 'string') {
    // A regex string is a full match, and layers_to_transform does not apply to it.
    return pythonRegex(t.targetModules, 'target_modules').fullmatch(moduleKey);
  }
  const targets = t.targetModules;
  if (targets.includes(moduleKey)) return true;
  if (!targets.some((k) => moduleKey.endsWith(`.${k}`))) return false;
  if (t.layersToTransform === null || t.layersToTransform.length === 0) return true;
  // The layer index as PEFT finds it: re.match(rf".*\.{layers_pattern}\.(\d+)\.", name) for the
  // first layers_pattern that matches, or its default pattern when there is none.
  let m: (string | null)[] | null = null;
  if (t.layersPattern === null || t.layersPattern.length === 0) {
    m = layerIndexRegex(null).match(moduleKey);
  } else {
    for (const p of t.layersPattern) {
      m = layerIndexRegex(p).match(moduleKey);
      if (m !== null) break;
    }
  }
  return m !== null && t.layersToTransform.includes(Number(m[1]));
}

interface ParsedName {
  /** PEFT's name of the module inside the base model, e.g. "model.layers.0.self_attn.q_proj". */
  moduleKey: string;
  half: 'lora_A' | 'lora_B';
  /** An Embedding LoRA's factor (lora_embedding_A / lora_embedding_B, parameters without ".weight"). */
  embedding: boolean;
  adapterName: string | null;
}

const LORA_WEIGHT = /^(?:base_model\.model\.)?(.+?)\.(lora_A|lora_B)(?:\.([^.]+))?\.weight$/;
const LORA_EMBEDDING = /^(?:base_model\.model\.)?(.+?)\.lora_embedding_(A|B)(?:\.(?!weight$)([^.]+))?$/;
const DECODER_MODULE = /^model\.layers\.(\d+)\.([a-z_]+)\.([a-z_]+)$/;
/** PEFT's ParamWrapper on a MoE layer's experts, nested once per targeted parameter (".base_layer" per level). */
const EXPERTS_MODULE = /^model\.layers\.(\d+)\.mlp\.experts((?:\.base_layer)*)$/;
/** Qwen2-MoE's shared expert, a plain MLP inside the MoE block. */
const SHARED_EXPERT_MODULE = /^model\.layers\.(\d+)\.mlp\.shared_expert\.(gate_proj|up_proj|down_proj)$/;

function parseTensorName(file: string, name: string): ParsedName {
  const m = LORA_WEIGHT.exec(name);
  if (m !== null) return { moduleKey: m[1]!, half: m[2] as 'lora_A' | 'lora_B', embedding: false, adapterName: m[3] ?? null };
  const e = LORA_EMBEDDING.exec(name);
  if (e !== null) return { moduleKey: e[1]!, half: e[2] === 'A' ? 'lora_A' : 'lora_B', embedding: true, adapterName: e[3] ?? null };
  if (name.includes('lora_magnitude_vector')) throw new Error(`${file}: tensor ${name} is a DoRA magnitude; DoRA is not supported`);
  if (/\.lora_B(\.[^.]+)?\.bias$/.test(name)) throw new Error(`${file}: tensor ${name} is a lora_B bias, which Switchboard does not serve`);
  throw new Error(`${file}: unexpected tensor ${name} (an adapter for Switchboard holds only lora_A/lora_B and lora_embedding_A/B weights)`);
}

interface DecoderModule {
  /** -1 for embed_tokens and lm_head. */
  layer: number;
  module: LoraModuleName;
  /** Phi-3's fused qkv_proj / gate_up_proj: the pair is split into these projections (module is the first). */
  parts?: readonly LoraProjectionName[];
  /** "layers.0.self_attn.q_proj", for messages. */
  label: string;
  /** LoRA on the experts' fused parameters: how deep this ParamWrapper is nested (0 = outermost); which parameter
   * it adapts follows from target_parameters (module is then a placeholder until resolved). */
  expertDepth?: number;
}

/** Fused projections of Phi-3 checkpoints, by name: PEFT adapts the fused module, the engine its parts. */
const FUSED_PARTS: Readonly<Record<string, readonly LoraProjectionName[]>> = {
  qkv_proj: ['q_proj', 'k_proj', 'v_proj'],
  gate_up_proj: ['gate_proj', 'up_proj'],
};

function parseModuleKey(file: string, moduleKey: string, numLayers: number, arch: string, embedding: boolean, modelHas: (moduleKey: string) => boolean): DecoderModule | null {
  const fusedNames = arch === 'phi3' ? Object.keys(FUSED_PARTS) : [];
  const supported = `supported: ${[...LORA_MODULES, ...fusedNames, 'lm_head', 'embed_tokens'].join(', ')}`;
  // PEFT's Embedding LoRA holds lora_embedding_A/B, its Linear LoRA lora_A/B: anything else is another layer type.
  if (moduleKey === MODEL_LORA_MODULES.embed_tokens || embedding) {
    if (moduleKey !== MODEL_LORA_MODULES.embed_tokens) {
      throw new Error(`${file}: adapter has embedding LoRA weights (lora_embedding_A/B) for ${moduleKey}, which Switchboard does not serve (only on embed_tokens)`);
    }
    if (!embedding) throw new Error(`${file}: adapter ${moduleKey}: the embeddings' LoRA must be lora_embedding_A/B, found lora_A/lora_B`);
    return { layer: -1, module: 'embed_tokens', label: 'embed_tokens' };
  }
  if (moduleKey === MODEL_LORA_MODULES.lm_head) return { layer: -1, module: 'lm_head', label: 'lm_head' };
  const checkLayer = (layer: number, label: string) => {
    if (layer >= numLayers) throw new Error(`${file}: adapter ${label}: the base model has only ${numLayers} layers (is this adapter for another model?)`);
  };
  const ex = EXPERTS_MODULE.exec(moduleKey);
  if (ex !== null) {
    const layer = Number(ex[1]);
    const label = moduleKey.replace(/^model\./, '');
    checkLayer(layer, label);
    if (!modelHas(`model.layers.${layer}.mlp.experts.0.gate_proj`)) {
      throw new Error(`${file}: adapter has LoRA weights for ${moduleKey}, but layer ${layer} of the base model has no experts (is this adapter for another model?)`);
    }
    return { layer, module: 'experts.gate_up_proj', label, expertDepth: ex[2]!.length / '.base_layer'.length };
  }
  const sh = SHARED_EXPERT_MODULE.exec(moduleKey);
  if (sh !== null && modelHas(moduleKey)) {
    const layer = Number(sh[1]);
    return { layer, module: sh[2] as LoraProjectionName, label: moduleKey.replace(/^model\./, '') };
  }
  if (arch === 'mixtral' && moduleKey.includes('.block_sparse_moe.')) {
    // transformers 4's Mixtral (experts.E.w1/w2/w3 and the router as nn.Linear): what PEFT adapted per expert then.
    throw new Error(`${file}: adapter has LoRA weights for ${moduleKey}, a Mixtral expert or router module of transformers 4, which Switchboard does not serve ` +
      '(LoRA on Mixtral\'s experts is served as PEFT target_parameters on mlp.experts.gate_up_proj / down_proj)');
  }
  const m = DECODER_MODULE.exec(moduleKey);
  const parts = m !== null && fusedNames.includes(m[3]!) ? FUSED_PARTS[m[3]!] : undefined;
  if (m !== null && parts !== undefined && moduleParent(parts[0]!) === m[2]) {
    const layer = Number(m[1]);
    const label = moduleKey.replace(/^model\./, '');
    if (layer >= numLayers) {
      throw new Error(`${file}: adapter ${label}: the base model has only ${numLayers} layers (is this adapter for another model?)`);
    }
    return { layer, module: parts[0]!, parts, label };
  }
  const module = m?.[3] as LoraProjectionName | undefined;
  // (gate/up/down_proj of a MoE layer: the model has no such module, it is one of its lacked modules below)
  if (m === null || module === undefined || !LORA_MODULES.includes(module) || moduleParent(module) !== m[2] || (Number(m[1]) < numLayers && !modelHas(moduleKey))) {
    // A module this base model does not have at all (LoRAX loads the adapter and warns, naming it); one it has but
    // Switchboard does not adapt (a MoE router, an expert) would change the outputs if skipped: refused.
    if (!modelHas(moduleKey)) return null;
    const leaf = moduleKey.split('.').at(-1);
    throw new Error(`${file}: adapter has LoRA weights for ${moduleKey} (${leaf}), which Switchboard does not serve (${supported})`);
  }
  const layer = Number(m[1]);
  const label = moduleKey.replace(/^model\./, '');
  if (layer >= numLayers) {
    throw new Error(`${file}: adapter ${label}: the base model has only ${numLayers} layers (is this adapter for another model?)`);
  }
  return { layer, module, label };
}

/**
 * The base weights of the embedding layers, which PEFT's save_pretrained adds by default when an adapter targets
 * embed_tokens (save_embedding_layers="auto"): "model.embed_tokens.base_layer.weight", "lm_head.base_layer.weight",
 * or without ".base_layer" for a layer the adapter does not target.
 */
const EMBEDDING_LAYER_COPY = /^(?:base_model\.model\.)?(model\.embed_tokens|lm_head)(?:\.base_layer)?\.weight$/;

/** A saved embedding layer must have the base model's shape: a resized vocabulary is another model. */
function checkEmbeddingCopy(file: string, entry: SafetensorsEntry, module: 'embed_tokens' | 'lm_head', model: ModelDir): void {
  const want = [model.spec.vocabSize, model.spec.hiddenSize];
  if (entry.shape.length !== 2 || entry.shape[0] !== want[0] || entry.shape[1] !== want[1]) {
    throw new Error(
      `${file}: ${entry.name} (the ${module} weights saved with the adapter) is ${formatShape(entry.shape)} but the base model's is ` +
        `${formatShape(want)}: the adapter was trained with a resized vocabulary, which Switchboard does not serve`,
    );
  }
}

function toRef(entry: SafetensorsEntry & { data?: Float32Array }, file: string): NativeTensorRef {
  const dtype = requireWeightDtype(entry, file);
  // A strided or compressed tensor of an adapter_model.bin arrives already copied out as float32.
  if (entry.data) return { name: entry.name, dtype: 'F32', shape: [...entry.shape], data: entry.data };
  return { name: entry.name, dtype, shape: [...entry.shape], file, offset: entry.offset, nbytes: entry.nbytes };
}

/** Rows [row, row + rows) of a row-major [out, r] matrix, without copying where it lives in a file. */
function rowsOf(ref: NativeTensorRef, row: number, rows: number): NativeTensorRef {
  const cols = ref.shape[1]!;
  if (ref.data !== undefined) {
    return { ...ref, shape: [rows, cols], data: ref.data.subarray(row * cols, (row + rows) * cols) };
  }
  const rowBytes = ref.nbytes! / ref.shape[0]!;
  return { ...ref, shape: [rows, cols], offset: ref.offset! + row * rowBytes, nbytes: rows * rowBytes };
}

function checkPair(
  file: string, mod: DecoderModule, a: SafetensorsEntry, b: SafetensorsEntry, model: ModelDir, expectedRank: number,
): number {
  const { inFeatures } = projectionFeatures(model.spec, mod.module, mod.layer);
  const outFeatures = (mod.parts ?? [mod.module]).reduce((n, p) => n + projectionFeatures(model.spec, p, mod.layer).outFeatures, 0);
  const where = `${file}: adapter ${mod.label}`;
  const hint = '(is this adapter for another model?)';
  if (a.shape.length !== 2) throw new Error(`${where}: lora_A is ${formatShape(a.shape)}, expected [r, ${inFeatures}]`);
  if (b.shape.length !== 2) throw new Error(`${where}: lora_B is ${formatShape(b.shape)}, expected [${outFeatures}, r]`);
  const [rank, aIn] = a.shape as [number, number];
  const [bOut, bRank] = b.shape as [number, number];
  if (aIn !== inFeatures) {
    throw new Error(`${where}: lora_A is ${formatShape(a.shape)} but the base model's ${mod.module} takes ${inFeatures} inputs ${hint}`);
  }
  if (bOut !== outFeatures) {
    throw new Error(`${where}: lora_B is ${formatShape(b.shape)} but the base model's ${mod.module} gives ${outFeatures} outputs ${hint}`);
  }
  if (bRank !== rank) {
    throw new Error(`${where}: lora_A is ${formatShape(a.shape)} but lora_B is ${formatShape(b.shape)}: ranks differ`);
  }
  if (rank === 0) throw new Error(`${where}: rank 0`);
  if (rank !== expectedRank) {
    throw new Error(`${where}: weights have rank ${rank} but ${ADAPTER_CONFIG_FILE} gives r=${expectedRank} for this module (r / rank_pattern)`);
  }
  return rank;
}

/** The MoE layers' fused expert parameters, by PEFT's name ("model.layers.3.mlp.experts.gate_up_proj"). */
function expertParameters(model: ModelDir): { layer: number; module: LoraExpertName; key: string }[] {
  const out: { layer: number; module: LoraExpertName; key: string }[] = [];
  (model.spec.moeLayers ?? []).forEach((moe, layer) => {
    if (moe) for (const module of EXPERT_LORA_MODULES) out.push({ layer, module, key: `model.layers.${layer}.mlp.${module}` });
  });
  return out;
}

/**
 * Every target_parameters entry must name expert weights this model has: LoRA on any other parameter (a router,
 * a norm, a 2-D weight) is refused by name rather than left out.
 */
function checkTargetParameters(source: string, t: LoraTargeting, model: ModelDir): void {
  if (t.targetParameters.length === 0) return;
  const params = expertParameters(model);
  for (const entry of t.targetParameters) {
    if (params.some((p) => p.key === entry || p.key.endsWith(`.${entry}`))) continue;
    throw new Error(
      `${source}: target_parameters entry ${JSON.stringify(entry)} names no parameter Switchboard adapts in this model ` +
        `(LoRA on parameters is served for the fused expert weights of mixture-of-experts layers: ${EXPERT_LORA_MODULES.join(', ')}` +
        `${params.length === 0 ? '; this model has none' : ''})`,
    );
  }
}

/**
 * One ParamWrapper's LoRA on a layer's experts. PEFT nests one wrapper per targeted parameter in the order the
 * experts module registers them (gate_up_proj, then down_proj), the last outermost: its tensors are
 * "mlp.experts.lora_A", the one inside "mlp.experts.base_layer.lora_A". lora_A is [E * r, in], lora_B [out, r * E].
 */
function expertModule(file: string, mod: DecoderModule, a: SafetensorsEntry, b: SafetensorsEntry, model: ModelDir, t: LoraTargeting): NativeLoraModule {
  const targeted = EXPERT_LORA_MODULES.filter((m) => isTargetedParameter(t, `model.layers.${mod.layer}.mlp.${m}`));
  const depth = mod.expertDepth!;
  const where = `${file}: adapter ${mod.label}`;
  if (depth >= targeted.length) {
    throw new Error(`${where}: LoRA weights nested ${depth + 1} deep, but ${ADAPTER_CONFIG_FILE}'s target_parameters adapt ${targeted.length} expert parameter(s) of this layer (is this adapter for another model?)`);
  }
  const module = targeted[targeted.length - 1 - depth]!;
  const key = `model.layers.${mod.layer}.mlp.${module}`;
  const experts = model.spec.numExperts!;
  const { inFeatures, outFeatures } = projectionFeatures(model.spec, module);
  const { rank, scale } = moduleScaling(t, key);
  const stacked = rank * experts;
  if (a.shape.length !== 2 || a.shape[0] !== stacked || a.shape[1] !== inFeatures ||
      b.shape.length !== 2 || b.shape[0] !== outFeatures || b.shape[1] !== stacked) {
    throw new Error(
      `${where} (${module}): lora_A is ${formatShape(a.shape)} and lora_B ${formatShape(b.shape)}, but ${experts} experts of rank ${rank} ` +
        `need ${formatShape([stacked, inFeatures])} and ${formatShape([outFeatures, stacked])} (r / rank_pattern; is this adapter for another model?)`,
    );
  }
  return { layer: mod.layer, module, rank, scale, a: toRef(a, file), b: toRef(b, file) };
}

async function exists(file: string): Promise<boolean> {
  try {
    await access(file);
    return true;
  } catch {
    return false;
  }
}

/** Opens a PEFT LoRA adapter directory and checks it against the base model it will run on. */
export async function openPeftAdapter(dirArg: string, model: ModelDir): Promise<PeftAdapter> {
  const dir = path.resolve(dirArg);
  const configPath = path.join(dir, ADAPTER_CONFIG_FILE);
  const raw = parseAdapterConfig(await readJsonFile(configPath), configPath);
  const targeting = loraTargeting(raw);

  let file = path.join(dir, ADAPTER_WEIGHTS_FILE);
  let tensors: Map<string, SafetensorsEntry & { data?: Float32Array }>;
  if (await exists(file)) tensors = (await readSafetensorsHeader(file)).tensors;
  else if (await exists(path.join(dir, ADAPTER_PICKLE_FILE))) {
    // PEFT's older format, read by an allow-list reader that never runs the pickle.
    file = path.join(dir, ADAPTER_PICKLE_FILE);
    tensors = await readTorchCheckpoint(file);
  } else throw new Error(`${file}: not found`);

  // Group the file's tensors into A/B pairs per module, validating names and structure for every one of them.
  const pairs = new Map<string, { mod: DecoderModule; a?: SafetensorsEntry; b?: SafetensorsEntry }>();
  const adapterNames = new Set<string>();
  const embeddingCopies: string[] = [];
  // Modules named in the file that the base model does not have: skipped with a warning.
  const lackedModules = new Set<string>();
  const modelModules = new Set(model.spec.tensors.map((t) => t.name.slice(0, t.name.lastIndexOf('.'))));
  const modelHas = (moduleKey: string) => modelModules.has(moduleKey);
  for (const entry of tensors.values()) {
    const copy = EMBEDDING_LAYER_COPY.exec(entry.name);
    if (copy !== null) {
      checkEmbeddingCopy(file, entry, copy[1] === 'lm_head' ? 'lm_head' : 'embed_tokens', model);
      embeddingCopies.push(entry.name);
      continue;
    }
    const parsed = parseTensorName(file, entry.name);
    if (parsed.adapterName !== null) adapterNames.add(parsed.adapterName);
    if (lackedModules.has(parsed.moduleKey)) continue;
    const known = pairs.get(parsed.moduleKey)?.mod ?? parseModuleKey(file, parsed.moduleKey, model.spec.numLayers, model.spec.arch, parsed.embedding, modelHas);
    if (known === null) {
      lackedModules.add(parsed.moduleKey);
      continue;
    }
    const pair = pairs.get(parsed.moduleKey) ?? { mod: known };
    const half = parsed.half === 'lora_A' ? 'a' : 'b';
    if ((pair.mod.module === 'embed_tokens') !== parsed.embedding) {
      throw new Error(`${file}: adapter ${pair.mod.label}: mixes lora_A/lora_B and lora_embedding_A/B tensors`);
    }
    if (pair[half] !== undefined) throw new Error(`${file}: adapter ${pair.mod.label}: ${parsed.half} appears twice`);
    pair[half] = entry;
    pairs.set(parsed.moduleKey, pair);
  }
  if (adapterNames.size > 1) {
    throw new Error(`${file}: tensors belong to several adapters (${[...adapterNames].join(', ')}); save one adapter per directory`);
  }

  checkTargetParameters(configPath, targeting, model);
  const modules: NativeLoraModule[] = [];
  const ignoredModules: string[] = [];
  const budget = new MatchBudget();
  await compileConfigPatterns(raw, configPath, budget);
  for (const [moduleKey, { mod, a, b }] of pairs) {
    if (a === undefined || b === undefined) {
      const [has, lacks] = a === undefined ? ['lora_B', 'lora_A'] : ['lora_A', 'lora_B'];
      throw new Error(`${file}: adapter ${mod.label}: ${has} is present but ${lacks} is missing`);
    }
    // Patterns come from the adapter's author: linear-time matching, and the event loop is handed
    // back between modules (other requests run), within a total time budget.
    await budget.tick();
    if (mod.expertDepth !== undefined) {
      modules.push(expertModule(file, mod, a, b, model, targeting));
      continue;
    }
    if (!isTargetedModule(targeting, moduleKey)) {
      ignoredModules.push(moduleKey);
      continue;
    }
    await budget.tick();
    const { rank: expectedRank, scale } = moduleScaling(targeting, moduleKey);
    const rank = checkPair(file, mod, a, b, model, expectedRank);
    if (mod.parts === undefined) {
      modules.push({ layer: mod.layer, module: mod.module, rank, scale, a: toRef(a, file), b: toRef(b, file) });
      continue;
    }
    // A fused module's delta B(Ax) split by output rows: each part shares A and takes its rows of B, which is
    // exactly PEFT's result for those rows.
    let row = 0;
    for (const part of mod.parts) {
      const rows = projectionFeatures(model.spec, part).outFeatures;
      modules.push({ layer: mod.layer, module: part, rank, scale, a: toRef(a, file), b: rowsOf(toRef(b, file), row, rows) });
      row += rows;
    }
  }
  modules.sort((x, y) => loraModuleOrder(x.layer, x.module) - loraModuleOrder(y.layer, y.module));
  if (raw.ensure_weight_tying === true && model.spec.tieWordEmbeddings && modules.some((m) => m.layer === -1)) {
    // PEFT then ties the head's LoRA to the embedding's (a layer Switchboard does not build): refused, not approximated.
    throw new Error(
      `${configPath}: ensure_weight_tying=true on a model with tied embeddings, with LoRA on ${modules.filter((m) => m.layer === -1).map((m) => m.module).join(' and ')}: ` +
        'tied LoRA between embed_tokens and lm_head is not supported',
    );
  }

  const warnings: string[] = [];
  if (embeddingCopies.length > 0) {
    warnings.push(`${ADAPTER_WEIGHTS_FILE} holds the base model's embedding layers (PEFT's save_embedding_layers: ${embeddingCopies.join(', ')}); they are not loaded, the base model's own are used (same shape, and frozen while the adapter trained)`);
  }
  if (ignoredModules.length > 0) {
    warnings.push(`${ignoredModules.length} module(s) in ${ADAPTER_WEIGHTS_FILE} are not targeted by ${ADAPTER_CONFIG_FILE} and are ignored, as PEFT ignores them: ${ignoredModules.join(', ')}`);
  }
  if (lackedModules.size > 0 && pairs.size === 0) {
    throw new Error(`${file}: none of the adapter's modules exist in this base model (${[...lackedModules].slice(0, 4).join(', ')}${lackedModules.size > 4 ? ', ...' : ''}): is it an adapter for another model?`);
  }
  if (lackedModules.size > 0) {
    warnings.push(`${lackedModules.size} module(s) in ${ADAPTER_WEIGHTS_FILE} do not exist in this base model and are ignored: ${[...lackedModules].join(', ')}`);
  }
  if (modules.length === 0) warnings.push('adapter applies to no module: it leaves the base model unchanged');
  const init = raw.init_lora_weights;
  if (typeof init === 'string' && BASE_MODIFYING_INITS.some((p) => init.toLowerCase().startsWith(p))) {
    warnings.push(`init_lora_weights=${init} changes the base weights during training; the adapter is only correct on that modified base model`);
  }

  return {
    spec: { modules },
    config: {
      ...targeting,
      dir,
      baseModelNameOrPath: raw.base_model_name_or_path ?? null,
      taskType: raw.task_type ?? null,
      fanInFanOut: raw.fan_in_fan_out ?? false,
      adapterName: adapterNames.size === 1 ? [...adapterNames][0]! : null,
      ignoredModules,
      warnings,
      weightBytes: modules.reduce((n, m) => n + (m.a.nbytes ?? 0) + (m.b.nbytes ?? 0), 0),
    },
  };
}
