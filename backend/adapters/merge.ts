// Per-request adapter merging (LoRAX `parameters.merged_adapters`), with PEFT's
// LoraModel.add_weighted_adapter as the definition of the result: the merged adapter's forward pass
// (x · Aᵀ · Bᵀ · scale, per module) is the one PEFT's merged adapter computes.
//
// What PEFT does (peft/tuners/lora/model.py, peft/utils/merge_utils.py), with w_i the user weight of
// adapter i and s_i its per-module scaling (lora_alpha / r, or / sqrt(r) with rslora, after
// rank_pattern / alpha_pattern):
//
//   * With a single adapter, every combination type becomes "linear".
//   * linear, ties, dare_linear, dare_ties, magnitude_prune: all adapters need the same r (config level:
//     max(r, *rank_pattern.values())). A and B are merged SEPARATELY, element-wise, by the same rule f,
//     with the weights split between the two factors:
//         ω_i = w_i · s_i,   ωA_i = sign(ω_i) · sqrt(|ω_i|),   ωB_i = sqrt(|ω_i|)
//         A = f([A_i], [ωA_i]),   B = f([B_i], [ωB_i])
//     where f is
//         linear (task_arithmetic):  Σ ω_i T_i
//         magnitude_prune:           Σ ω_i prune_topk(T_i)
//         ties:                      disjoint_merge(ω_i prune_topk(T_i)), sign elected on the unweighted pruned T_i
//         dare_linear:               Σ ω_i bernoulli_prune(T_i) / density
//         dare_ties:                 disjoint_merge(ω_i bernoulli_prune(T_i) / density), sign elected likewise
//     prune_topk keeps the k = int(density · numel) largest |values| of each tensor (density ≥ 1: no pruning);
//     the majority sign per element is +1 where Σ_i T_i ("total") or Σ_i sign(T_i) ("frequency") is ≥ 0;
//     disjoint_merge averages the weighted values whose own (unweighted) sign equals the majority sign
//     (zeros never count), dividing by max(count, 1).
//     Note that even "linear" is not Σ w_i s_i B_i A_i: the product (Σ ωB_i B_i)(Σ ωA_i A_i) has cross terms.
//   * cat: A = concat_rows(w_i · s_i · A_i), B = concat_cols(B_i); r = Σ r_i (any ranks), so the delta is
//     exactly Σ w_i s_i B_i A_i. PEFT allocates the new adapter at the config-level rank sum and zero-fills
//     rows of adapters that lack the module; we drop those zero rows (same delta, smaller rank).
//   * The merged adapter is a copy of the FIRST adapter's config with r = lora_alpha = new rank and empty
//     rank/alpha patterns, so its scaling is 1 — or sqrt(new rank) when the first adapter has use_rslora
//     (alpha / sqrt(r) with alpha = r; PEFT does not compensate, so neither do we). Its target_modules are the
//     union of the sources' (a regex string joins them as "(a)|(b)"), while layers_to_transform,
//     layers_pattern and exclude_modules come from the first adapter alone.
//   * A module some adapters lack gets contributions from those that have it only: they are skipped, not
//     counted as zeros (this matters for ties: the average is over the adapters present).
//
// Where LoRAX (server/lorax_server/utils/merges/) differs, and why we follow PEFT for the weights:
//   * LoRAX applies the raw w_i to BOTH A and B (A = Σ w_i A_i, B = Σ w_i B_i), ignores each adapter's own
//     scaling, and serves the result with the first adapter's lora_alpha / r. PEFT splits |w_i s_i| as a
//     square root between the factors and serves with scaling 1.
//   * LoRAX's DARE never rescales by 1 / density (its torch.div result is discarded); PEFT's does.
//   * LoRAX with a single id loads that adapter unmerged, ignoring its weight; PEFT scales it by w.
//   * LoRAX carries weights and density as float32 (protobuf); k = int(density · n) can then differ from
//     PEFT's float64 density at exact boundaries (e.g. 0.7f · 10 = 6.99…). We use the float64 value.
//   * Sign election ("total" = Σ sign·|T| = Σ T), top-k pruning and the disjoint merge are the same.
//
// Numerics: PEFT computes in the adapters' dtype (float32 for float32 files) with the weights as float32
// tensors; we emulate float32 arithmetic (Math.fround at each step), so linear / ties / magnitude_prune /
// cat results match PEFT's to the last bit or so. Exceptions:
//   * DARE draws its masks with torch.bernoulli; we use a seeded xoshiro128** stream (one per tensor, derived
//     from the seed, layer, module, factor and adapter index), so DARE results are deterministic for a
//     seed but cannot equal PEFT's bit for bit. Their statistics are the same: each value kept with
//     probability density and then divided by density.
//   * Exact ties in |value| at the top-k threshold keep the lowest indices; torch.topk's choice among equal
//     values is unspecified.
//   * PEFT casts the result back to the source dtype (e.g. bf16 adapters give a bf16 merge); we keep float32.
//   * PEFT's SVD combination types (svd, ties_svd, ...) are not implemented.

import type { LoraModuleName, NativeAdapterSpec, NativeLoraModule, NativeTensorRef } from '../../native/addon.d.ts';
import { isExpertModule, LORA_MODULES, loraModuleOrder, peftModuleName } from '../../native/model-config.ts';
import { isTargetedModule, type LoraTargeting } from '../../native/peft-adapter.ts';
import { readTensorF32 } from '../../native/tensor-data.ts';
import { AdapterError } from './source.ts';

/** The strategies LoRAX accepts in `merged_adapters.merge_strategy`. */
export const LORAX_MERGE_STRATEGIES = ['linear', 'ties', 'dare_linear', 'dare_ties'] as const;
export type MergeStrategy = (typeof LORAX_MERGE_STRATEGIES)[number];

/** Every PEFT combination type implemented here: LoRAX's four plus magnitude_prune and cat (not SVD). */
export const PEFT_COMBINATION_TYPES = [...LORAX_MERGE_STRATEGIES, 'magnitude_prune', 'cat'] as const;
export type CombinationType = (typeof PEFT_COMBINATION_TYPES)[number];

export type MajoritySignMethod = 'total' | 'frequency';

export interface MergeSource {
  spec: NativeAdapterSpec;
  /**
   * The adapter_config.json rules as openPeftAdapter returns them. With it, the merge applies PEFT's
   * config-level rules: the rank check on max(r, rank_pattern), use_rslora of the first adapter, and the merged
   * adapter's targeting (union of target_modules; the first adapter's layers_to_transform / exclude_modules).
   * Without it, ranks come from the modules and the merged adapter covers every module any source has.
   */
  config?: LoraTargeting;
  /** How errors name this adapter (default: "adapters[i]"). */
  name?: string;
}

export interface MergeOptions {
  /** Seed of the DARE masks (default 0): equal requests give equal merges. */
  seed?: number;
}

const STRATEGIES_NEEDING_EQUAL_RANK: readonly CombinationType[] = ['linear', 'ties', 'dare_linear', 'dare_ties', 'magnitude_prune'];
const PRUNING: readonly CombinationType[] = ['ties', 'dare_linear', 'dare_ties', 'magnitude_prune'];
const f32 = Math.fround;

// ---------------------------------------------------------------------------
// Building blocks (exported for tests)
// ---------------------------------------------------------------------------

/** PEFT's weight split between the factors: [ωA, ωB] with ωA·ωB = w·s and the sign on A (as float32). */
export function factorWeights(weight: number, scaling: number): [a: number, b: number] {
  const ws = weight * scaling;
  const root = Math.sqrt(Math.abs(ws));
  return [f32(ws >= 0 ? root : -root), f32(root)];
}

/**
 * PEFT's magnitude pruning of one tensor: keeps the k = int(density · numel) values of largest magnitude
 * (exact ties at the threshold: lowest indices first), zeroes the rest. density ≥ 1 keeps everything.
 * Returns a new array; the input is not modified.
 */
export function magnitudePrune(t: Float32Array, density: number): Float32Array {
  if (density >= 1) return t.slice();
  if (!(density >= 0)) throw new AdapterError(`density must be >= 0, got ${density}`);
  const n = t.length;
  const k = Math.min(n, Math.trunc(density * n));
  const out = new Float32Array(n);
  if (k === 0) return out;
  const abs = new Float32Array(n);
  for (let i = 0; i < n; i++) abs[i] = Math.abs(t[i]!);
  // Ascending numeric sort (NaN last, i.e. NaN counts as largest, as in torch.topk).
  const sorted = abs.slice().sort();
  const thr = sorted[n - k]!;
  const thrIsNaN = Number.isNaN(thr);
  const above = (v: number) => (thrIsNaN ? false : v > thr || Number.isNaN(v));
  let countAbove = 0;
  for (let i = 0; i < n; i++) if (above(abs[i]!)) countAbove++;
  let atThreshold = k - countAbove;
  for (let i = 0; i < n; i++) {
    const v = abs[i]!;
    if (above(v)) out[i] = t[i]!;
    else if (atThreshold > 0 && (thrIsNaN ? Number.isNaN(v) : v === thr)) {
      out[i] = t[i]!;
      atThreshold--;
    }
  }
  return out;
}

/**
 * PEFT's random (DARE) pruning with rescale: each value kept with probability `density` (u < density for
 * u uniform in [0, 1) from `uniform`) and divided by density. density ≥ 1 keeps everything unscaled.
 */
export function randomPrune(t: Float32Array, density: number, uniform: () => number): Float32Array {
  if (density >= 1) return t.slice();
  if (!(density > 0)) throw new AdapterError(`density must be > 0 for DARE (it divides by density), got ${density}`);
  const out = new Float32Array(t.length);
  for (let i = 0; i < t.length; i++) if (uniform() < density) out[i] = f32(t[i]! / density);
  return out;
}

function splitmix32(state: number): () => number {
  let s = state >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** A deterministic uniform [0, 1) stream (xoshiro128**) for a seed and a list of stream coordinates. */
export function seededUniform(seed: number, ...stream: number[]): () => number {
  // Fold the seed (both 32-bit halves) and the coordinates into one 32-bit state, then expand it.
  let h = 0x243f6a88;
  for (const x of [seed, Math.floor(seed / 2 ** 32), ...stream]) h = splitmix32(h ^ (x >>> 0))();
  const init = splitmix32(h);
  let a = init(), b = init(), c = init(), d = init();
  if ((a | b | c | d) === 0) a = 1;
  return () => {
    const t = b << 9;
    let r = Math.imul(b, 5);
    r = Math.imul((r << 7) | (r >>> 25), 9);
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = (d << 11) | (d >>> 21);
    return (r >>> 0) / 4294967296;
  };
}

/** Σ ω_i T_i in float32, summed in order. */
function weightedSum(tensors: Float32Array[], weights: number[]): Float32Array {
  const n = tensors[0]!.length;
  const out = new Float32Array(n);
  for (let i = 0; i < tensors.length; i++) {
    const t = tensors[i]!, w = weights[i]!;
    for (let j = 0; j < n; j++) out[j] = f32(out[j]! + f32(t[j]! * w));
  }
  return out;
}

/** TIES: majority sign of the unweighted tensors, then the mean of agreeing weighted values. */
function electAndMerge(tensors: Float32Array[], weights: number[], method: MajoritySignMethod): Float32Array {
  const n = tensors[0]!.length;
  const out = new Float32Array(n);
  for (let j = 0; j < n; j++) {
    let vote = 0;
    for (const t of tensors) vote = method === 'total' ? f32(vote + t[j]!) : vote + Math.sign(t[j]!);
    const majority = vote >= 0 ? 1 : -1;
    let sum = 0, count = 0;
    for (let i = 0; i < tensors.length; i++) {
      const v = tensors[i]![j]!;
      if (Math.sign(v) === majority) {
        sum = f32(sum + f32(v * weights[i]!));
        count++;
      }
    }
    out[j] = f32(sum / Math.max(count, 1));
  }
  return out;
}

/** One factor (all adapters' A, or all adapters' B) merged by a task-arithmetic-family rule. */
export function combineFactor(
  strategy: Exclude<CombinationType, 'cat'>,
  tensors: Float32Array[],
  weights: number[],
  density: number,
  majoritySignMethod: MajoritySignMethod,
  uniforms?: (() => number)[],
): Float32Array {
  switch (strategy) {
    case 'linear':
      return weightedSum(tensors, weights);
    case 'magnitude_prune':
      return weightedSum(tensors.map((t) => magnitudePrune(t, density)), weights);
    case 'ties':
      return electAndMerge(tensors.map((t) => magnitudePrune(t, density)), weights, majoritySignMethod);
    case 'dare_linear':
    case 'dare_ties': {
      if (uniforms === undefined || uniforms.length !== tensors.length) throw new Error(`${strategy}: one random stream per tensor is needed`);
      const pruned = tensors.map((t, i) => randomPrune(t, density, uniforms[i]!));
      return strategy === 'dare_linear' ? weightedSum(pruned, weights) : electAndMerge(pruned, weights, majoritySignMethod);
    }
  }
}

// ---------------------------------------------------------------------------
// Merging adapters
// ---------------------------------------------------------------------------

interface Present {
  source: number;
  mod: NativeLoraModule;
}

function sourceName(adapters: readonly MergeSource[], i: number): string {
  return adapters[i]!.name ?? `adapters[${i}]`;
}

function moduleKey(layer: number, module: LoraModuleName): string {
  return peftModuleName(layer, module);
}

/** PEFT's rank of an adapter for add_weighted_adapter: max(r, *rank_pattern.values()), or null if unknown. */
function adapterRank(src: MergeSource): number | null {
  if (src.config !== undefined) return Math.max(src.config.r, ...Object.values(src.config.rankPattern ?? {}));
  return src.spec.modules.length === 0 ? null : Math.max(...src.spec.modules.map((m) => m.rank));
}

/** The merged adapter's targeting: the first adapter's rules with target_modules the union of all. */
function mergedTargeting(adapters: readonly MergeSource[]): LoraTargeting | null {
  const configs = adapters.map((a) => a.config);
  if (configs.some((c) => c === undefined)) return null;
  const cs = configs as LoraTargeting[];
  const kinds = new Set(cs.map((c) => (typeof c.targetModules === 'string' ? 'string' : 'list')));
  if (kinds.size > 1) {
    throw new AdapterError(
      'cannot merge adapters whose target_modules mix a regex string and a list (PEFT\'s add_weighted_adapter refuses it too)',
      422,
    );
  }
  const targetModules = kinds.has('string')
    ? cs.map((c) => `(${c.targetModules as string})`).join('|')
    : [...new Set(cs.flatMap((c) => c.targetModules as string[]))];
  return { ...cs[0]!, rankPattern: {}, alphaPattern: {}, targetModules };
}

function checkShapes(where: string, present: Present[], adapters: readonly MergeSource[], sameRank: boolean): void {
  const first = present[0]!;
  for (const p of present) {
    const { a, b, rank } = p.mod;
    const who = sourceName(adapters, p.source);
    if (a.shape.length !== 2 || b.shape.length !== 2 || a.shape[0] !== rank || b.shape[1] !== rank) {
      throw new AdapterError(`${where}: ${who} has lora_A [${a.shape.join(', ')}] and lora_B [${b.shape.join(', ')}] for rank ${rank}`, 422);
    }
    if (a.shape[1] !== first.mod.a.shape[1] || b.shape[0] !== first.mod.b.shape[0]) {
      throw new AdapterError(
        `${where}: adapters disagree on the projection's size (${sourceName(adapters, first.source)}: ` +
          `[${first.mod.b.shape[0]}, ${first.mod.a.shape[1]}], ${who}: [${b.shape[0]}, ${a.shape[1]}])`,
        422,
      );
    }
  }
  if (sameRank && new Set(present.map((p) => p.mod.rank)).size > 1) {
    const ranks = present.map((p) => `r=${p.mod.rank} (${sourceName(adapters, p.source)})`).join(', ');
    throw new AdapterError(`${where}: merging needs equal ranks for this strategy, got ${ranks}; use "cat" to merge different ranks`, 422);
  }
}

function inlineRef(name: string, shape: number[], data: Float32Array): NativeTensorRef {
  return { name, dtype: 'F32', shape, data };
}

/**
 * Merges PEFT LoRA adapters into one, as PEFT's `add_weighted_adapter(adapters, weights, combination_type,
 * density=density, majority_sign_method=...)` does (see the top of this file). The result's tensors are inline
 * float32 data; each module's `scale` is the merged adapter's scaling (1, or sqrt(new r) with rslora).
 * Invalid arguments and incompatible adapters throw AdapterError (400 / 422).
 */
export async function mergeAdapters(
  adapters: readonly MergeSource[],
  weights: readonly number[],
  strategy: CombinationType,
  density: number,
  majoritySignMethod: MajoritySignMethod,
  opts: MergeOptions = {},
): Promise<NativeAdapterSpec> {
  if (adapters.length === 0) throw new AdapterError('merging needs at least one adapter');
  if (weights.length !== adapters.length) {
    throw new AdapterError(`merging needs one weight per adapter (${adapters.length} adapters, ${weights.length} weights)`);
  }
  weights.forEach((w, i) => {
    if (!Number.isFinite(w)) throw new AdapterError(`merge weight ${w} of ${sourceName(adapters, i)} is not a finite number`);
  });
  // Stacked per-expert factors (PEFT target_parameters) would need merging expert by expert: not done, so refused.
  adapters.forEach((src, i) => {
    const expert = src.spec.modules.find((m) => isExpertModule(m.module));
    if (expert !== undefined) {
      throw new AdapterError(`${sourceName(adapters, i)} has LoRA on mixture-of-experts expert weights (${moduleKey(expert.layer, expert.module)}); merging such adapters is not supported`, 422);
    }
  });
  if (!(PEFT_COMBINATION_TYPES as readonly string[]).includes(strategy)) {
    throw new AdapterError(`unknown merge strategy ${JSON.stringify(strategy)} (one of ${PEFT_COMBINATION_TYPES.join(', ')})`);
  }
  if (majoritySignMethod !== 'total' && majoritySignMethod !== 'frequency') {
    throw new AdapterError(`unknown majority_sign_method ${JSON.stringify(majoritySignMethod)} (total or frequency)`);
  }
  // PEFT: a single adapter is always merged linearly (its weight still applies).
  const kind: CombinationType = adapters.length === 1 ? 'linear' : strategy;
  if (PRUNING.includes(kind)) {
    if (typeof density !== 'number' || !(density >= 0)) throw new AdapterError(`density must be a number >= 0, got ${density}`);
    if ((kind === 'dare_linear' || kind === 'dare_ties') && !(density > 0)) {
      throw new AdapterError(`density must be > 0 for ${kind} (it keeps that fraction and divides by it), got ${density}`);
    }
  }
  const seed = opts.seed ?? 0;
  if (!Number.isFinite(seed)) throw new AdapterError(`merge seed ${seed} is not a finite number`);

  // The merged adapter's rank (PEFT checks and sizes it on the config-level ranks).
  const ranks = adapters.map(adapterRank);
  let newRank: number;
  if (kind === 'cat') {
    newRank = ranks.reduce<number>((n, r) => n + (r ?? 0), 0);
  } else {
    const known = ranks.map((r, i) => [r, i] as const).filter(([r]) => r !== null) as (readonly [number, number])[];
    if (new Set(known.map(([r]) => r)).size > 1) {
      const list = known.map(([r, i]) => `r=${r} (${sourceName(adapters, i)})`).join(', ');
      throw new AdapterError(
        `merge_strategy "${kind}" needs adapters of equal rank (as PEFT's add_weighted_adapter does), got ${list}`,
        422,
      );
    }
    newRank = known[0]?.[0] ?? 0;
  }
  // PEFT copies the first adapter's config with lora_alpha = r: scaling 1, or alpha / sqrt(r) = sqrt(r) with rslora.
  const outScale = adapters[0]!.config?.useRslora === true ? Math.sqrt(newRank) : 1;
  const targeting = mergedTargeting(adapters);

  // Group source modules by (layer, module), keeping the adapters' order.
  const groups = new Map<string, { layer: number; module: LoraModuleName; present: Present[] }>();
  adapters.forEach((src, i) => {
    for (const mod of src.spec.modules) {
      const key = moduleKey(mod.layer, mod.module);
      const g = groups.get(key) ?? { layer: mod.layer, module: mod.module, present: [] };
      if (g.present.some((p) => p.source === i)) {
        throw new AdapterError(`${sourceName(adapters, i)} has two LoRA modules for ${key}`, 422);
      }
      g.present.push({ source: i, mod });
      groups.set(key, g);
    }
  });
  const ordered = [...groups.entries()]
    .filter(([key]) => targeting === null || isTargetedModule(targeting, key))
    .map(([key, g]) => ({ key, ...g }))
    .sort((x, y) => loraModuleOrder(x.layer, x.module) - loraModuleOrder(y.layer, y.module));

  const modules: NativeLoraModule[] = [];
  for (const { key, layer, module, present } of ordered) {
    const where = `merging ${key.replace(/^model\./, '')}`;
    checkShapes(where, present, adapters, STRATEGIES_NEEDING_EQUAL_RANK.includes(kind));
    const as = await Promise.all(present.map((p) => readTensorF32(p.mod.a)));
    const bs = await Promise.all(present.map((p) => readTensorF32(p.mod.b)));
    const inF = present[0]!.mod.a.shape[1]!;
    const outF = present[0]!.mod.b.shape[0]!;
    const name = (half: 'lora_A' | 'lora_B') => `merged.${key}.${half}.weight`;

    if (kind === 'cat') {
      const rank = present.reduce((n, p) => n + p.mod.rank, 0);
      const a = new Float32Array(rank * inF);
      const b = new Float32Array(outF * rank);
      let row = 0;
      present.forEach((p, i) => {
        const r = p.mod.rank;
        // PEFT: lora_A * weight * scaling (two float32 multiplications), lora_B unchanged.
        const w = f32(weights[p.source]!), s = f32(p.mod.scale);
        const src = as[i]!;
        for (let j = 0; j < r * inF; j++) a[row * inF + j] = f32(f32(src[j]! * w) * s);
        const srcB = bs[i]!;
        for (let o = 0; o < outF; o++) for (let c = 0; c < r; c++) b[o * rank + row + c] = srcB[o * r + c]!;
        row += r;
      });
      modules.push({ layer, module, rank, scale: outScale, a: inlineRef(name('lora_A'), [rank, inF], a), b: inlineRef(name('lora_B'), [outF, rank], b) });
      continue;
    }

    const split = present.map((p) => factorWeights(weights[p.source]!, p.mod.scale));
    // (embed_tokens and lm_head, layer -1, take indices past the projections': distinct DARE streams)
    if (isExpertModule(module)) throw new AdapterError(`merging ${key}: LoRA on expert weights is not merged`, 422);
    const moduleIndex = module === 'embed_tokens' ? LORA_MODULES.length : module === 'lm_head' ? LORA_MODULES.length + 1 : LORA_MODULES.indexOf(module);
    const streams = (half: number) => present.map((p) => seededUniform(seed, layer, moduleIndex, half, p.source));
    const dare = kind === 'dare_linear' || kind === 'dare_ties';
    const a = combineFactor(kind, as, split.map(([wa]) => wa), density, majoritySignMethod, dare ? streams(0) : undefined);
    const b = combineFactor(kind, bs, split.map(([, wb]) => wb), density, majoritySignMethod, dare ? streams(1) : undefined);
    const rank = present[0]!.mod.rank;
    modules.push({ layer, module, rank, scale: outScale, a: inlineRef(name('lora_A'), [rank, inF], a), b: inlineRef(name('lora_B'), [outF, rank], b) });
  }
  return { modules };
}

/** PEFT's "cat" merge (not a LoRAX strategy): exact Σ w_i s_i B_i A_i at rank Σ r_i, for any ranks. */
export function catAdapters(adapters: readonly MergeSource[], weights: readonly number[]): Promise<NativeAdapterSpec> {
  return mergeAdapters(adapters, weights, 'cat', 1, 'total');
}
