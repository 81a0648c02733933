// Malformed inputs built from the real fixtures: each must be a clear error naming the problem,
// never a crash of the process.
import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Engine } from '../native/engine.ts';

const FIXTURES = join(import.meta.dirname, 'fixtures');

describe('bad model and adapter files', () => {
  const dirs: string[] = [];
  async function copyModel(name: string) {
    const dir = await mkdtemp(join(tmpdir(), `sb-bad-${name}-`));
    dirs.push(dir);
    await cp(join(FIXTURES, 'models', name), dir, { recursive: true });
    return dir;
  }
  after(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('refuses a truncated safetensors file', async () => {
    const dir = await copyModel('mistral');
    await truncate(join(dir, 'model.safetensors'), 200_000);
    await assert.rejects(Engine.open(dir), /truncated/);
  });

  it('refuses a weight stored in an unsupported dtype', async () => {
    const dir = await copyModel('qwen2');
    const file = join(dir, 'model.safetensors');
    const buf = await readFile(file);
    const len = Number(buf.readBigUInt64LE(0));
    const header = JSON.parse(buf.subarray(8, 8 + len).toString('utf-8')) as Record<string, { dtype: string }>;
    header['model.norm.weight']!.dtype = 'I32'; // same byte size, so only the dtype is wrong
    let text = JSON.stringify(header);
    text = text.padEnd(len, ' ');
    assert.equal(Buffer.byteLength(text), len);
    buf.write(text, 8, 'utf-8');
    await writeFile(file, buf);
    await assert.rejects(Engine.open(dir), /unsupported dtype I32 for tensor model\.norm\.weight/);
  });

  it('refuses an unsupported architecture by name', async () => {
    const dir = await copyModel('llama');
    const cfg = JSON.parse(await readFile(join(dir, 'config.json'), 'utf-8')) as Record<string, unknown>;
    await writeFile(join(dir, 'config.json'), JSON.stringify({ ...cfg, architectures: ['GPT2LMHeadModel'], model_type: 'gpt2' }));
    await assert.rejects(Engine.open(dir), /unsupported architecture "GPT2LMHeadModel"/);
  });

  it('refuses an adapter made for another model, and keeps serving', async () => {
    const engine = await Engine.open(join(FIXTURES, 'models', 'llama'), { numBlocks: 8, maxAdapters: 2 });
    try {
      await assert.rejects(engine.loadAdapterDir(0, join(FIXTURES, 'adapters', 'llama', 'wrong-shapes')), /another model/);
      const [out] = await engine.step([{ tokens: [1, 2, 3], position: 0, blockTable: [0] }]);
      assert.ok(out!.token >= 0);
    } finally {
      engine.close();
    }
  });
});
