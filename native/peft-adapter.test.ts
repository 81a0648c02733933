import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { LoraProjectionName as LoraModuleName } from './addon.d.ts';
import { openModelDir, type ModelDir } from './model-dir.ts';
import { findPatternKey, isTargetedModule, loraTargeting, moduleScaling, openPeftAdapter, parseAdapterConfig } from './peft-adapter.ts';
import { readSafetensorsHeader, writeSafetensors, type TensorToWrite, type WritableDType } from './safetensors.ts';

// Tiny Llama base: hidden 8, 2 heads x 4, 1 KV head, MLP 12, 2 layers.
const H = 8, HEADS = 2, KV = 1, HD = 4, INTER = 12, LAYERS = 2, VOCAB = 16;
const FEATURES: Record<LoraModuleName, [inF: number, outF: number]> = {
  q_proj: [H, HEADS * HD], k_proj: [H, KV * HD], v_proj: [H, KV * HD], o_proj: [HEADS * HD, H],
  gate_proj: [H, INTER], up_proj: [H, INTER], down_proj: [INTER, H],
};
const PARENT: Record<LoraModuleName, string> = {
  q_proj: 'self_attn', k_proj: 'self_attn', v_proj: 'self_attn', o_proj: 'self_attn',
  gate_proj: 'mlp', up_proj: 'mlp', down_proj: 'mlp',
};

let tmp: string;
let model: ModelDir;
let counter = 0;

function tensor(name: string, shape: number[], dtype: WritableDType = 'F32'): TensorToWrite {
  const n = shape.reduce((a, d) => a * d, 1);
  return { name, dtype, shape, data: Float32Array.from({ length: n }, (_, i) => (i % 5) / 16) };
}

before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'sb-peft-'));
  const dir = path.join(tmp, 'base');
  await mkdir(dir);
  await writeFile(path.join(dir, 'config.json'), JSON.stringify({
    architectures: ['LlamaForCausalLM'], model_type: 'llama', vocab_size: VOCAB, hidden_size: H,
    intermediate_size: INTER, num_hidden_layers: LAYERS, num_attention_heads: HEADS, num_key_value_heads: KV,
    tie_word_embeddings: true,
  }));
  const weights = [tensor('model.embed_tokens.weight', [VOCAB, H]), tensor('model.norm.weight', [H])];
  for (let i = 0; i < LAYERS; i++) {
    weights.push(tensor(`model.layers.${i}.input_layernorm.weight`, [H]), tensor(`model.layers.${i}.post_attention_layernorm.weight`, [H]));
    for (const [m, [inF, outF]] of Object.entries(FEATURES)) {
      weights.push(tensor(`model.layers.${i}.${PARENT[m as LoraModuleName]}.${m}.weight`, [outF, inF]));
    }
  }
  await writeSafetensors(path.join(dir, 'model.safetensors'), weights);
  model = await openModelDir(dir);
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

interface LoraOpts {
  rank?: number;
  dtype?: WritableDType;
  /** Adapter-name infix: ".lora_A.<name>.weight". */
  adapterName?: string;
  aShape?: number[];
  bShape?: number[];
}

/** lora_A [r, in] and lora_B [out, r] for one module, named as PEFT saves them. */
function lora(layer: number, module: LoraModuleName, opts: LoraOpts = {}): TensorToWrite[] {
  const r = opts.rank ?? 4;
  const [inF, outF] = FEATURES[module];
  const base = `base_model.model.model.layers.${layer}.${PARENT[module]}.${module}`;
  const infix = opts.adapterName !== undefined ? `.${opts.adapterName}` : '';
  return [
    tensor(`${base}.lora_A${infix}.weight`, opts.aShape ?? [r, inF], opts.dtype),
    tensor(`${base}.lora_B${infix}.weight`, opts.bShape ?? [outF, r], opts.dtype),
  ];
}

function adapterConfig(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    peft_type: 'LORA', task_type: 'CAUSAL_LM', base_model_name_or_path: 'tiny/llama', r: 4, lora_alpha: 8,
    lora_dropout: 0.05, target_modules: ['q_proj', 'v_proj'], bias: 'none', fan_in_fan_out: false,
    use_rslora: false, use_dora: false, modules_to_save: null, layers_to_transform: null, layers_pattern: null,
    rank_pattern: {}, alpha_pattern: {}, init_lora_weights: true, inference_mode: true, ...extra,
  };
}

async function writeAdapter(config: Record<string, unknown> | null, tensors: TensorToWrite[] | null): Promise<string> {
  const dir = path.join(tmp, `a${counter++}`);
  await mkdir(dir);
  if (config !== null) await writeFile(path.join(dir, 'adapter_config.json'), JSON.stringify(config));
  if (tensors !== null) await writeSafetensors(path.join(dir, 'adapter_model.safetensors'), tensors);
  return dir;
}

const qv = (rank = 4, opts: LoraOpts = {}): TensorToWrite[] =>
  [0, 1].flatMap((l) => [...lora(l, 'q_proj', { rank, ...opts }), ...lora(l, 'v_proj', { rank, ...opts })]);

describe('openPeftAdapter', () => {
  test('a plain q/v adapter: modules, ranks, scale = alpha / r, refs into the file', async () => {
    const dir = await writeAdapter(adapterConfig(), qv());
    const { spec, config } = await openPeftAdapter(dir, model);
    const file = path.join(dir, 'adapter_model.safetensors');
    assert.deepEqual(spec.modules.map((m) => [m.layer, m.module, m.rank, m.scale]), [
      [0, 'q_proj', 4, 2], [0, 'v_proj', 4, 2], [1, 'q_proj', 4, 2], [1, 'v_proj', 4, 2],
    ]);
    const header = await readSafetensorsHeader(file);
    for (const m of spec.modules) {
      for (const ref of [m.a, m.b]) {
        const entry = header.tensors.get(ref.name)!;
        assert.deepEqual(ref, { name: entry.name, dtype: 'F32', shape: entry.shape, file, offset: entry.offset, nbytes: entry.nbytes });
      }
    }
    assert.deepEqual(spec.modules[1]!.a.shape, [4, H]);
    assert.deepEqual(spec.modules[1]!.b.shape, [KV * HD, 4]);
    assert.equal(config.baseModelNameOrPath, 'tiny/llama');
    assert.equal(config.taskType, 'CAUSAL_LM');
    assert.equal(config.adapterName, null);
    assert.deepEqual(config.ignoredModules, []);
    assert.deepEqual(config.warnings, []);
    assert.equal(config.weightBytes, 4 * (2 * (4 * 8 + 8 * 4) + 2 * (4 * 8 + 4 * 4)));
  });

  test('adapter-name infix, F16/BF16 tensors, fan_in_fan_out and all-linear are accepted', async () => {
    const all: LoraModuleName[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
    const tensors = all.flatMap((m, i) => lora(1, m, { adapterName: 'default', dtype: i % 2 ? 'BF16' : 'F16' }));
    const dir = await writeAdapter(adapterConfig({ target_modules: 'all-linear', fan_in_fan_out: true }), tensors);
    const { spec, config } = await openPeftAdapter(dir, model);
    assert.deepEqual(spec.modules.map((m) => m.module), all);
    assert.deepEqual(spec.modules.map((m) => m.a.dtype), ['F16', 'BF16', 'F16', 'BF16', 'F16', 'BF16', 'F16']);
    assert.equal(config.adapterName, 'default');
    assert.equal(config.fanInFanOut, true);
    assert.deepEqual(config.targetModules, all);
  });

  test('rank_pattern / alpha_pattern: first matching key, at a "." boundary, as PEFT resolves them', async () => {
    const cfg = adapterConfig({
      r: 8, lora_alpha: 16, target_modules: ['q_proj', 'o_proj', 'down_proj'],
      rank_pattern: { 'model.layers.1.self_attn.o_proj': 4, o_proj: 2 },
      // "lf_attn.o_proj" is a suffix of the name but not at a "." boundary, so it never matches.
      alpha_pattern: { 'lf_attn.o_proj': 100, '^model.layers.0.self_attn.o_proj': 3, 'layers\\.[01]\\.mlp\\.down_proj': 24 },
    });
    const tensors = [
      ...lora(0, 'q_proj', { rank: 8 }), ...lora(0, 'o_proj', { rank: 2 }), ...lora(0, 'down_proj', { rank: 8 }),
      ...lora(1, 'q_proj', { rank: 8 }), ...lora(1, 'o_proj', { rank: 4 }), ...lora(1, 'down_proj', { rank: 8 }),
    ];
    const { spec } = await openPeftAdapter(await writeAdapter(cfg, tensors), model);
    assert.deepEqual(spec.modules.map((m) => [m.layer, m.module, m.rank, m.scale]), [
      [0, 'q_proj', 8, 16 / 8],
      [0, 'o_proj', 2, 3 / 2],
      [0, 'down_proj', 8, 24 / 8],
      [1, 'q_proj', 8, 16 / 8],
      [1, 'o_proj', 4, 16 / 4],
      [1, 'down_proj', 8, 24 / 8],
    ]);
    assert.deepEqual(spec.modules.map((m) => m.scale), [2, 1.5, 3, 2, 4, 3]);
  });

  test('use_rslora: scale = alpha / sqrt(r), with the pattern-resolved r', async () => {
    const cfg = adapterConfig({ r: 8, lora_alpha: 16, use_rslora: true, rank_pattern: { v_proj: 4 }, alpha_pattern: { 'layers.1.self_attn.q_proj': 6 } });
    const tensors = [...lora(0, 'q_proj', { rank: 8 }), ...lora(0, 'v_proj', { rank: 4 }), ...lora(1, 'q_proj', { rank: 8 })];
    const { spec } = await openPeftAdapter(await writeAdapter(cfg, tensors), model);
    assert.deepEqual(spec.modules.map((m) => [m.layer, m.module, m.rank, m.scale]), [
      [0, 'q_proj', 8, 16 / Math.sqrt(8)],
      [0, 'v_proj', 4, 8],
      [1, 'q_proj', 8, 6 / Math.sqrt(8)],
    ]);
    assert.equal(spec.modules[0]!.scale, 5.65685424949238); // Python: 16 / math.sqrt(8)
    assert.equal(spec.modules[2]!.scale, 2.1213203435596424); // Python: 6 / math.sqrt(8)
  });

  test('layers_to_transform restricts the layers; modules outside it are ignored, as in PEFT', async () => {
    const list = await openPeftAdapter(await writeAdapter(adapterConfig({ layers_to_transform: [1] }), qv()), model);
    assert.deepEqual(list.spec.modules.map((m) => [m.layer, m.module]), [[1, 'q_proj'], [1, 'v_proj']]);
    assert.deepEqual(list.config.ignoredModules, ['model.layers.0.self_attn.q_proj', 'model.layers.0.self_attn.v_proj']);
    assert.equal(list.config.warnings.length, 1);
    assert.match(list.config.warnings[0]!, /2 module\(s\) .* are ignored/);

    const single = await openPeftAdapter(await writeAdapter(adapterConfig({ layers_to_transform: 0, layers_pattern: 'layers' }), qv()), model);
    assert.deepEqual(single.spec.modules.map((m) => [m.layer, m.module]), [[0, 'q_proj'], [0, 'v_proj']]);
    assert.deepEqual(single.config.layersToTransform, [0]);

    const otherPattern = await openPeftAdapter(await writeAdapter(adapterConfig({ layers_to_transform: [0, 1], layers_pattern: ['h'] }), qv()), model);
    assert.deepEqual(otherPattern.spec.modules, []);
    assert.match(otherPattern.config.warnings.join('\n'), /applies to no module/);
  });

  test('target_modules as a regex string (full match) and exclude_modules', async () => {
    const tensors = [...qv(), ...lora(0, 'o_proj'), ...lora(1, 'o_proj')];
    const regex = await openPeftAdapter(
      await writeAdapter(adapterConfig({ target_modules: '.*\\.layers\\.1\\.self_attn\\.(q_proj|o_proj)', layers_to_transform: [0] }), tensors),
      model,
    );
    // layers_to_transform is ignored with a regex target, as in PEFT.
    assert.deepEqual(regex.spec.modules.map((m) => [m.layer, m.module]), [[1, 'q_proj'], [1, 'o_proj']]);
    const excluded = await openPeftAdapter(
      await writeAdapter(adapterConfig({ target_modules: ['q_proj', 'v_proj', 'o_proj'], exclude_modules: ['o_proj'] }), tensors),
      model,
    );
    assert.deepEqual(excluded.spec.modules.map((m) => m.module), ['q_proj', 'v_proj', 'q_proj', 'v_proj']);
  });

  test('an adapter trained on another model is refused with the mismatching dimension', async () => {
    const wrongIn = await writeAdapter(adapterConfig(), [...lora(0, 'q_proj', { aShape: [4, 12] }), ...lora(0, 'v_proj')]);
    const file = path.join(wrongIn, 'adapter_model.safetensors');
    await assert.rejects(openPeftAdapter(wrongIn, model), {
      message: `${file}: adapter layers.0.self_attn.q_proj: lora_A is [4, 12] but the base model's q_proj takes 8 inputs (is this adapter for another model?)`,
    });
    const wrongOut = await writeAdapter(adapterConfig(), lora(1, 'v_proj', { bShape: [8, 4] }));
    await assert.rejects(openPeftAdapter(wrongOut, model), /adapter layers\.1\.self_attn\.v_proj: lora_B is \[8, 4\] but the base model's v_proj gives 4 outputs \(is this adapter for another model\?\)/);
    const tooDeep = await writeAdapter(adapterConfig(), lora(5, 'q_proj'));
    await assert.rejects(openPeftAdapter(tooDeep, model), /adapter layers\.5\.self_attn\.q_proj: the base model has only 2 layers/);
  });

  test('rank disagreements: A vs B, and weights vs adapter_config.json', async () => {
    const ab = await writeAdapter(adapterConfig(), lora(0, 'q_proj', { bShape: [8, 2] }));
    await assert.rejects(openPeftAdapter(ab, model), /lora_A is \[4, 8\] but lora_B is \[8, 2\]: ranks differ/);
    const cfg = await writeAdapter(adapterConfig({ r: 8 }), lora(0, 'q_proj', { rank: 4 }));
    await assert.rejects(openPeftAdapter(cfg, model), /adapter layers\.0\.self_attn\.q_proj: weights have rank 4 but adapter_config\.json gives r=8 for this module/);
    const pattern = await writeAdapter(adapterConfig({ r: 4, rank_pattern: { q_proj: 2 } }), lora(0, 'q_proj', { rank: 4 }));
    await assert.rejects(openPeftAdapter(pattern, model), /weights have rank 4 but adapter_config\.json gives r=2/);
  });

  test('incomplete pairs and modules Switchboard does not serve', async () => {
    const half = await writeAdapter(adapterConfig(), [lora(0, 'q_proj')[0]!]);
    await assert.rejects(openPeftAdapter(half, model), /adapter layers\.0\.self_attn\.q_proj: lora_A is present but lora_B is missing/);
    const embedHalf = await writeAdapter(adapterConfig({ target_modules: ['embed_tokens'] }), [tensor('base_model.model.model.embed_tokens.lora_embedding_A', [4, VOCAB])]);
    await assert.rejects(openPeftAdapter(embedHalf, model), /adapter embed_tokens: lora_A is present but lora_B is missing/);
    const embedLinear = await writeAdapter(adapterConfig({ target_modules: ['embed_tokens'] }), [
      tensor('base_model.model.model.embed_tokens.lora_A.weight', [4, VOCAB]), tensor('base_model.model.model.embed_tokens.lora_B.weight', [H, 4]),
    ]);
    await assert.rejects(openPeftAdapter(embedLinear, model), /the embeddings' LoRA must be lora_embedding_A\/B, found lora_A\/lora_B/);
    const embedElsewhere = await writeAdapter(adapterConfig(), [
      tensor('base_model.model.model.layers.0.self_attn.q_proj.lora_embedding_A', [4, VOCAB]), tensor('base_model.model.model.layers.0.self_attn.q_proj.lora_embedding_B', [8, 4]),
    ]);
    await assert.rejects(openPeftAdapter(embedElsewhere, model), /embedding LoRA weights \(lora_embedding_A\/B\) for model\.layers\.0\.self_attn\.q_proj/);
    const headWrongVocab = await writeAdapter(adapterConfig({ target_modules: ['lm_head'] }), [
      tensor('base_model.model.lm_head.lora_A.weight', [4, H]), tensor('base_model.model.lm_head.lora_B.weight', [VOCAB + 2, 4]),
    ]);
    await assert.rejects(openPeftAdapter(headWrongVocab, model), /adapter lm_head: lora_B is \[18, 4\] but the base model's lm_head gives 16 outputs/);
    const norm = await writeAdapter(adapterConfig({ target_modules: ['norm'] }), [
      tensor('base_model.model.model.norm.lora_A.weight', [4, H]), tensor('base_model.model.model.norm.lora_B.weight', [H, 4]),
    ]);
    await assert.rejects(openPeftAdapter(norm, model), /adapter has LoRA weights for model\.norm \(norm\), which Switchboard does not serve \(supported: .*lm_head, embed_tokens\)/);
    const misplaced = await writeAdapter(adapterConfig(), [
      tensor('base_model.model.model.layers.0.mlp.q_proj.lora_A.weight', [4, H]), tensor('base_model.model.model.layers.0.mlp.q_proj.lora_B.weight', [8, 4]),
    ]);
    await assert.rejects(openPeftAdapter(misplaced, model), /none of the adapter's modules exist in this base model \(model\.layers\.0\.mlp\.q_proj\): is it an adapter for another model\?/);
    const dora = await writeAdapter(adapterConfig(), [...lora(0, 'q_proj'), tensor('base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector', [8])]);
    await assert.rejects(openPeftAdapter(dora, model), /DoRA is not supported/);
    const two = await writeAdapter(adapterConfig(), [...lora(0, 'q_proj', { adapterName: 'x' }), ...lora(0, 'v_proj', { adapterName: 'y' })]);
    await assert.rejects(openPeftAdapter(two, model), /several adapters \(x, y\)/);
    const f64 = await writeAdapter(adapterConfig(), lora(0, 'q_proj', { dtype: 'F64' }));
    await assert.rejects(openPeftAdapter(f64, model), /unsupported dtype F64 for tensor base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight \(supported: F32, F16, BF16\)/);
  });

  test('LoRA on lm_head and embed_tokens, as PEFT saves them (Linear and Embedding LoRA)', async () => {
    const dir = await writeAdapter(adapterConfig({ target_modules: ['q_proj', 'lm_head', 'embed_tokens'], rank_pattern: { lm_head: 2 }, alpha_pattern: { embed_tokens: 2 } }), [
      ...lora(0, 'q_proj'),
      tensor('base_model.model.lm_head.lora_A.weight', [2, H]), tensor('base_model.model.lm_head.lora_B.weight', [VOCAB, 2]),
      tensor('base_model.model.model.embed_tokens.lora_embedding_A', [4, VOCAB]), tensor('base_model.model.model.embed_tokens.lora_embedding_B', [H, 4]),
    ]);
    const { spec, config } = await openPeftAdapter(dir, model);
    assert.deepEqual(spec.modules.map((m) => [m.layer, m.module, m.rank, m.scale]), [
      [-1, 'embed_tokens', 4, 2 / 4], [0, 'q_proj', 4, 2], [-1, 'lm_head', 2, 4],
    ]);
    const embed = spec.modules[0]!;
    assert.deepEqual([embed.a.shape, embed.b.shape], [[4, VOCAB], [H, 4]]);
    assert.equal(embed.a.name, 'base_model.model.model.embed_tokens.lora_embedding_A');
    assert.equal(config.weightBytes, 4 * (4 * H * 2 + 2 * H + VOCAB * 2 + 4 * VOCAB + H * 4));
    // Not targeted by the config: ignored as PEFT ignores them; all-linear leaves the head out, as PEFT does.
    const ignored = await writeAdapter(adapterConfig({ target_modules: 'all-linear' }), [
      ...lora(0, 'q_proj'), tensor('base_model.model.lm_head.lora_A.weight', [4, H]), tensor('base_model.model.lm_head.lora_B.weight', [VOCAB, 4]),
    ]);
    const opened = await openPeftAdapter(ignored, model);
    assert.deepEqual(opened.config.ignoredModules, ['lm_head']);
    // PEFT's default save_embedding_layers="auto" also writes the base embedding layers: not loaded, said so.
    const withCopies = await writeAdapter(adapterConfig({ target_modules: ['embed_tokens'] }), [
      tensor('base_model.model.model.embed_tokens.lora_embedding_A', [4, VOCAB]), tensor('base_model.model.model.embed_tokens.lora_embedding_B', [H, 4]),
      tensor('base_model.model.model.embed_tokens.base_layer.weight', [VOCAB, H]), tensor('base_model.model.lm_head.weight', [VOCAB, H]),
    ]);
    const copies = await openPeftAdapter(withCopies, model);
    assert.deepEqual(copies.spec.modules.map((m) => m.module), ['embed_tokens']);
    assert.match(copies.config.warnings.join('\n'), /holds the base model's embedding layers \(PEFT's save_embedding_layers: base_model\.model\.model\.embed_tokens\.base_layer\.weight, base_model\.model\.lm_head\.weight\)/);
    const resized = await writeAdapter(adapterConfig({ target_modules: ['embed_tokens'] }), [
      tensor('base_model.model.model.embed_tokens.lora_embedding_A', [4, VOCAB + 8]), tensor('base_model.model.model.embed_tokens.lora_embedding_B', [H, 4]),
      tensor('base_model.model.model.embed_tokens.base_layer.weight', [VOCAB + 8, H]),
    ]);
    await assert.rejects(openPeftAdapter(resized, model), /embed_tokens\.base_layer\.weight \(the embed_tokens weights saved with the adapter\) is \[24, 8\] but the base model's is \[16, 8\]: the adapter was trained with a resized vocabulary/);
    // A tied base and ensure_weight_tying: PEFT would tie the head's LoRA to the embedding's, which is not served.
    const tied = await writeAdapter(adapterConfig({ target_modules: ['embed_tokens'], ensure_weight_tying: true }), [
      tensor('base_model.model.model.embed_tokens.lora_embedding_A', [4, VOCAB]), tensor('base_model.model.model.embed_tokens.lora_embedding_B', [H, 4]),
    ]);
    await assert.rejects(openPeftAdapter(tied, model), /ensure_weight_tying=true on a model with tied embeddings, with LoRA on embed_tokens: tied LoRA between embed_tokens and lm_head is not supported/);
  });

  test('modules the base model lacks are loaded around and named in a warning (LoRAX); modules it has but Switchboard does not adapt are refused', async () => {
    const extra = await writeAdapter(adapterConfig({ target_modules: ['q_proj', 'v_proj', 'c_attn'] }), [
      ...lora(0, 'q_proj'), ...lora(1, 'v_proj'),
      tensor('base_model.model.model.layers.0.self_attn.c_attn.lora_A.weight', [4, H]), tensor('base_model.model.model.layers.0.self_attn.c_attn.lora_B.weight', [24, 4]),
      tensor('base_model.model.model.layers.1.self_attn.c_attn.lora_A.weight', [4, H]), tensor('base_model.model.model.layers.1.self_attn.c_attn.lora_B.weight', [24, 4]),
    ]);
    const a = await openPeftAdapter(extra, model);
    assert.deepEqual(a.spec.modules.map((m) => `${m.layer}.${m.module}`), ['0.q_proj', '1.v_proj']);
    assert.ok(a.config.warnings.some((w) => w.includes('2 module(s) in adapter_model.safetensors do not exist in this base model and are ignored: model.layers.0.self_attn.c_attn, model.layers.1.self_attn.c_attn')), a.config.warnings.join('; '));
    // input_layernorm exists in the base model: skipping its LoRA would change the outputs, so it is refused.
    const present = await writeAdapter(adapterConfig({ target_modules: ['q_proj', 'input_layernorm'] }), [
      ...lora(0, 'q_proj'),
      tensor('base_model.model.model.layers.0.input_layernorm.lora_A.weight', [4, H]), tensor('base_model.model.model.layers.0.input_layernorm.lora_B.weight', [H, 4]),
    ]);
    await assert.rejects(openPeftAdapter(present, model), /LoRA weights for model\.layers\.0\.input_layernorm \(input_layernorm\), which Switchboard does not serve/);
  });

  test('adapter_config.json options Switchboard refuses', async () => {
    const cases: Array<[Record<string, unknown>, RegExp | string]> = [
      [{ bias: 'all' }, 'adapter trains biases (bias=all), which Switchboard does not serve'],
      [{ bias: 'lora_only' }, 'adapter trains biases (bias=lora_only), which Switchboard does not serve'],
      [{ use_dora: true }, /DoRA adapters \(use_dora=true\) are not supported/],
      [{ modules_to_save: ['lm_head'] }, /fully trains modules_to_save \(lm_head\)/],
      [{ lora_bias: true }, /lora_bias=true/],
      // (this dense model has no expert weights: LoRA on parameters is refused by name, never left out)
      [{ target_parameters: ['mlp.experts.gate_up_proj'] }, /target_parameters entry "mlp\.experts\.gate_up_proj" names no parameter Switchboard adapts in this model .*this model has none/],
      [{ trainable_token_indices: [1, 2] }, /trainable token embeddings/],
      [{ peft_type: 'PREFIX_TUNING' }, /peft_type "PREFIX_TUNING" is not supported \(only LORA adapters are served\)/],
      [{ r: 0 }, /adapter_config\.json: r: /],
    ];
    for (const [extra, expected] of cases) {
      const dir = await writeAdapter(adapterConfig(extra), qv());
      const configPath = path.join(dir, 'adapter_config.json');
      await assert.rejects(
        openPeftAdapter(dir, model),
        typeof expected === 'string' ? { message: `${configPath}: ${expected}` } : expected,
        JSON.stringify(extra),
      );
    }
    // modules_to_save: [] and use_dora: false are the saved defaults, not features.
    await openPeftAdapter(await writeAdapter(adapterConfig({ modules_to_save: [], use_dora: false, lora_bias: false }), qv()), model);
  });

  test('missing files: adapter_config.json, weights, pickle weights', async () => {
    const noConfig = await writeAdapter(null, qv());
    await assert.rejects(openPeftAdapter(noConfig, model), { message: `${path.join(noConfig, 'adapter_config.json')}: not found` });
    const noWeights = await writeAdapter(adapterConfig(), null);
    await assert.rejects(openPeftAdapter(noWeights, model), { message: `${path.join(noWeights, 'adapter_model.safetensors')}: not found` });
    const pickle = await writeAdapter(adapterConfig(), null);
    await writeFile(path.join(pickle, 'adapter_model.bin'), 'PK');
    // A .bin is read by the allow-list checkpoint reader (native/torch-checkpoint.test.ts); two bytes are no checkpoint.
    await assert.rejects(openPeftAdapter(pickle, model), /adapter_model\.bin: not a PyTorch checkpoint \(neither a zip nor a pickle\)/);
    const badJson = await writeAdapter(null, qv());
    await writeFile(path.join(badJson, 'adapter_config.json'), '{');
    await assert.rejects(openPeftAdapter(badJson, model), /adapter_config\.json: invalid JSON/);
  });
});

describe('PEFT matching rules', () => {
  test('findPatternKey: the first key whose regex matches a "."-aligned suffix (or the whole name)', () => {
    const name = 'model.layers.1.self_attn.o_proj';
    assert.equal(findPatternKey(['o_proj', 'model.layers.1.self_attn.o_proj'], name), 'o_proj');
    assert.equal(findPatternKey(['model.layers.1.self_attn.o_proj', 'o_proj'], name), 'model.layers.1.self_attn.o_proj');
    assert.equal(findPatternKey(['attn.o_proj'], name), undefined);
    assert.equal(findPatternKey(['self_attn.o_proj'], name), 'self_attn.o_proj');
    assert.equal(findPatternKey(['proj'], name), undefined);
    assert.equal(findPatternKey(['.*_proj'], name), '.*_proj');
    assert.equal(findPatternKey(['^layers.1.self_attn.o_proj'], name), undefined); // ^ anchors at the name's start
    assert.equal(findPatternKey(['layers\\.(?P<n>1)\\.self_attn\\.o_proj'], name), 'layers\\.(?P<n>1)\\.self_attn\\.o_proj');
    assert.throws(() => findPatternKey(['(unclosed'], name), /is not a regular expression Switchboard can match/);
  });

  test('moduleScaling and isTargetedModule on a parsed config', () => {
    const t = loraTargeting(parseAdapterConfig({
      peft_type: 'LORA', r: 16, lora_alpha: 32, rank_pattern: { 'layers.0.mlp.down_proj': 8 }, alpha_pattern: { down_proj: 4 },
      target_modules: null,
    }));
    assert.deepEqual(t.targetModules, ['q_proj', 'v_proj']); // PEFT's default for llama / mistral / qwen2
    assert.deepEqual(moduleScaling(t, 'model.layers.0.mlp.down_proj'), { rank: 8, alpha: 4, scale: 0.5 });
    assert.deepEqual(moduleScaling(t, 'model.layers.1.mlp.down_proj'), { rank: 16, alpha: 4, scale: 0.25 });
    assert.deepEqual(moduleScaling(t, 'model.layers.1.self_attn.q_proj'), { rank: 16, alpha: 32, scale: 2 });
    assert.equal(isTargetedModule(t, 'model.layers.1.self_attn.q_proj'), true);
    assert.equal(isTargetedModule(t, 'model.layers.1.self_attn.k_proj'), false);
    const defaults = loraTargeting(parseAdapterConfig({ peft_type: 'LORA' }));
    assert.equal(defaults.r, 8);
    assert.equal(defaults.loraAlpha, 8);
    assert.equal(defaults.useRslora, false);
  });
});

describe('Phi-3 fused modules (issue 18)', () => {
  const fixtures = path.join(import.meta.dirname, '..', 'test', 'fixtures');

  test('qkv_proj / gate_up_proj adapters split by output rows into q/k/v and gate/up sharing A', async () => {
    const phi3 = await openModelDir(path.join(fixtures, 'models', 'phi3'));
    const { spec } = await openPeftAdapter(path.join(fixtures, 'adapters', 'phi3', 'r8-all'), phi3);
    const layer0 = spec.modules.filter((m) => m.layer === 0);
    assert.deepEqual(layer0.map((m) => m.module), ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']);
    const [q, k, v] = layer0;
    const header = await readSafetensorsHeader(path.join(fixtures, 'adapters', 'phi3', 'r8-all', 'adapter_model.safetensors'));
    const b = header.tensors.get('base_model.model.model.layers.0.self_attn.qkv_proj.lora_B.weight')!;
    // One A for the three; B's rows in q, k, v order, back to back (64 + 32 + 32 rows of rank 8, fp32).
    assert.deepEqual([q!.a.offset, k!.a.offset, v!.a.offset], [q!.a.offset, q!.a.offset, q!.a.offset]);
    assert.deepEqual([q!.b.shape, k!.b.shape, v!.b.shape], [[64, 8], [32, 8], [32, 8]]);
    assert.deepEqual([q!.b.offset, k!.b.offset, v!.b.offset], [b.offset, b.offset + 64 * 8 * 4, b.offset + 96 * 8 * 4]);
    assert.equal(q!.b.nbytes! + k!.b.nbytes! + v!.b.nbytes!, b.nbytes);
  });

  test('fused module names are Phi-3 only', async () => {
    const qwen3 = await openModelDir(path.join(fixtures, 'models', 'qwen3'));
    await assert.rejects(openPeftAdapter(path.join(fixtures, 'adapters', 'phi3', 'r8-qkv'), qwen3),
      /none of the adapter's modules exist in this base model \(model\.layers\.0\.self_attn\.qkv_proj, .*\): is it an adapter for another model\?/);
  });
});
