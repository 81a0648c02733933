// `serve` with quantized bases end to end: a GPTQ act-order checkpoint (config.json decides) and the
// 16-bit fixture with --quantize bitsandbytes-nf4 generate transformers' greedy tokens on the dequantised
// weights (test/fixtures/models-quant/reference.json); a --quantize that contradicts the checkpoint stops
// the start with a message naming both.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../backend/cli.ts';
import { parseServeConfig } from '../../backend/config.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const QUANT = path.join(root, 'test/fixtures/models-quant');
const reference = JSON.parse(readFileSync(path.join(QUANT, 'reference.json'), 'utf-8')) as {
  prompts: { text: string; ids: number[] }[];
  variants: Record<string, { cases: { adapter: string | null; prompt: number; greedy: { ids: number[] } }[] }>;
};

async function greedy(args: string[], variant: string): Promise<{ got: number[]; want: number[]; logs: string[] }> {
  const logs: string[] = [];
  const server = await startServer(parseServeConfig([...args, '--port', '0', '--device', 'cpu'], {}), { log: (m) => logs.push(m) });
  try {
    const c = reference.variants[variant]!.cases.find((x) => x.adapter === null && x.prompt === 1)!;
    const res = await fetch(`${server.url}/generate`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ inputs: reference.prompts[1]!.text, parameters: { max_new_tokens: 16, details: true } }),
    });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { details: { tokens: { id: number }[] } };
    const got = body.details.tokens.map((t) => t.id);
    // Generation may stop early at an eos token, never before the 4th here (checked against the reference).
    assert.ok(got.length >= 4, `only ${got.length} tokens`);
    return { got, want: c.greedy.ids, logs };
  } finally {
    await server.close();
  }
}

describe('serve with a quantized base', () => {
  it('a GPTQ checkpoint is served as its quantization_config says, and the log says how', async () => {
    const { got, want, logs } = await greedy(['--model-id', path.join(QUANT, 'gptq-4bit-actorder')], 'gptq-4bit-actorder');
    assert.deepEqual(got.slice(0, want.length), want.slice(0, got.length));
    assert.ok(got.length > 0);
    assert.ok(logs.some((l) => /quantized weights: GPTQ 4-bit, group size 32, symmetric, act-order, v1 format; 14 linear layers packed \(0\.1 MB: the CUDA engine computes with them as they are; the CPU engine dequantises them/.test(l)), logs.join('\n'));
  });

  it('--quantize bitsandbytes-nf4 quantizes the 16-bit model at load', async () => {
    const { got, want } = await greedy(['--model-id', path.join(root, 'test/fixtures/models/llama'), '--quantize', 'bitsandbytes-nf4'], 'bitsandbytes-nf4');
    assert.deepEqual(got.slice(0, want.length), want.slice(0, got.length));
    assert.ok(got.length > 0);
  });

  it('a --quantize that contradicts the checkpoint stops the start', async () => {
    await assert.rejects(
      startServer(parseServeConfig(['--model-id', path.join(QUANT, 'awq'), '--quantize', 'gptq', '--port', '0', '--device', 'cpu'], {}), { log: () => {} }),
      /--quantize gptq contradicts the checkpoint, which .*config\.json says is awq-quantized/,
    );
  });
});
