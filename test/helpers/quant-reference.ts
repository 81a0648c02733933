// The quantized fixtures' references (scripts/make-quant-fixtures.py) as one list for the CPU and CUDA
// suites: the dense llama variants (reference.json, one prompt set) and the mixture-of-experts variants
// (reference-moe.json, each with its model's prompts), each with the model its adapters belong to.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FIXTURES, type Case, type Reference } from './hf-reference.ts';

export const QUANT = join(FIXTURES, 'models-quant');

export interface QuantVariant {
  name: string;
  /** The 16-bit fixture it was quantized from (test/fixtures/models/<model>, adapters/<model>). */
  model: string;
  /** Directory under models-quant, or null for a quantize-at-load variant of the 16-bit model. */
  dir: string | null;
  quantize: string | null;
  ref: Reference;
  /** Linear layers the loader must pack: every projection of the checkpoint (expert ones included), no router. */
  layers: number;
}

interface Stored { dir: string | null; quantize: string | null; cases: Case[]; model?: string; prompts?: Reference['prompts'] }

const LAYERS: Record<string, number> = {
  llama: 14, // 2 layers x 7 projections
  mixtral: 32, // 2 x (4 attention + 4 experts x w1/w2/w3)
  'qwen2-moe': 38, // 2 x (4 + 4 experts x 3 + the shared expert's 3)
  'qwen3-moe': 32, // 2 x (4 + 4 experts x 3)
};

export function quantVariants(): QuantVariant[] {
  const read = (f: string) => JSON.parse(readFileSync(join(QUANT, f), 'utf-8')) as { prompts?: Reference['prompts']; variants: Record<string, Stored> };
  const out: QuantVariant[] = [];
  for (const file of ['reference.json', 'reference-moe.json']) {
    const r = read(file);
    for (const [name, v] of Object.entries(r.variants)) {
      const model = v.model ?? 'llama';
      out.push({ name, model, dir: v.dir, quantize: v.quantize, ref: { prompts: v.prompts ?? r.prompts!, cases: v.cases }, layers: LAYERS[model]! });
    }
  }
  return out;
}
