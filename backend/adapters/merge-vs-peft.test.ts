// Our merge against adapters PEFT itself merged and saved: add_weighted_adapter(["r8-qv", "r8-qv-b"],
// [0.7, 0.5], combination_type=<type>, ...) on test/fixtures/models/llama, saved under
// test/fixtures/adapters/llama/merged-<type>/ by scripts/make-fixtures.py (ties: density 0.5,
// majority_sign_method "total"; magnitude_prune: density 0.5).
// Each module's effective delta scale · B · A must agree, the scale of PEFT's adapter coming from its own
// adapter_config.json through openPeftAdapter. A case whose merged-<type> directory does not exist yet is
// skipped; once it exists, missing sources or model are failures.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { NativeLoraModule } from '../../native/addon.d.ts';
import { openModelDir } from '../../native/model-dir.ts';
import { openPeftAdapter } from '../../native/peft-adapter.ts';
import { readTensorF32 } from '../../native/tensor-data.ts';
import { mergeAdapters, type CombinationType, type MajoritySignMethod } from './merge.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const MODEL_DIR = path.join(ROOT, 'test/fixtures/models/llama');
const ADAPTERS_DIR = path.join(ROOT, 'test/fixtures/adapters/llama');
const SOURCES = ['r8-qv', 'r8-qv-b'];
const WEIGHTS = [0.7, 0.5];

const CASES: { type: CombinationType; density: number; method: MajoritySignMethod }[] = [
  { type: 'linear', density: 0, method: 'total' },
  { type: 'cat', density: 0, method: 'total' },
  { type: 'ties', density: 0.5, method: 'total' },
  { type: 'magnitude_prune', density: 0.5, method: 'total' },
];

/** Relative tolerance by the dtype PEFT saved the merge in (it casts the merge back to the sources' dtype). */
const TOLERANCE: Record<string, number> = { F32: 1e-5, F16: 2e-3, BF16: 1e-2 };

async function delta(m: NativeLoraModule): Promise<Float64Array> {
  const a = await readTensorF32(m.a), b = await readTensorF32(m.b);
  const r = m.rank, inF = m.a.shape[1]!, outF = m.b.shape[0]!;
  const d = new Float64Array(outF * inF);
  for (let o = 0; o < outF; o++) {
    for (let i = 0; i < inF; i++) {
      let acc = 0;
      for (let k = 0; k < r; k++) acc += b[o * r + k]! * a[k * inF + i]!;
      d[o * inF + i] = m.scale * acc;
    }
  }
  return d;
}

const key = (m: NativeLoraModule) => `layers.${m.layer}.${m.module}`;

describe('mergeAdapters vs PEFT add_weighted_adapter (saved fixtures)', () => {
  for (const { type, density, method } of CASES) {
    const peftDir = path.join(ADAPTERS_DIR, `merged-${type}`);
    const skip = existsSync(peftDir) ? false : 'fixtures not generated yet';
    test(`${type}: every module's scale · B · A equals PEFT's`, { skip }, async () => {
      const model = await openModelDir(MODEL_DIR);
      const sources = await Promise.all(SOURCES.map((s) => openPeftAdapter(path.join(ADAPTERS_DIR, s), model)));
      const peft = await openPeftAdapter(peftDir, model);
      const ours = await mergeAdapters(sources, WEIGHTS, type, density, method);

      assert.deepEqual(ours.modules.map(key), peft.spec.modules.map(key), 'same modules');
      assert.ok(peft.spec.modules.length > 0, 'PEFT merge has modules');
      for (const [i, theirs] of peft.spec.modules.entries()) {
        const mine = ours.modules[i]!;
        // cat: PEFT sizes r as the sum of the config ranks and zero-fills; we never exceed it.
        if (type === 'cat') assert.ok(mine.rank <= theirs.rank, `${key(mine)}: rank ${mine.rank} > PEFT's ${theirs.rank}`);
        else assert.equal(mine.rank, theirs.rank, `${key(mine)}: rank`);
        const want = await delta(theirs), got = await delta(mine);
        let maxAbs = 0, maxErr = 0;
        for (let j = 0; j < want.length; j++) {
          maxAbs = Math.max(maxAbs, Math.abs(want[j]!));
          maxErr = Math.max(maxErr, Math.abs(got[j]! - want[j]!));
        }
        const tol = TOLERANCE[theirs.a.dtype] ?? 1e-5;
        assert.ok(maxAbs > 0, `${key(mine)}: PEFT's delta is all zeros`);
        assert.ok(maxErr <= tol * maxAbs, `${type} ${key(mine)}: max abs error ${maxErr} > ${tol} × max |ΔW| ${maxAbs}`);
      }
    });
  }
});
