// The transformers + PEFT references for LoRA on lm_head and embed_tokens (issue 17), made by
// scripts/make-lora-extra-fixtures.py on the GPU machine: reference/<model>-lora-extra.json beside
// the adapters in adapters/<model>/. Missing files are an error that says how to make them.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { FIXTURES, loadReference, type Reference } from './hf-reference.ts';

/** llama: separate head; gemma2: tied head, embeddings scaled by sqrt(hidden), final soft-capping. */
export const LORA_EXTRA_MODELS = ['llama', 'gemma2'] as const;

export function loadLoraExtraReference(model: string): Reference {
  const file = join(FIXTURES, 'reference', `${model}-lora-extra.json`);
  if (!existsSync(file)) {
    throw new Error(`${file} is missing: run scripts/make-lora-extra-fixtures.py (torch, transformers and peft) and commit what it writes`);
  }
  const ref = loadReference(`${model}-lora-extra`);
  for (const a of new Set(ref.cases.map((c) => c.adapter))) {
    if (a !== null && !existsSync(join(FIXTURES, 'adapters', model, a, 'adapter_config.json'))) {
      throw new Error(`adapter ${a} of ${file} is missing from test/fixtures/adapters/${model}: rerun scripts/make-lora-extra-fixtures.py`);
    }
  }
  return ref;
}
