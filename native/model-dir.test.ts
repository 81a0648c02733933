import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openModelDir } from './model-dir.ts';
import { readSafetensorsHeader, writeSafetensors, type TensorToWrite, type WritableDType } from './safetensors.ts';

let tmp: string;
let counter = 0;
before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'sb-model-dir-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function freshDir(): Promise<string> {
  const dir = path.join(tmp, `m${counter++}`);
  await mkdir(dir);
  return dir;
}

// Deliberately non-square dimensions, so a transposed or swapped tensor cannot pass the shape checks by accident.
const H = 8, HEADS = 2, KV = 1, HD = 4, INTER = 12, LAYERS = 2, VOCAB = 16;

function llamaConfig(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', vocab_size: VOCAB, hidden_size: H,
    intermediate_size: INTER, num_hidden_layers: LAYERS, num_attention_heads: HEADS, num_key_value_heads: KV,
    rms_norm_eps: 1e-5, rope_theta: 10000, max_position_embeddings: 128, tie_word_embeddings: false,
    torch_dtype: 'float32', ...extra,
  };
}

function qwen2Config(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return llamaConfig({ architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', ...extra });
}

function tensor(name: string, shape: number[], dtype: WritableDType = 'F32'): TensorToWrite {
  const n = shape.reduce((a, d) => a * d, 1);
  return { name, dtype, shape, data: Float32Array.from({ length: n }, (_, i) => ((i % 7) - 3) / 8) };
}

/** The checkpoint transformers would save for the tiny config above (names and shapes written out by hand). */
function checkpoint(opts: { bias?: boolean; lmHead?: boolean; dtype?: WritableDType } = {}): TensorToWrite[] {
  const dt = opts.dtype ?? 'F32';
  const out = [tensor('model.embed_tokens.weight', [VOCAB, H], dt)];
  for (let i = 0; i < LAYERS; i++) {
    const p = `model.layers.${i}`;
    out.push(
      tensor(`${p}.input_layernorm.weight`, [H], dt),
      tensor(`${p}.post_attention_layernorm.weight`, [H], dt),
      tensor(`${p}.self_attn.q_proj.weight`, [HEADS * HD, H], dt),
      tensor(`${p}.self_attn.k_proj.weight`, [KV * HD, H], dt),
      tensor(`${p}.self_attn.v_proj.weight`, [KV * HD, H], dt),
      tensor(`${p}.self_attn.o_proj.weight`, [H, HEADS * HD], dt),
      tensor(`${p}.mlp.gate_proj.weight`, [INTER, H], dt),
      tensor(`${p}.mlp.up_proj.weight`, [INTER, H], dt),
      tensor(`${p}.mlp.down_proj.weight`, [H, INTER], dt),
      tensor(`${p}.self_attn.rotary_emb.inv_freq`, [HD / 2], 'F32'),
    );
    if (opts.bias) {
      out.push(
        tensor(`${p}.self_attn.q_proj.bias`, [HEADS * HD], dt),
        tensor(`${p}.self_attn.k_proj.bias`, [KV * HD], dt),
        tensor(`${p}.self_attn.v_proj.bias`, [KV * HD], dt),
      );
    }
  }
  out.push(tensor('model.norm.weight', [H], dt));
  if (opts.lmHead ?? true) out.push(tensor('lm_head.weight', [VOCAB, H], dt));
  return out;
}

const NUM_WEIGHTS = 1 + LAYERS * 9 + 1; // embed, per-layer (2 norms + 7 projections), final norm

async function writeModel(dir: string, config: Record<string, unknown>, tensors: TensorToWrite[]): Promise<void> {
  await writeFile(path.join(dir, 'config.json'), JSON.stringify(config));
  await writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' });
}

function replace(tensors: TensorToWrite[], name: string, by: TensorToWrite | null): TensorToWrite[] {
  return tensors.flatMap((t) => (t.name === name ? (by === null ? [] : [by]) : [t]));
}

describe('openModelDir', () => {
  test('single model.safetensors: every weight located, checked and counted', async () => {
    const dir = await freshDir();
    await writeModel(dir, llamaConfig(), checkpoint());
    const m = await openModelDir(dir);
    const file = path.join(dir, 'model.safetensors');
    assert.equal(m.dir, dir);
    assert.equal(m.spec.arch, 'llama');
    assert.equal(m.config.dtype, 'float32');
    assert.equal(m.spec.tensors.length, NUM_WEIGHTS + 1);
    const names = m.spec.tensors.map((t) => t.name);
    assert.ok(!names.some((n) => n.includes('inv_freq')), 'unrelated tensors are ignored');
    assert.equal(names[0], 'model.embed_tokens.weight');
    assert.equal(names.at(-1), 'lm_head.weight');

    // Offsets and sizes must point at exactly the bytes writeSafetensors wrote for each tensor.
    const header = await readSafetensorsHeader(file);
    const bytes = await readFile(file);
    for (const t of m.spec.tensors) {
      const entry = header.tensors.get(t.name)!;
      assert.equal(t.file, file);
      assert.equal(t.offset, entry.offset);
      assert.equal(t.nbytes, entry.nbytes);
      assert.equal(t.dtype, 'F32');
      assert.equal(t.nbytes, t.shape.reduce((a, d) => a * d, 4));
    }
    const down = m.spec.tensors.find((t) => t.name === 'model.layers.1.mlp.down_proj.weight')!;
    assert.deepEqual(down.shape, [H, INTER]);
    assert.equal(bytes.readFloatLE(down.offset! + 4), -2 / 8);
    assert.equal(m.weightBytes, m.spec.tensors.reduce((a, t) => a + t.nbytes!, 0));
  });

  test('sharded checkpoint resolved through model.safetensors.index.json', async () => {
    const dir = await freshDir();
    await writeFile(path.join(dir, 'config.json'), JSON.stringify(llamaConfig({ torch_dtype: 'bfloat16' })));
    const all = checkpoint({ dtype: 'BF16' });
    const first = all.filter((t) => t.name.startsWith('model.embed') || t.name.startsWith('model.layers.0.'));
    const second = all.filter((t) => !first.includes(t));
    await writeSafetensors(path.join(dir, 'model-00001-of-00002.safetensors'), first);
    await writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), second);
    const weight_map = Object.fromEntries([
      ...first.map((t) => [t.name, 'model-00001-of-00002.safetensors']),
      ...second.map((t) => [t.name, 'model-00002-of-00002.safetensors']),
    ]);
    await writeFile(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 0 }, weight_map }));
    // A stray consolidated file must not be consulted when an index exists.
    await writeSafetensors(path.join(dir, 'consolidated.safetensors'), [tensor('model.norm.weight', [3])]);

    const m = await openModelDir(dir);
    assert.equal(m.spec.tensors.length, NUM_WEIGHTS + 1);
    const fileOf = (name: string): string => path.basename(m.spec.tensors.find((t) => t.name === name)!.file!);
    assert.equal(fileOf('model.embed_tokens.weight'), 'model-00001-of-00002.safetensors');
    assert.equal(fileOf('model.layers.0.mlp.up_proj.weight'), 'model-00001-of-00002.safetensors');
    assert.equal(fileOf('model.layers.1.self_attn.q_proj.weight'), 'model-00002-of-00002.safetensors');
    assert.equal(fileOf('model.norm.weight'), 'model-00002-of-00002.safetensors');
    assert.ok(m.spec.tensors.every((t) => t.dtype === 'BF16'));
    assert.equal(m.config.dtype, 'bfloat16');

    // An index entry naming a shard that lacks the tensor is an error naming both.
    const broken = { ...weight_map, 'model.norm.weight': 'model-00001-of-00002.safetensors' };
    await writeFile(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: broken }));
    await assert.rejects(openModelDir(dir), /missing tensor model\.norm\.weight \(expected shape \[8\]; looked in model-00001-of-00002\.safetensors per model\.safetensors\.index\.json\)/);

    // Index entries may not point outside the directory.
    const escaping = { ...weight_map, 'model.norm.weight': '../elsewhere.safetensors' };
    await writeFile(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: escaping }));
    await assert.rejects(openModelDir(dir), /weight file "\.\.\/elsewhere\.safetensors" is outside the model directory/);
  });

  test('without index or model.safetensors, all *.safetensors are searched', async () => {
    const dir = await freshDir();
    await writeFile(path.join(dir, 'config.json'), JSON.stringify(llamaConfig()));
    const all = checkpoint();
    await writeSafetensors(path.join(dir, 'part-a.safetensors'), all.slice(0, 7));
    await writeSafetensors(path.join(dir, 'part-b.safetensors'), all.slice(7));
    const m = await openModelDir(dir);
    assert.equal(m.spec.tensors.length, NUM_WEIGHTS + 1);
    await writeSafetensors(path.join(dir, 'part-c.safetensors'), [tensor('model.norm.weight', [H])]);
    await assert.rejects(openModelDir(dir), /tensor model\.norm\.weight appears in several files \(part-b\.safetensors, part-c\.safetensors\)/);
  });

  test('tied embeddings: lm_head may be absent, and is not loaded when present', async () => {
    const absent = await freshDir();
    await writeModel(absent, llamaConfig({ tie_word_embeddings: true }), checkpoint({ lmHead: false }));
    const a = await openModelDir(absent);
    assert.equal(a.spec.tieWordEmbeddings, true);
    assert.equal(a.spec.tensors.length, NUM_WEIGHTS);
    assert.ok(!a.spec.tensors.some((t) => t.name === 'lm_head.weight'));

    const present = await freshDir();
    await writeModel(present, llamaConfig({ tie_word_embeddings: true }), checkpoint());
    const p = await openModelDir(present);
    assert.equal(p.spec.tensors.length, NUM_WEIGHTS);

    const untied = await freshDir();
    await writeModel(untied, llamaConfig(), checkpoint({ lmHead: false }));
    await assert.rejects(openModelDir(untied), /missing tensor lm_head\.weight \(expected shape \[16, 8\]; looked in model\.safetensors\)/);
  });

  test('Qwen2 loads q/k/v biases; a missing bias is an error', async () => {
    const dir = await freshDir();
    await writeModel(dir, qwen2Config({ tie_word_embeddings: true }), checkpoint({ bias: true, lmHead: false }));
    const m = await openModelDir(dir);
    assert.equal(m.spec.attentionBias, true);
    const biases = m.spec.tensors.filter((t) => t.name.endsWith('.bias'));
    assert.deepEqual(
      biases.map((t) => [t.name, t.shape]),
      [0, 1].flatMap((i) => [
        [`model.layers.${i}.self_attn.q_proj.bias`, [HEADS * HD]],
        [`model.layers.${i}.self_attn.k_proj.bias`, [KV * HD]],
        [`model.layers.${i}.self_attn.v_proj.bias`, [KV * HD]],
      ]),
    );
    const noBias = await freshDir();
    await writeModel(noBias, qwen2Config({ tie_word_embeddings: true }), checkpoint({ lmHead: false }));
    await assert.rejects(openModelDir(noBias), /missing tensor model\.layers\.0\.self_attn\.q_proj\.bias \(expected shape \[8\]/);
  });

  test('Qwen2 sliding window and Mistral window reach the spec per layer', async () => {
    const q = await freshDir();
    await writeModel(q, qwen2Config({ use_sliding_window: true, sliding_window: 64, max_window_layers: 1 }), checkpoint({ bias: true }));
    assert.deepEqual((await openModelDir(q)).spec.slidingWindow, [0, 64]);
    const mi = await freshDir();
    await writeModel(mi, llamaConfig({ architectures: ['MistralForCausalLM'], model_type: 'mistral', sliding_window: 32 }), checkpoint());
    assert.deepEqual((await openModelDir(mi)).spec.slidingWindow, [32, 32]);
  });

  test('missing tensor, wrong shape and wrong dtype name the tensor, shapes and file', async () => {
    const file = (dir: string): string => path.join(dir, 'model.safetensors');

    const missing = await freshDir();
    await writeModel(missing, llamaConfig(), replace(checkpoint(), 'model.layers.1.mlp.down_proj.weight', null));
    await assert.rejects(openModelDir(missing), {
      message: `${missing}: missing tensor model.layers.1.mlp.down_proj.weight (expected shape [8, 12]; looked in model.safetensors)`,
    });

    const wrongShape = await freshDir();
    const name = 'model.layers.0.self_attn.k_proj.weight';
    await writeModel(wrongShape, llamaConfig(), replace(checkpoint(), name, tensor(name, [HEADS * HD, H])));
    await assert.rejects(openModelDir(wrongShape), {
      message: `${file(wrongShape)}: tensor ${name} has shape [8, 8] but config.json implies [4, 8]`,
    });

    const transposed = await freshDir();
    await writeModel(transposed, llamaConfig(), replace(checkpoint(), 'model.layers.0.mlp.down_proj.weight', tensor('model.layers.0.mlp.down_proj.weight', [INTER, H])));
    await assert.rejects(openModelDir(transposed), /down_proj\.weight has shape \[12, 8\] but config\.json implies \[8, 12\]/);

    for (const dtype of ['I64', 'F64'] as const) {
      const wrongDtype = await freshDir();
      await writeModel(wrongDtype, llamaConfig(), replace(checkpoint(), 'model.norm.weight', tensor('model.norm.weight', [H], dtype)));
      await assert.rejects(openModelDir(wrongDtype), {
        message: `${file(wrongDtype)}: unsupported dtype ${dtype} for tensor model.norm.weight (supported: F32, F16, BF16)`,
      });
    }

    // An unsupported dtype on a tensor the engine does not read is no obstacle.
    const extra = await freshDir();
    await writeModel(extra, llamaConfig(), [...checkpoint(), tensor('model.position_ids', [4], 'I64')]);
    assert.equal((await openModelDir(extra)).spec.tensors.length, NUM_WEIGHTS + 1);
  });

  test('a truncated weight file is reported as truncated', async () => {
    const dir = await freshDir();
    await writeModel(dir, llamaConfig(), checkpoint());
    const file = path.join(dir, 'model.safetensors');
    const size = (await readSafetensorsHeader(file)).fileSize;
    await truncate(file, size - 100);
    await assert.rejects(openModelDir(dir), (err: Error) => {
      assert.match(err.message, new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: truncated: tensor lm_head\\.weight needs bytes up to ${size} but the file has ${size - 100}$`));
      return true;
    });
  });

  test('config.json problems: missing, invalid JSON, unsupported architecture', async () => {
    const none = await freshDir();
    await assert.rejects(openModelDir(none), { message: `${path.join(none, 'config.json')}: not found` });
    const bad = await freshDir();
    await writeFile(path.join(bad, 'config.json'), '{"hidden_size": 8,');
    await assert.rejects(openModelDir(bad), new RegExp(`config\\.json: invalid JSON: `));
    const gpt2 = await freshDir();
    await writeFile(path.join(gpt2, 'config.json'), JSON.stringify({ architectures: ['GPT2LMHeadModel'], model_type: 'gpt2' }));
    await assert.rejects(openModelDir(gpt2), /unsupported architecture "GPT2LMHeadModel" \(supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, Phi3ForCausalLM, Qwen3MoeForCausalLM, MixtralForCausalLM, Qwen2MoeForCausalLM\)/);
    const yarn = await freshDir();
    await writeModel(yarn, llamaConfig({ rope_scaling: { rope_type: 'mrope', factor: 4 } }), checkpoint());
    await assert.rejects(openModelDir(yarn), /unsupported rope type "mrope"/);
  });

  test('no safetensors at all: the error says so and points at pickle files', async () => {
    const dir = await freshDir();
    await writeFile(path.join(dir, 'config.json'), JSON.stringify(llamaConfig()));
    await writeFile(path.join(dir, 'pytorch_model.bin'), 'not really');
    await assert.rejects(openModelDir(dir), /no weights found .*found pytorch_model\.bin \(pickle weights are not supported: convert to safetensors\)/);
  });
});
