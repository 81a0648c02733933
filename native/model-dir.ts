// A Hugging Face model directory -> NativeModelSpec: config.json plus the exact weights the engine reads,
// each located (file, offset, nbytes) and checked against the shape config.json implies.

import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import type { LoraModuleName, NativeModelSpec, NativeTensorRef } from './addon.d.ts';
import {
  formatZodError, LORA_MODULES, moduleParent, modelSpecFields, parseModelConfig, projectionFeatures,
  type ModelConfig, type ModelSpecFields,
} from './model-config.ts';
import { loadQuantizedLinear, type EntryLookup } from './quantized/load.ts';
import { packedByteLength } from './quantized/packed.ts';
import { describeScheme, resolveQuantization, type QuantScheme } from './quantized/scheme.ts';
import { formatShape, readSafetensorsHeader, requireWeightDtype, type SafetensorsHeader } from './safetensors.ts';

export interface ModelDir {
  /** Absolute path of the directory. */
  dir: string;
  spec: NativeModelSpec;
  config: ModelConfig;
  /** Sum of the bytes of the tensors in spec.tensors, as stored on disk (packed bytes for quantized layers). */
  weightBytes: number;
  /** How quantized weights were loaded (repacked into the engines' packed layout, quantized/packed.ts), or null. */
  quantization?: ModelQuantization | null;
}

export interface ModelQuantization {
  scheme: QuantScheme;
  description: string;
  /** Linear layers repacked (or quantized at load). */
  layers: number;
  /** Their weights (values once dequantised: the CPU engine holds them as float32). */
  quantizedValues: number;
  /** Bytes of their packed form (codes, scales, zero points, permutations): what the CUDA engine holds. */
  packedBytes: number;
}

export interface OpenModelOptions {
  /** --quantize: undefined or "none" follows config.json's quantization_config (see quantized/scheme.ts). */
  quantize?: string | undefined;
}

/** Suffixes a quantized linear layer may be stored under, besides .weight. */
const QUANTIZED_PARTS = ['qweight', 'qzeros', 'scales', 'g_idx', 'weight_scale', 'weight_scale_inv'];
/** Every projection of a decoder layer, fused ones (qkv_proj, gate_up_proj) included. */
const LINEAR_WEIGHT = /(^|\.)layers\.\d+\..*_proj\.weight$/;

export interface ExpectedTensor {
  name: string;
  shape: number[];
  /**
   * Rows [row, row + shape[0]) of a fused checkpoint tensor (Phi-3's qkv_proj, gate_up_proj): the engine reads
   * them under `name` as if the checkpoint held the split projection.
   */
  slice?: { of: string; shape: number[]; row: number };
  /** The checkpoint's own name when it differs (Mixtral's block_sparse_moe.experts.E.w1, ...): read under `name`. */
  from?: string;
}

/** Phi-3 stores q/k/v as one qkv_proj and gate/up as one gate_up_proj, stacked in that order along the rows. */
export const FUSED_MODULES: Readonly<Record<string, { fused: string; parts: readonly LoraModuleName[] }>> = {
  q_proj: { fused: 'qkv_proj', parts: ['q_proj', 'k_proj', 'v_proj'] },
  k_proj: { fused: 'qkv_proj', parts: ['q_proj', 'k_proj', 'v_proj'] },
  v_proj: { fused: 'qkv_proj', parts: ['q_proj', 'k_proj', 'v_proj'] },
  gate_proj: { fused: 'gate_up_proj', parts: ['gate_proj', 'up_proj'] },
  up_proj: { fused: 'gate_up_proj', parts: ['gate_proj', 'up_proj'] },
};

/** Where `module` sits in its fused tensor: the fused name, its shape, and the first row of `module`. */
export function fusedSlice(spec: ModelSpecFields, module: LoraModuleName): { fused: string; rows: number; row: number } | null {
  const f = FUSED_MODULES[module];
  if (spec.arch !== 'phi3' || f === undefined) return null;
  let row = 0;
  let rows = 0;
  for (const part of f.parts) {
    const n = projectionFeatures(spec, part).outFeatures;
    if (part === module) row = rows;
    rows += n;
  }
  return { fused: f.fused, rows, row };
}

export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';

/** Reads and parses a JSON file, with errors that name it and say whether it is missing or malformed. */
export async function readJsonFile(file: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf-8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(code === 'ENOENT' ? `${file}: not found` : `${file}: cannot read: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new Error(`${file}: invalid JSON: ${(err as Error).message}`);
  }
}

/** Every tensor the engine loads, by HF name, with the shape config.json implies (lm_head only when untied). */
export function expectedModelTensors(spec: ModelSpecFields): ExpectedTensor[] {
  const h = spec.hiddenSize;
  const out: ExpectedTensor[] = [{ name: 'model.embed_tokens.weight', shape: [spec.vocabSize, h] }];
  for (let i = 0; i < spec.numLayers; i++) {
    const p = `model.layers.${i}`;
    out.push({ name: `${p}.input_layernorm.weight`, shape: [h] });
    out.push({ name: `${p}.post_attention_layernorm.weight`, shape: [h] });
    if (spec.sandwichNorm) {
      out.push({ name: `${p}.pre_feedforward_layernorm.weight`, shape: [h] });
      out.push({ name: `${p}.post_feedforward_layernorm.weight`, shape: [h] });
    }
    if (spec.qkNorm) {
      out.push({ name: `${p}.self_attn.q_norm.weight`, shape: [spec.headDim] });
      out.push({ name: `${p}.self_attn.k_norm.weight`, shape: [spec.headDim] });
    }
    const moe = spec.moeLayers?.[i] === true;
    if (moe) {
      // A mixture-of-experts MLP: the router, then each expert's gate/up/down (as transformers saves them). The
      // engines read Qwen-MoE's names; Mixtral checkpoints say block_sparse_moe.gate and experts.E.w1 (gate),
      // w3 (up), w2 (down).
      const h = spec.hiddenSize, m = spec.moeIntermediateSize!;
      const mixtral = spec.arch === 'mixtral';
      const from = (mixtralName: string) => (mixtral ? { from: `${p}.block_sparse_moe.${mixtralName}.weight` } : {});
      out.push({ name: `${p}.mlp.gate.weight`, shape: [spec.numExperts!, h], ...from('gate') });
      for (let e = 0; e < spec.numExperts!; e++) {
        out.push({ name: `${p}.mlp.experts.${e}.gate_proj.weight`, shape: [m, h], ...from(`experts.${e}.w1`) });
        out.push({ name: `${p}.mlp.experts.${e}.up_proj.weight`, shape: [m, h], ...from(`experts.${e}.w3`) });
        out.push({ name: `${p}.mlp.experts.${e}.down_proj.weight`, shape: [h, m], ...from(`experts.${e}.w2`) });
      }
      const shared = spec.sharedExpertIntermediateSize ?? 0;
      if (shared > 0) {
        // Qwen2-MoE: the shared expert every token runs, scaled by sigmoid(shared_expert_gate h).
        out.push({ name: `${p}.mlp.shared_expert.gate_proj.weight`, shape: [shared, h] });
        out.push({ name: `${p}.mlp.shared_expert.up_proj.weight`, shape: [shared, h] });
        out.push({ name: `${p}.mlp.shared_expert.down_proj.weight`, shape: [h, shared] });
        out.push({ name: `${p}.mlp.shared_expert_gate.weight`, shape: [1, h] });
      }
    }
    for (const module of LORA_MODULES) {
      if (moe && moduleParent(module) === 'mlp') continue;
      const { inFeatures, outFeatures } = projectionFeatures(spec, module);
      const name = `${p}.${moduleParent(module)}.${module}`;
      const fused = fusedSlice(spec, module);
      if (fused !== null) {
        const of = `${p}.${moduleParent(module)}.${fused.fused}.weight`;
        out.push({ name: `${name}.weight`, shape: [outFeatures, inFeatures], slice: { of, shape: [fused.rows, inFeatures], row: fused.row } });
        continue;
      }
      out.push({ name: `${name}.weight`, shape: [outFeatures, inFeatures] });
      if (spec.attentionBias && (module === 'q_proj' || module === 'k_proj' || module === 'v_proj')) {
        out.push({ name: `${name}.bias`, shape: [outFeatures] });
      }
    }
  }
  out.push({ name: 'model.norm.weight', shape: [h] });
  // A tied head reuses embed_tokens; a stray lm_head.weight in the checkpoint is then ignored, as transformers does.
  if (!spec.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [spec.vocabSize, h] });
  return out;
}

const indexSchema = z.looseObject({
  weight_map: z.record(z.string(), z.string()),
});

/** Resolves a file named by the checkpoint, refusing names that escape the directory (the engine will open it). */
function fileInside(dir: string, name: string, source: string): string {
  const resolved = path.resolve(dir, name);
  const rel = path.relative(dir, resolved);
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) {
    throw new Error(`${source}: weight file "${name}" is outside the model directory`);
  }
  return resolved;
}

/** Where each tensor name should be looked up: a name -> absolute file map, plus how it was decided (for errors). */
interface WeightLocator {
  /** The file holding `name`, or undefined when no file has it. */
  fileFor(name: string): string | undefined;
  describe: string;
  headers: Map<string, SafetensorsHeader>;
}

async function readHeaders(files: Iterable<string>): Promise<Map<string, SafetensorsHeader>> {
  const unique = [...new Set(files)];
  const headers = await Promise.all(unique.map((f) => readSafetensorsHeader(f)));
  return new Map(unique.map((f, i) => [f, headers[i]!]));
}

async function locateFromIndex(dir: string, needed: readonly string[]): Promise<WeightLocator> {
  const indexPath = path.join(dir, INDEX_FILE);
  const parsed = indexSchema.safeParse(await readJsonFile(indexPath));
  if (!parsed.success) throw new Error(`${indexPath}: ${formatZodError(parsed.error)}`);
  const map = parsed.data.weight_map;
  const files = needed.flatMap((n) => (map[n] !== undefined ? [fileInside(dir, map[n], indexPath)] : []));
  const headers = await readHeaders(files);
  return {
    fileFor: (name) => (map[name] !== undefined ? fileInside(dir, map[name], indexPath) : undefined),
    describe: `per ${INDEX_FILE}`,
    headers,
  };
}

async function locateInFiles(dir: string, files: string[], describe: string): Promise<WeightLocator> {
  const headers = await readHeaders(files);
  const owner = new Map<string, string>();
  const duplicates = new Map<string, string[]>();
  for (const [file, header] of headers) {
    for (const name of header.tensors.keys()) {
      const prev = owner.get(name);
      if (prev === undefined) owner.set(name, file);
      else duplicates.set(name, [...(duplicates.get(name) ?? [prev]), file]);
    }
  }
  return {
    fileFor: (name) => {
      const dup = duplicates.get(name);
      if (dup !== undefined) {
        throw new Error(`${dir}: tensor ${name} appears in several files (${dup.map((f) => path.basename(f)).join(', ')}); add a ${INDEX_FILE}`);
      }
      return owner.get(name);
    },
    describe,
    headers,
  };
}

async function locateWeights(dir: string, needed: readonly string[]): Promise<WeightLocator> {
  const entries = await readdir(dir);
  if (entries.includes(INDEX_FILE)) return locateFromIndex(dir, needed);
  if (entries.includes(SINGLE_FILE)) return locateInFiles(dir, [path.join(dir, SINGLE_FILE)], `in ${SINGLE_FILE}`);
  const shards = entries.filter((e) => e.endsWith('.safetensors')).sort();
  if (shards.length > 0) return locateInFiles(dir, shards.map((s) => path.join(dir, s)), `in ${shards.join(', ')}`);
  const pickles = entries.filter((e) => e.endsWith('.bin') || e.endsWith('.pt') || e.endsWith('.pth'));
  const hint = pickles.length > 0 ? `; found ${pickles.join(', ')} (pickle weights are not supported: convert to safetensors)` : '';
  throw new Error(`${dir}: no weights found (expected ${INDEX_FILE}, ${SINGLE_FILE} or *.safetensors)${hint}`);
}

function tensorRef(dir: string, wanted: ExpectedTensor, locator: WeightLocator): NativeTensorRef {
  if (wanted.slice !== undefined) {
    // Check the fused tensor whole, then hand the engine a byte range of its rows (row-major, so contiguous).
    const whole = tensorRef(dir, { name: wanted.slice.of, shape: wanted.slice.shape }, locator);
    const rowBytes = whole.nbytes! / wanted.slice.shape[0]!;
    return {
      name: wanted.name, dtype: whole.dtype, shape: [...wanted.shape], file: whole.file,
      offset: whole.offset! + wanted.slice.row * rowBytes, nbytes: wanted.shape[0]! * rowBytes,
    };
  }
  const expected = wanted;
  const stored = expected.from ?? expected.name;
  const file = locator.fileFor(stored);
  const header = file !== undefined ? locator.headers.get(file) : undefined;
  const entry = header?.tensors.get(stored);
  if (file === undefined || entry === undefined) {
    const where = file !== undefined ? `in ${path.basename(file)} ${locator.describe}` : locator.describe;
    throw new Error(`${dir}: missing tensor ${stored} (expected shape ${formatShape(expected.shape)}; looked ${where})`);
  }
  const dtype = requireWeightDtype(entry, file);
  const sameShape = entry.shape.length === expected.shape.length && entry.shape.every((d, i) => d === expected.shape[i]);
  if (!sameShape) {
    throw new Error(
      `${file}: tensor ${stored} has shape ${formatShape(entry.shape)} but config.json implies ${formatShape(expected.shape)}`,
    );
  }
  return { name: expected.name, dtype, shape: [...entry.shape], file, offset: entry.offset, nbytes: entry.nbytes };
}

/** Opens a model directory: validates config.json and locates and checks every weight the engine needs. */
export async function openModelDir(dirArg: string, options: OpenModelOptions = {}): Promise<ModelDir> {
  const dir = path.resolve(dirArg);
  const configPath = path.join(dir, 'config.json');
  const rawConfig = await readJsonFile(configPath);
  const config = parseModelConfig(rawConfig, configPath);
  const scheme = resolveQuantization(rawConfig, options.quantize, configPath);
  const fields = modelSpecFields(config);
  const expected = expectedModelTensors(fields);
  // Pre-quantized checkpoints may quantize lm_head too; the at-load methods leave it 16-bit, as bitsandbytes does.
  const atLoad = scheme !== null && (scheme.method === 'fp8-at-load' || scheme.method.startsWith('bitsandbytes'));
  const quantizableName = (name: string): boolean => scheme !== null && (LINEAR_WEIGHT.test(name) || (!atLoad && name === 'lm_head.weight'));
  const stored = (t: ExpectedTensor): string => t.slice?.of ?? t.from ?? t.name;
  const quantizable = (t: ExpectedTensor): boolean => quantizableName(t.from ?? t.name) || (t.from !== undefined && quantizableName(t.name));
  const needed = expected.flatMap((t) =>
    quantizable(t) ? [stored(t), ...QUANTIZED_PARTS.map((s) => `${(t.from ?? t.name).slice(0, -'.weight'.length)}.${s}`)] : [stored(t)]);
  const locator = await locateWeights(dir, needed);
  const lookup: EntryLookup = (name) => {
    const file = locator.fileFor(name);
    const entry = file !== undefined ? locator.headers.get(file)?.tensors.get(name) : undefined;
    return file !== undefined && entry !== undefined ? { file, entry } : undefined;
  };
  const tensors: NativeTensorRef[] = [];
  let weightBytes = 0;
  let layers = 0;
  let quantizedValues = 0;
  let packedBytes = 0;
  for (const t of expected) {
    const q = quantizable(t)
      ? await loadQuantizedLinear(scheme!, (t.from ?? t.name).slice(0, -'.weight'.length), t.shape[0]!, t.shape[1]!, lookup, () => tensorRef(dir, t, locator))
      : null;
    if (q !== null) {
      tensors.push({ ...q.ref, name: t.name });
      weightBytes += q.diskBytes;
      layers++;
      quantizedValues += t.shape[0]! * t.shape[1]!;
      packedBytes += packedByteLength(q.ref.packed!);
      continue;
    }
    const ref = tensorRef(dir, t, locator);
    tensors.push(ref);
    weightBytes += ref.nbytes ?? 0;
  }
  const quantization = scheme !== null ? { scheme, description: describeScheme(scheme), layers, quantizedValues, packedBytes } : null;
  if (quantization !== null && layers === 0) throw new Error(`${dir}: ${quantization.description} was asked for, but no linear layer of the checkpoint is quantized that way`);
  return { dir, spec: { ...fields, tensors }, config, weightBytes, quantization };
}
