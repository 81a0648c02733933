// Synthetic PEFT adapters with LoRA on lm_head and embed_tokens (issue 17) for a fixture model, and the
// same adapters merged into the base weights (W + s B A for the projections and the head, E[t] + s B A[:, t]
// for the embeddings, a tied head untied with the base embeddings): the reference an engine serving the
// adapter unmerged must reproduce. Shared by test/engine-lora-extra.test.ts (CPU) and test/gpu/lora-extra.test.ts.
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { NativeTensorRef } from '../../native/addon.d.ts';
import { projectionFeatures } from '../../native/model-config.ts';
import type { ModelDir } from '../../native/model-dir.ts';
import { writeSafetensors, type TensorToWrite } from '../../native/safetensors.ts';
import { readTensorF32 } from '../../native/tensor-data.ts';
import type { Case, Reference } from './hf-reference.ts';

/** Deterministic standard normals (mulberry32 + Box-Muller). */
export function normals(seed: number, n: number): Float32Array {
  let s = seed >>> 0;
  const u = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 1) / 4294967297;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  return out;
}

export interface ModuleSpec {
  /** PEFT's module name in the base model. */
  key: string;
  module: 'embed_tokens' | 'lm_head' | 'q_proj' | 'v_proj' | 'gate_proj' | 'up_proj' | 'down_proj';
  layer: number;
  rank: number;
}

export interface AdapterDef {
  name: string;
  config: Record<string, unknown>;
  modules: ModuleSpec[];
  /** s per module key, as PEFT computes it from the config. */
  scale: (m: ModuleSpec) => number;
}

const MLP = ['gate_proj', 'up_proj', 'down_proj'] as const;

export function defs(layers: number): AdapterDef[] {
  const layerMods = (names: readonly ModuleSpec['module'][], rank: number): ModuleSpec[] =>
    Array.from({ length: layers }, (_, l) => names.map((module) => ({
      key: `model.layers.${l}.${MLP.includes(module as (typeof MLP)[number]) ? 'mlp' : 'self_attn'}.${module}`, module, layer: l, rank,
    }))).flat();
  return [
    {
      name: 'qv-head',
      config: { r: 8, lora_alpha: 16, target_modules: ['q_proj', 'v_proj', 'lm_head'] },
      modules: [...layerMods(['q_proj', 'v_proj'], 8), { key: 'lm_head', module: 'lm_head', layer: -1, rank: 8 }],
      scale: () => 2,
    },
    {
      // rslora, and rank_pattern / alpha_pattern on the model-level modules.
      name: 'embed-head-mlp',
      config: {
        r: 8, lora_alpha: 8, use_rslora: true, target_modules: ['embed_tokens', 'lm_head', ...MLP],
        rank_pattern: { lm_head: 4 }, alpha_pattern: { embed_tokens: 16 },
      },
      modules: [
        { key: 'model.embed_tokens', module: 'embed_tokens', layer: -1, rank: 8 }, ...layerMods(MLP, 8),
        { key: 'lm_head', module: 'lm_head', layer: -1, rank: 4 },
      ],
      scale: (m) => (m.module === 'embed_tokens' ? 16 : 8) / Math.sqrt(m.rank),
    },
  ];
}

export interface Factors {
  a: Float32Array;
  b: Float32Array;
  inF: number;
  outF: number;
}

/** Random factors sized so each module moves the logprobs clearly (far beyond TOL), as a trained adapter would. */
export function factorsOf(model: ModelDir, m: ModuleSpec, s: number, seed: number, embedStd: number): Factors {
  const { inFeatures: inF, outFeatures: outF } = projectionFeatures(model.spec, m.module);
  const a = normals(seed, m.rank * inF);
  const b = normals(seed + 1, outF * m.rank);
  // Embeddings: A's columns are the per-token codes (unit scale), B brings them to the embeddings' size.
  const aScale = m.module === 'embed_tokens' ? 1 : 1 / Math.sqrt(inF);
  const bScale = (m.module === 'embed_tokens' ? 0.5 * embedStd : m.module === 'lm_head' ? 1.5 : 0.4) / (s * Math.sqrt(m.rank));
  for (let i = 0; i < a.length; i++) a[i] = a[i]! * aScale;
  for (let i = 0; i < b.length; i++) b[i] = b[i]! * bScale;
  return { a, b, inF, outF };
}

/** Writes the adapter as PEFT's save_pretrained does (names, lora_embedding_A/B without ".weight"). */
export async function writeAdapter(dir: string, def: AdapterDef, factors: Map<string, Factors>): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'adapter_config.json'), JSON.stringify({
    peft_type: 'LORA', task_type: 'CAUSAL_LM', bias: 'none', lora_dropout: 0, fan_in_fan_out: false, ...def.config,
  }));
  const tensors: TensorToWrite[] = [];
  for (const m of def.modules) {
    const f = factors.get(m.key)!;
    const base = `base_model.model.${m.key}`;
    const [an, bn] = m.module === 'embed_tokens' ? [`${base}.lora_embedding_A`, `${base}.lora_embedding_B`] : [`${base}.lora_A.weight`, `${base}.lora_B.weight`];
    tensors.push({ name: an, dtype: 'F32', shape: [m.rank, f.inF], data: f.a }, { name: bn, dtype: 'F32', shape: [f.outF, m.rank], data: f.b });
  }
  await writeSafetensors(path.join(dir, 'adapter_model.safetensors'), tensors);
}

/** delta[o, i] = s * sum_k B[o, k] A[k, i], [outF, inF]. */
function delta(f: Factors, rank: number, s: number): Float32Array {
  const d = new Float32Array(f.outF * f.inF);
  for (let o = 0; o < f.outF; o++) {
    for (let k = 0; k < rank; k++) {
      const bk = f.b[o * rank + k]! * s;
      for (let i = 0; i < f.inF; i++) d[o * f.inF + i] += bk * f.a[k * f.inF + i]!;
    }
  }
  return d;
}

/** The base model with the adapter merged into its weights, as inline fp32 tensors (the tied head untied). */
export async function mergedModel(model: ModelDir, def: AdapterDef, factors: Map<string, Factors>): Promise<ModelDir> {
  const byName = new Map(model.spec.tensors.map((t) => [t.name, t]));
  const replaced = new Map<string, NativeTensorRef>();
  const current = async (name: string): Promise<Float32Array> => {
    const r = replaced.get(name) ?? byName.get(name) ?? (name === 'lm_head.weight' ? byName.get('model.embed_tokens.weight') : undefined);
    assert.ok(r, `no tensor ${name}`);
    return Float32Array.from(await readTensorF32(r));
  };
  const embedBase = await current('model.embed_tokens.weight');
  for (const m of def.modules) {
    const f = factors.get(m.key)!;
    const d = delta(f, m.rank, def.scale(m));
    const { hiddenSize: H, vocabSize: V } = model.spec;
    if (m.module === 'embed_tokens') {
      // E[t, i] += s (B A)[i, t]: the delta is [hidden, vocab].
      const e = await current('model.embed_tokens.weight');
      for (let t = 0; t < V; t++) for (let i = 0; i < H; i++) e[t * H + i] += d[i * V + t]!;
      replaced.set('model.embed_tokens.weight', { name: 'model.embed_tokens.weight', dtype: 'F32', shape: [V, H], data: e });
      continue;
    }
    const name = m.module === 'lm_head' ? 'lm_head.weight' : `${m.key}.weight`;
    // A tied head starts from the base embeddings, never from embeddings an embedding LoRA changed.
    const w = m.module === 'lm_head' && model.spec.tieWordEmbeddings && !replaced.has(name) ? Float32Array.from(embedBase) : await current(name);
    for (let i = 0; i < w.length; i++) w[i] += d[i]!;
    replaced.set(name, { name, dtype: 'F32', shape: [f.outF, f.inF], data: w });
  }
  const untie = model.spec.tieWordEmbeddings && replaced.has('lm_head.weight');
  if (model.spec.tieWordEmbeddings && !untie && replaced.has('model.embed_tokens.weight')) {
    // The head stays the base embeddings while the embeddings change: untie with the base copy.
    replaced.set('lm_head.weight', { name: 'lm_head.weight', dtype: 'F32', shape: [model.spec.vocabSize, model.spec.hiddenSize], data: Float32Array.from(embedBase) });
  }
  const tie = model.spec.tieWordEmbeddings && !replaced.has('lm_head.weight');
  const tensors = model.spec.tensors.map((t) => replaced.get(t.name) ?? t);
  if (!byName.has('lm_head.weight') && replaced.has('lm_head.weight')) tensors.push(replaced.get('lm_head.weight')!);
  return { ...model, spec: { ...model.spec, tieWordEmbeddings: tie, tensors } };
}

export const casesOf = (ref: Reference, adapter: string | null): Case[] =>
  ref.prompts.map((_, prompt) => ({ adapter, prompt, prompt_logprobs: [], top5: { ids: [], logprobs: [] }, greedy: { ids: [], logprobs: [], min_margin: 0 } }));

/** Writes every adapter of defs() for `model` under `dir`; returns their directories and factors by name. */
export async function writeAdapters(model: ModelDir, dir: string): Promise<{ defs: AdapterDef[]; dirs: Map<string, string>; factors: Map<string, Map<string, Factors>> }> {
  const all = defs(model.spec.numLayers);
  const e = model.spec.tensors.find((t) => t.name === 'model.embed_tokens.weight')!;
  const ev = await readTensorF32(e);
  const embedStd = Math.sqrt(ev.reduce((n, x) => n + x * x, 0) / ev.length);
  const dirs = new Map<string, string>();
  const factors = new Map<string, Map<string, Factors>>();
  for (const [i, def] of all.entries()) {
    const f = new Map(def.modules.map((m, j) => [m.key, factorsOf(model, m, def.scale(m), 1000 * (i + 1) + 2 * j, embedStd)]));
    const d = path.join(dir, def.name);
    await writeAdapter(d, def, f);
    dirs.set(def.name, d);
    factors.set(def.name, f);
  }
  return { defs: all, dirs, factors };
}
