// Adapter merging against PEFT's add_weighted_adapter, written out here as plain float64 loops from
// peft/tuners/lora/model.py (_generalized_task_arithmetic_weighted_adapter, the "cat" branch) and
// peft/utils/merge_utils.py (task_arithmetic, magnitude_prune, ties, dare_*), independently of merge.ts.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { NativeAdapterSpec, NativeLoraModule, NativeTensorRef } from '../../native/addon.d.ts';
import { openModelDir, type ModelDir } from '../../native/model-dir.ts';
import { openPeftAdapter, type PeftAdapter } from '../../native/peft-adapter.ts';
import { readSafetensorsHeader, writeSafetensors } from '../../native/safetensors.ts';
import { readTensorF32 } from '../../native/tensor-data.ts';
import { writeRandomAdapter, writeRandomModel } from '../../test/helpers/random-model.ts';
import {
  catAdapters,
  factorWeights,
  magnitudePrune,
  mergeAdapters,
  randomPrune,
  seededUniform,
  type MajoritySignMethod,
  type MergeSource,
} from './merge.ts';
import { AdapterError } from './source.ts';

// ---------------------------------------------------------------------------
// Reference (float64, plain loops)
// ---------------------------------------------------------------------------

interface Src {
  a: Float64Array; // [r, in]
  b: Float64Array; // [out, r]
  r: number;
  inF: number;
  outF: number;
  s: number;
}

async function srcOf(m: NativeLoraModule): Promise<Src> {
  return {
    a: Float64Array.from(await readTensorF32(m.a)),
    b: Float64Array.from(await readTensorF32(m.b)),
    r: m.rank,
    inF: m.a.shape[1]!,
    outF: m.b.shape[0]!,
    s: m.scale,
  };
}

/** scale · B · A as [out, in]. */
function product(b: ArrayLike<number>, a: ArrayLike<number>, r: number, inF: number, outF: number, scale: number): Float64Array {
  const d = new Float64Array(outF * inF);
  for (let o = 0; o < outF; o++) {
    for (let i = 0; i < inF; i++) {
      let acc = 0;
      for (let k = 0; k < r; k++) acc += b[o * r + k]! * a[k * inF + i]!;
      d[o * inF + i] = scale * acc;
    }
  }
  return d;
}

async function effectiveDelta(m: NativeLoraModule): Promise<Float64Array> {
  const s = await srcOf(m);
  return product(s.b, s.a, s.r, s.inF, s.outF, m.scale);
}

/** PEFT's weight split: ωA = sign(w·s)·sqrt(|w·s|), ωB = sqrt(|w·s|). */
function split(w: number, s: number): [number, number] {
  const ws = w * s;
  return [(ws >= 0 ? 1 : -1) * Math.sqrt(Math.abs(ws)), Math.sqrt(Math.abs(ws))];
}

/** magnitude_based_pruning: keep the int(density·n) largest |values|. */
function refPrune(t: Float64Array, density: number): Float64Array {
  if (density >= 1) return t.slice();
  const k = Math.trunc(density * t.length);
  const order = Array.from(t.keys()).sort((x, y) => Math.abs(t[y]!) - Math.abs(t[x]!) || x - y);
  const out = new Float64Array(t.length);
  for (const i of order.slice(0, k)) out[i] = t[i]!;
  return out;
}

type Rule = 'linear' | 'magnitude_prune' | 'ties';

/** One factor merged the way merge_utils does it. */
function refCombine(rule: Rule, ts: Float64Array[], ws: number[], density: number, method: MajoritySignMethod): Float64Array {
  const pruned = rule === 'linear' ? ts : ts.map((t) => refPrune(t, density));
  const n = ts[0]!.length;
  const out = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    if (rule !== 'ties') {
      for (let i = 0; i < ts.length; i++) out[j] += ws[i]! * pruned[i]![j]!;
      continue;
    }
    let vote = 0;
    for (const t of pruned) vote += method === 'total' ? t[j]! : Math.sign(t[j]!);
    const maj = vote >= 0 ? 1 : -1;
    let sum = 0, count = 0;
    for (let i = 0; i < ts.length; i++) {
      if (Math.sign(pruned[i]![j]!) === maj) {
        sum += ws[i]! * pruned[i]![j]!;
        count++;
      }
    }
    out[j] = sum / Math.max(count, 1);
  }
  return out;
}

/** The merged module's delta by PEFT's task-arithmetic family (new adapter scaling `scale`, 1 without rslora). */
function refTaskArithmetic(rule: Rule, srcs: Src[], weights: number[], density: number, method: MajoritySignMethod, scale = 1): Float64Array {
  const w = srcs.map((s, i) => split(weights[i]!, s.s));
  const a = refCombine(rule, srcs.map((s) => s.a), w.map(([x]) => x), density, method);
  const b = refCombine(rule, srcs.map((s) => s.b), w.map(([, y]) => y), density, method);
  const s0 = srcs[0]!;
  return product(b, a, s0.r, s0.inF, s0.outF, scale);
}

/** PEFT's cat: Σ w_i s_i B_i A_i (times the new adapter's scaling). */
function refCat(srcs: Src[], weights: number[], scale = 1): Float64Array {
  const s0 = srcs[0]!;
  const d = new Float64Array(s0.outF * s0.inF);
  srcs.forEach((s, i) => {
    const p = product(s.b, s.a, s.r, s.inF, s.outF, weights[i]! * s.s * scale);
    for (let j = 0; j < d.length; j++) d[j] += p[j]!;
  });
  return d;
}

function assertClose(actual: Float64Array, expected: Float64Array, rel: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: size`);
  let maxAbs = 0, maxErr = 0;
  for (let i = 0; i < expected.length; i++) {
    maxAbs = Math.max(maxAbs, Math.abs(expected[i]!));
    maxErr = Math.max(maxErr, Math.abs(actual[i]! - expected[i]!));
  }
  assert.ok(maxAbs > 0, `${what}: reference is all zeros`);
  assert.ok(maxErr <= rel * maxAbs, `${what}: max abs error ${maxErr} > ${rel} × ${maxAbs}`);
}

// ---------------------------------------------------------------------------
// Fixtures: a random model and PEFT-layout adapters for it
// ---------------------------------------------------------------------------

let modelDir: string;
let model: ModelDir;
let tmp: string;
const REL = 2e-6;

async function adapter(name: string, opts: { r: number; alpha: number; targets: string[]; seed: number }, patch: Record<string, unknown> = {}): Promise<PeftAdapter> {
  const dir = await writeRandomAdapter(modelDir, name, opts);
  if (Object.keys(patch).length > 0) {
    const file = path.join(dir, 'adapter_config.json');
    await writeFile(file, JSON.stringify({ ...JSON.parse(await readFile(file, 'utf8')), ...patch }));
  }
  return openPeftAdapter(dir, model);
}

const key = (m: { layer: number; module: string }) => `${m.layer}.${m.module}`;
function find(spec: NativeAdapterSpec, k: string): NativeLoraModule | undefined {
  return spec.modules.find((m) => key(m) === k);
}

/** Checks every merged module against `ref(present sources, their weights)`. */
async function checkModules(
  merged: NativeAdapterSpec,
  sources: PeftAdapter[],
  weights: number[],
  ref: (srcs: Src[], ws: number[]) => Float64Array,
  rel = REL,
): Promise<void> {
  const keys = [...new Set(sources.flatMap((s) => s.spec.modules.map(key)))].sort();
  assert.deepEqual(merged.modules.map(key).sort(), keys, 'merged modules = union of the sources');
  for (const m of merged.modules) {
    assert.equal(m.a.dtype, 'F32');
    assert.ok(m.a.data instanceof Float32Array && m.b.data instanceof Float32Array, 'inline data');
    assert.deepEqual(m.a.shape, [m.rank, m.a.data.length / m.rank]);
    const srcs: Src[] = [], ws: number[] = [];
    for (const [i, s] of sources.entries()) {
      const sm = find(s.spec, key(m));
      if (sm) {
        srcs.push(await srcOf(sm));
        ws.push(weights[i]!);
      }
    }
    assertClose(await effectiveDelta(m), ref(srcs, ws), rel, key(m));
  }
}

before(async () => {
  modelDir = await writeRandomModel({ seed: 7 });
  model = await openModelDir(modelDir);
  tmp = await mkdtemp(path.join(os.tmpdir(), 'sb-merge-'));
});

after(async () => {
  await rm(modelDir, { recursive: true, force: true });
  await rm(tmp, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------
// readTensorF32
// ---------------------------------------------------------------------------

describe('readTensorF32', () => {
  test('reads F32, F16 and BF16 file refs and passes inline data through', async () => {
    const values = Float32Array.from([0, 1, -2, 0.5, -0.25, 3, 1024, -0.125]);
    const file = path.join(tmp, 'dtypes.safetensors');
    await writeSafetensors(file, (['F32', 'F16', 'BF16'] as const).map((dtype) => ({ name: `t.${dtype}`, dtype, shape: [2, 4], data: values })));
    const header = await readSafetensorsHeader(file);
    for (const dtype of ['F32', 'F16', 'BF16'] as const) {
      const e = header.tensors.get(`t.${dtype}`)!;
      const ref: NativeTensorRef = { name: e.name, dtype, shape: e.shape, file, offset: e.offset, nbytes: e.nbytes };
      assert.deepEqual(await readTensorF32(ref), values, dtype);
    }
    const data = Float32Array.from([1, 2, 3]);
    assert.equal(await readTensorF32({ name: 'x', dtype: 'F32', shape: [3], data }), data);
  });

  test('errors name the tensor and the file', async () => {
    const file = path.join(tmp, 'short.safetensors');
    await writeSafetensors(file, [{ name: 'w', dtype: 'F32', shape: [4], data: new Float32Array(4) }]);
    const e = (await readSafetensorsHeader(file)).tensors.get('w')!;
    await assert.rejects(
      readTensorF32({ name: 'w', dtype: 'F32', shape: [8], file, offset: e.offset, nbytes: 32 }),
      (err: Error) => err.message.includes('tensor w in ' + file) && /file ends before the tensor/.test(err.message),
    );
    await assert.rejects(
      readTensorF32({ name: 'w', dtype: 'F32', shape: [4], file, offset: e.offset, nbytes: 8 }),
      /tensor w in .*: 8 bytes for F32 \[4\], which needs 16/,
    );
    await assert.rejects(
      readTensorF32({ name: 'w', dtype: 'F32', shape: [4], file: path.join(tmp, 'nope'), offset: 0, nbytes: 16 }),
      /tensor w in .*nope: cannot open/,
    );
    await assert.rejects(readTensorF32({ name: 'v', dtype: 'F32', shape: [2, 2], data: new Float32Array(3) }), /tensor v: inline data has 3 values but shape \[2, 2\] needs 4/);
  });
});

// ---------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------

describe('pruning and weights', () => {
  test('factorWeights puts the sign on A and splits |w·s| as a square root', () => {
    const [a, b] = factorWeights(-0.5, 2);
    assert.ok(a < 0 && b > 0);
    assert.ok(Math.abs(a * b - -1) < 1e-6);
    assert.deepEqual(factorWeights(0, 3), [0, 0]);
  });

  test('magnitudePrune keeps k = int(density · numel) largest magnitudes (Python int truncation)', () => {
    const kept = (n: number, density: number) => {
      const t = Float32Array.from({ length: n }, (_, i) => (i % 2 ? -1 : 1) * (i + 1));
      return magnitudePrune(t, density).reduce((c, v) => c + (v !== 0 ? 1 : 0), 0);
    };
    assert.equal(kept(10, 0.55), 5);
    assert.equal(kept(7, 0.29), 2); // 2.03
    assert.equal(kept(10, 0.7), 7); // 7.000000000000001
    assert.equal(kept(100, 0.57), 56); // 0.57 * 100 = 56.99999999999999 in float64, int() -> 56
    assert.equal(kept(10, 0), 0);
    assert.equal(kept(10, 1), 10);
    const t = Float32Array.from([0.1, -5, 3, -0.2, 4, 0]);
    assert.deepEqual([...magnitudePrune(t, 0.5)], [0, -5, 3, 0, 4, 0]);
    assert.deepEqual([...t], [...Float32Array.from([0.1, -5, 3, -0.2, 4, 0])], 'input untouched');
    // Exact ties at the threshold: lowest indices first.
    assert.deepEqual([...magnitudePrune(Float32Array.from([1, -2, 2, -2, 0.5]), 0.4)], [0, -2, 2, 0, 0]);
  });

  test('randomPrune keeps ≈ density of the values, each divided by density; seeded and deterministic', () => {
    const n = 200_000, d = 0.3;
    const t = Float32Array.from({ length: n }, (_, i) => 1 + (i % 13));
    const p = randomPrune(t, d, seededUniform(42, 1, 2));
    let kept = 0;
    for (let i = 0; i < n; i++) {
      if (p[i] !== 0) {
        kept++;
        assert.equal(p[i], Math.fround(t[i]! / d));
      }
    }
    const sigma = Math.sqrt((d * (1 - d)) / n);
    assert.ok(Math.abs(kept / n - d) < 5 * sigma, `kept fraction ${kept / n}`);
    // Expected value preserved: mean of pruned ≈ mean of original.
    const mean = (x: Float32Array) => x.reduce((s, v) => s + v, 0) / x.length;
    assert.ok(Math.abs(mean(p) / mean(t) - 1) < 0.01);
    assert.deepEqual(randomPrune(t, d, seededUniform(42, 1, 2)), p, 'same seed and stream, same mask');
    assert.notDeepEqual(randomPrune(t, d, seededUniform(43, 1, 2)), p, 'another seed, another mask');
    assert.notDeepEqual(randomPrune(t, d, seededUniform(42, 1, 3)), p, 'another stream, another mask');
    assert.deepEqual(randomPrune(t.subarray(0, 10), 1, seededUniform(1)), t.subarray(0, 10), 'density 1: no pruning, no rescale');
  });
});

// ---------------------------------------------------------------------------
// mergeAdapters vs PEFT's formulas
// ---------------------------------------------------------------------------

describe('mergeAdapters', () => {
  let a1: PeftAdapter, a2: PeftAdapter, a3: PeftAdapter, r8: PeftAdapter;
  before(async () => {
    // Different alphas (scales 2, 1 and 0.5), overlapping targets: q_proj in all, v / k / up in some.
    a1 = await adapter('a1', { r: 4, alpha: 8, targets: ['q_proj', 'v_proj'], seed: 11 });
    a2 = await adapter('a2', { r: 4, alpha: 4, targets: ['q_proj', 'k_proj'], seed: 12 });
    a3 = await adapter('a3', { r: 4, alpha: 2, targets: ['q_proj', 'v_proj', 'up_proj'], seed: 13 });
    r8 = await adapter('r8', { r: 8, alpha: 16, targets: ['q_proj', 'o_proj'], seed: 14 });
  });

  test('linear: (Σ √|w s| B_i)(Σ sign·√|w s| A_i) with scale 1, modules of any source, each source scaled by its own alpha/r', async () => {
    const weights = [0.7, -0.5, 1.3];
    const merged = await mergeAdapters([a1, a2, a3], weights, 'linear', 0, 'total');
    for (const m of merged.modules) {
      assert.equal(m.scale, 1);
      assert.equal(m.rank, 4);
    }
    await checkModules(merged, [a1, a2, a3], weights, (s, w) => refTaskArithmetic('linear', s, w, 0, 'total'));
    // PEFT's linear is not the sum of the deltas (cross terms B_i A_j), where several adapters share a module.
    const q = find(merged, '0.q_proj')!;
    const srcs = await Promise.all([a1, a2, a3].map((a) => srcOf(find(a.spec, '0.q_proj')!)));
    const naive = refCat(srcs, weights);
    const got = await effectiveDelta(q);
    assert.ok(got.some((v, i) => Math.abs(v - naive[i]!) > 1e-3), 'cross terms present');
  });

  test('a single adapter is merged linearly whatever the strategy: w · s · B A', async () => {
    for (const strategy of ['ties', 'dare_ties', 'cat'] as const) {
      const merged = await mergeAdapters([a1], [0.6], strategy, 0.5, 'total');
      await checkModules(merged, [a1], [0.6], (s, w) => refCat(s, w));
    }
  });

  for (const method of ['total', 'frequency'] as const) {
    test(`ties, density 0.5, majority_sign_method ${method}`, async () => {
      const weights = [0.7, 0.5, -0.4];
      const merged = await mergeAdapters([a1, a2, a3], weights, 'ties', 0.5, method);
      assert.ok(merged.modules.every((m) => m.scale === 1 && m.rank === 4));
      await checkModules(merged, [a1, a2, a3], weights, (s, w) => refTaskArithmetic('ties', s, w, 0.5, method));
      // Where one source has a module alone, TIES reduces to its weighted, magnitude-pruned factors.
      const k = find(merged, '1.k_proj')!;
      const src = await srcOf(find(a2.spec, '1.k_proj')!);
      const [wa, wb] = split(0.5, src.s);
      const a = refPrune(src.a, 0.5).map((v) => v * wa);
      const b = refPrune(src.b, 0.5).map((v) => v * wb);
      assertClose(await effectiveDelta(k), product(b, a, 4, src.inF, src.outF, 1), REL, 'k_proj alone');
      const pruned = (await readTensorF32(k.a)).filter((v) => v !== 0).length;
      assert.equal(pruned, Math.trunc(0.5 * k.a.data!.length));
    });
  }

  test('ties: total and frequency differ on real data, density 1 still elects signs', async () => {
    const tot = await mergeAdapters([a1, a2, a3], [1, 1, 1], 'ties', 0.5, 'total');
    const freq = await mergeAdapters([a1, a2, a3], [1, 1, 1], 'ties', 0.5, 'frequency');
    assert.notDeepEqual(find(tot, '0.q_proj')!.a.data, find(freq, '0.q_proj')!.a.data);
    const full = await mergeAdapters([a1, a2], [0.7, 0.5], 'ties', 1, 'total');
    await checkModules(full, [a1, a2], [0.7, 0.5], (s, w) => refTaskArithmetic('ties', s, w, 1, 'total'));
  });

  test('magnitude_prune: Σ ω_i prune_topk(T_i) on each factor', async () => {
    const weights = [0.8, -0.3];
    const merged = await mergeAdapters([a1, a3], weights, 'magnitude_prune', 0.3, 'total');
    await checkModules(merged, [a1, a3], weights, (s, w) => refTaskArithmetic('magnitude_prune', s, w, 0.3, 'total'));
  });

  test('dare_linear / dare_ties: density 1 is linear / ties; below 1, each factor element is a masked, 1/density-rescaled sum', async () => {
    const weights = [0.7, 0.5];
    const dl = await mergeAdapters([a1, a2], weights, 'dare_linear', 1, 'total');
    await checkModules(dl, [a1, a2], weights, (s, w) => refTaskArithmetic('linear', s, w, 1, 'total'));
    const dt = await mergeAdapters([a1, a2], weights, 'dare_ties', 1, 'frequency');
    await checkModules(dt, [a1, a2], weights, (s, w) => refTaskArithmetic('ties', s, w, 1, 'frequency'));

    const d = 0.4;
    const merged = await mergeAdapters([a1, a2], weights, 'dare_linear', d, 'total', { seed: 5 });
    assert.deepEqual(await mergeAdapters([a1, a2], weights, 'dare_linear', d, 'total', { seed: 5 }), merged, 'same seed, same merge');
    const other = await mergeAdapters([a1, a2], weights, 'dare_linear', d, 'total', { seed: 6 });
    assert.notDeepEqual(find(other, '0.q_proj')!.a.data, find(merged, '0.q_proj')!.a.data, 'other seed, other masks');
    // q_proj has both sources: every A element must be m1·ωA1·A1/d + m2·ωA2·A2/d for some masks m ∈ {0,1}².
    let kept = 0, total = 0;
    for (let layer = 0; layer < 2; layer++) {
      const q = find(merged, `${layer}.q_proj`)!;
      const got = await readTensorF32(q.a);
      const s1 = await srcOf(find(a1.spec, `${layer}.q_proj`)!), s2 = await srcOf(find(a2.spec, `${layer}.q_proj`)!);
      const w1 = split(0.7, s1.s)[0], w2 = split(0.5, s2.s)[0];
      for (let j = 0; j < got.length; j++) {
        const x1 = (w1 * s1.a[j]!) / d, x2 = (w2 * s2.a[j]!) / d;
        const options: [number, number, number][] = [[0, 0, 0], [1, 0, x1], [0, 1, x2], [1, 1, x1 + x2]];
        const match = options.find(([, , v]) => Math.abs(v - got[j]!) <= 1e-5 * (1 + Math.abs(v)));
        assert.ok(match, `element ${j} of layer ${layer} q_proj A is no masked combination`);
        kept += match[0] + match[1];
        total += 2;
      }
    }
    assert.ok(Math.abs(kept / total - d) < 0.08, `kept fraction ${kept / total}`);
    // dare_ties keeps the same masks (same seed) and then elects signs.
    const ties = await mergeAdapters([a1, a2], weights, 'dare_ties', d, 'total', { seed: 5 });
    assert.equal(ties.modules.length, merged.modules.length);
  });

  test('cat: any ranks, rank Σ r_i, delta Σ w_i s_i B_i A_i exactly', async () => {
    const weights = [0.7, -0.5, 0.9];
    const merged = await mergeAdapters([a1, r8, a3], weights, 'cat', 0, 'total');
    await checkModules(merged, [a1, r8, a3], weights, (s, w) => refCat(s, w));
    assert.equal(find(merged, '0.q_proj')!.rank, 16);
    assert.equal(find(merged, '0.o_proj')!.rank, 8);
    assert.equal(find(merged, '0.v_proj')!.rank, 8);
    assert.ok(merged.modules.every((m) => m.scale === 1));
    assert.deepEqual(await catAdapters([a1, r8, a3], weights), merged);
  });

  test('lm_head and embed_tokens LoRA merge like the projections (layer -1, PEFT\'s module names for targeting)', async () => {
    const h1 = await adapter('h1', { r: 4, alpha: 8, targets: ['q_proj', 'lm_head', 'embed_tokens'], seed: 41 });
    const h2 = await adapter('h2', { r: 4, alpha: 4, targets: ['lm_head'], seed: 42 });
    assert.deepEqual(h1.spec.modules.map(key), ['-1.embed_tokens', '0.q_proj', '1.q_proj', '-1.lm_head']);
    for (const [kind, ref] of [['linear', (s: Src[], w: number[]) => refTaskArithmetic('linear', s, w, 0, 'total')], ['cat', (s: Src[], w: number[]) => refCat(s, w)]] as const) {
      const merged = await mergeAdapters([h1, h2, a1], [0.7, -0.5, 0.9], kind, 0, 'total');
      assert.deepEqual(merged.modules.map(key), ['-1.embed_tokens', '0.q_proj', '0.v_proj', '1.q_proj', '1.v_proj', '-1.lm_head']);
      await checkModules(merged, [h1, h2, a1], [0.7, -0.5, 0.9], ref);
    }
  });

  test('use_rslora on the first adapter: the merged adapter scales by sqrt(new r) (alpha = r, alpha/sqrt(r))', async () => {
    const rs = await adapter('rs', { r: 4, alpha: 8, targets: ['q_proj'], seed: 21 }, { use_rslora: true });
    assert.equal(rs.spec.modules[0]!.scale, 4); // 8 / sqrt(4)
    const merged = await mergeAdapters([rs, a2], [0.7, 0.5], 'linear', 0, 'total');
    assert.ok(merged.modules.every((m) => m.scale === 2));
    await checkModules(merged, [rs, a2], [0.7, 0.5], (s, w) => refTaskArithmetic('linear', s, w, 0, 'total', 2));
    const cat = await mergeAdapters([rs, r8], [0.7, 0.5], 'cat', 0, 'total');
    assert.ok(cat.modules.every((m) => m.scale === Math.sqrt(12)));
    await checkModules(cat, [rs, r8], [0.7, 0.5], (s, w) => refCat(s, w, Math.sqrt(12)));
    // Only the first adapter's use_rslora counts (PEFT copies its config).
    const second = await mergeAdapters([a2, rs], [0.5, 0.7], 'linear', 0, 'total');
    assert.ok(second.modules.every((m) => m.scale === 1));
  });

  test('targeting follows PEFT: union of target_modules, the first adapter\'s layers_to_transform', async () => {
    const l0 = await adapter('l0', { r: 4, alpha: 4, targets: ['q_proj', 'v_proj'], seed: 31 }, { layers_to_transform: [0] });
    assert.deepEqual(l0.spec.modules.map(key), ['0.q_proj', '0.v_proj']);
    const merged = await mergeAdapters([l0, a2], [1, 1], 'linear', 0, 'total');
    assert.deepEqual(merged.modules.map(key), ['0.q_proj', '0.k_proj', '0.v_proj']);
    const reversed = await mergeAdapters([a2, l0], [1, 1], 'linear', 0, 'total');
    assert.deepEqual(reversed.modules.map(key), ['0.q_proj', '0.k_proj', '0.v_proj', '1.q_proj', '1.k_proj']);
    // Specs without configs: every module any source has.
    const bare = await mergeAdapters([{ spec: l0.spec }, { spec: a2.spec }], [1, 1], 'linear', 0, 'total');
    assert.equal(bare.modules.length, 5);
  });

  test('errors: no adapters, weight count, unequal ranks, bad density, unknown strategy', async () => {
    const is = (status: number, re: RegExp) => (err: unknown) => err instanceof AdapterError && err.status === status && re.test(err.message);
    await assert.rejects(mergeAdapters([], [], 'linear', 0, 'total'), is(400, /at least one adapter/));
    await assert.rejects(mergeAdapters([a1, a2], [1], 'linear', 0, 'total'), is(400, /2 adapters, 1 weights/));
    await assert.rejects(mergeAdapters([a1, a2], [1, NaN], 'linear', 0, 'total'), is(400, /not a finite number/));
    for (const s of ['linear', 'ties', 'dare_linear', 'dare_ties', 'magnitude_prune'] as const) {
      await assert.rejects(
        mergeAdapters([{ ...a1, name: 'first' }, { ...r8, name: 'second' }], [1, 1], s, 0.5, 'total'),
        is(422, new RegExp(`"${s}" needs adapters of equal rank .*r=4 \\(first\\), r=8 \\(second\\)`)),
      );
    }
    await assert.rejects(mergeAdapters([a1, a2], [1, 1], 'ties', -0.1, 'total'), is(400, /density must be a number >= 0/));
    await assert.rejects(mergeAdapters([a1, a2], [1, 1], 'dare_linear', 0, 'total'), is(400, /density must be > 0 for dare_linear/));
    await assert.rejects(mergeAdapters([a1, a2], [1, 1], 'svd' as never, 0, 'total'), is(400, /unknown merge strategy "svd"/));
    await assert.rejects(mergeAdapters([a1, a2], [1, 1], 'ties', 0.5, 'mean' as never), is(400, /majority_sign_method/));
    // Equal config-level r (PEFT's check) but a module of another rank (rank_pattern): torch.stack would fail.
    const q = find(a1.spec, '0.q_proj')!;
    const [qa, qb] = [await readTensorF32(q.a), await readTensorF32(q.b)];
    const inF = q.a.shape[1]!, outF = q.b.shape[0]!;
    const low: NativeLoraModule = {
      ...q,
      rank: 2,
      a: { name: 'a', dtype: 'F32', shape: [2, inF], data: qa.slice(0, 2 * inF) },
      b: { name: 'b', dtype: 'F32', shape: [outF, 2], data: Float32Array.from({ length: outF * 2 }, (_, j) => qb[Math.floor(j / 2) * 4 + (j % 2)]!) },
    };
    const patterned: MergeSource = { spec: { modules: [low] }, config: { ...a1.config, rankPattern: { q_proj: 2 } }, name: 'patterned' };
    await assert.rejects(
      mergeAdapters([patterned, a2], [1, 1], 'ties', 0.5, 'total'),
      is(422, /merging layers\.0\.self_attn\.q_proj: merging needs equal ranks for this strategy, got r=2 \(patterned\), r=4 \(adapters\[1\]\); use "cat"/),
    );
    const cat = await mergeAdapters([patterned, a2], [1, 1], 'cat', 0, 'total');
    assert.equal(find(cat, '0.q_proj')!.rank, 6);
  });

  test('the merged spec is self-contained (inline data) and mergeable again', async () => {
    const once = await mergeAdapters([a1, a2], [0.5, 0.5], 'linear', 0, 'total');
    const twice = await mergeAdapters([{ spec: once }], [2], 'linear', 0, 'total');
    for (const m of twice.modules) assertClose(await effectiveDelta(m), (await effectiveDelta(find(once, key(m))!)).map((v) => 2 * v), REL, key(m));
  });
});
