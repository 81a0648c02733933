// Which quantization a model is served with: config.json's quantization_config (pre-quantized checkpoints)
// and --quantize (LoRAX's names). The checkpoint decides; --quantize must agree with it, or, on a 16-bit
// checkpoint, names a method that quantizes at load. Everything else is refused by name.

/** --quantize values (LoRAX's names). */
export const QUANTIZE_METHODS = ['awq', 'gptq', 'fp8', 'bitsandbytes', 'bitsandbytes-nf4', 'bitsandbytes-fp4'] as const;
export type QuantizeMethod = (typeof QUANTIZE_METHODS)[number];

export function isQuantizeMethod(v: string): v is QuantizeMethod {
  return (QUANTIZE_METHODS as readonly string[]).includes(v);
}

/** Why a --quantize value cannot be served (undefined: it can, given a checkpoint that fits). */
export function refuseQuantizeValue(v: string): string | undefined {
  if (v === 'none' || isQuantizeMethod(v)) return undefined;
  return `"${v}" is not supported (supported: ${QUANTIZE_METHODS.join(', ')})`;
}

export type QuantScheme =
  | { method: 'awq'; bits: 4; groupSize: number }
  | { method: 'gptq'; bits: 2 | 4 | 8; groupSize: number; descAct: boolean; sym: boolean; zeroOffset: 0 | 1 }
  | { method: 'fp8'; source: 'compressed-tensors' | 'fbgemm_fp8' | 'fp8'; blockSize: [number, number] | null }
  | { method: 'fp8-at-load' }
  | { method: 'bitsandbytes' | 'bitsandbytes-nf4' | 'bitsandbytes-fp4' };

/** One line for logs: what was loaded and how. */
export function describeScheme(s: QuantScheme): string {
  switch (s.method) {
    case 'awq': return `AWQ ${s.bits}-bit (GEMM layout), group size ${s.groupSize}`;
    case 'gptq': return `GPTQ ${s.bits}-bit, group size ${s.groupSize}, ${s.sym ? 'symmetric' : 'asymmetric'}${s.descAct ? ', act-order' : ''}, ${s.zeroOffset ? 'v1' : 'v2'} format`;
    case 'fp8': return `FP8 e4m3 (${s.source}${s.blockSize ? `, blocks of ${s.blockSize.join('x')}` : ''})`;
    case 'fp8-at-load': return 'FP8 e4m3, per-channel scales, quantized at load';
    case 'bitsandbytes': return 'int8 row-wise absmax (LLM.int8 weights, no outlier decomposition), quantized at load';
    case 'bitsandbytes-nf4': return 'NF4, blocks of 64 with fp32 absmax, quantized at load';
    case 'bitsandbytes-fp4': return 'FP4 (bitsandbytes), blocks of 64 with fp32 absmax, quantized at load';
  }
}

type Json = Record<string, unknown>;
const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

function parseAwq(qc: Json, at: string): QuantScheme {
  const version = String(qc.version ?? 'gemm').toLowerCase();
  if (version !== 'gemm') throw new Error(`${at}: AWQ version "${qc.version}" is not supported (only the GEMM layout)`);
  const bits = num(qc.bits ?? qc.w_bit);
  if (bits !== 4) throw new Error(`${at}: AWQ with ${String(qc.bits ?? qc.w_bit)} bits is not supported (only 4)`);
  if (qc.zero_point === false) throw new Error(`${at}: AWQ without zero points (zero_point: false) is not supported`);
  const groupSize = num(qc.group_size ?? qc.q_group_size);
  if (groupSize === undefined || !Number.isInteger(groupSize) || groupSize < 1) {
    throw new Error(`${at}: AWQ needs a positive group_size (got ${String(qc.group_size ?? qc.q_group_size)})`);
  }
  return { method: 'awq', bits: 4, groupSize };
}

function parseGptq(qc: Json, at: string): QuantScheme {
  const bits = num(qc.bits);
  if (bits !== 2 && bits !== 4 && bits !== 8) throw new Error(`${at}: GPTQ with ${String(qc.bits)} bits is not supported (2, 4 or 8)`);
  const format = String(qc.checkpoint_format ?? qc.format ?? 'gptq');
  if (qc.is_marlin_format === true || (format !== 'gptq' && format !== 'gptq_v2')) {
    throw new Error(`${at}: GPTQ checkpoint format "${qc.is_marlin_format === true ? 'marlin' : format}" is not supported (gptq or gptq_v2)`);
  }
  const g = num(qc.group_size) ?? -1;
  if (!Number.isInteger(g) || (g < 1 && g !== -1)) throw new Error(`${at}: GPTQ group_size ${String(qc.group_size)} is invalid`);
  return { method: 'gptq', bits, groupSize: g, descAct: qc.desc_act === true, sym: qc.sym !== false, zeroOffset: format === 'gptq' ? 1 : 0 };
}

function parseCompressedTensors(qc: Json, at: string): QuantScheme {
  const format = String(qc.format ?? '');
  if (format !== 'float-quantized' && format !== 'naive-quantized') {
    throw new Error(`${at}: compressed-tensors format "${format}" is not supported (only FP8 weights: float-quantized)`);
  }
  const groups = isObj(qc.config_groups) ? Object.values(qc.config_groups) : [];
  if (groups.length === 0) throw new Error(`${at}: compressed-tensors config has no config_groups`);
  let blockSize: [number, number] | null = null;
  for (const g of groups) {
    const w = isObj(g) && isObj(g.weights) ? g.weights : null;
    if (w === null || w.type !== 'float' || w.num_bits !== 8) {
      throw new Error(`${at}: compressed-tensors weights other than 8-bit float are not supported (got ${JSON.stringify(w)})`);
    }
    const strategy = String(w.strategy ?? 'tensor');
    if (strategy === 'block') {
      const bs = w.block_structure;
      if (!Array.isArray(bs) || bs.length !== 2 || !bs.every((d) => Number.isInteger(d) && (d as number) > 0)) {
        throw new Error(`${at}: FP8 block strategy needs block_structure [rows, cols]`);
      }
      blockSize = [bs[0] as number, bs[1] as number];
    } else if (strategy !== 'tensor' && strategy !== 'channel') {
      throw new Error(`${at}: FP8 weight strategy "${strategy}" is not supported (tensor, channel or block)`);
    }
  }
  return { method: 'fp8', source: 'compressed-tensors', blockSize };
}

function parseFineGrainedFp8(qc: Json, at: string): QuantScheme {
  const bs = qc.weight_block_size;
  if (bs == null) return { method: 'fp8', source: 'fp8', blockSize: null };
  if (!Array.isArray(bs) || bs.length !== 2 || !bs.every((d) => Number.isInteger(d) && (d as number) > 0)) {
    throw new Error(`${at}: weight_block_size must be [rows, cols]`);
  }
  return { method: 'fp8', source: 'fp8', blockSize: [bs[0] as number, bs[1] as number] };
}

/** The --quantize name a checkpoint's quant_method corresponds to. */
const FLAG_OF: Record<string, QuantizeMethod> = { awq: 'awq', gptq: 'gptq', 'compressed-tensors': 'fp8', fbgemm_fp8: 'fp8', fp8: 'fp8' };

/**
 * The scheme to load with, or null for plain 16/32-bit weights. `config` is config.json as parsed JSON;
 * `quantize` the --quantize value (undefined or "none": follow the checkpoint). `at` names config.json in errors.
 */
export function resolveQuantization(config: unknown, quantize: string | undefined, at = 'config.json'): QuantScheme | null {
  const flag = quantize === 'none' ? undefined : quantize;
  if (flag !== undefined && !isQuantizeMethod(flag)) throw new Error(`--quantize ${refuseQuantizeValue(flag)}`);
  const qc = isObj(config) ? config.quantization_config : undefined;
  if (qc == null) {
    if (flag === undefined) return null;
    if (flag === 'awq' || flag === 'gptq') {
      throw new Error(`--quantize ${flag} needs a ${flag.toUpperCase()} checkpoint, but ${at} has no quantization_config (serve a pre-quantized ${flag.toUpperCase()} model, or use bitsandbytes-nf4 / fp8 to quantize this one at load)`);
    }
    return flag === 'fp8' ? { method: 'fp8-at-load' } : { method: flag };
  }
  if (!isObj(qc)) throw new Error(`${at}: quantization_config is not an object`);
  const method = String(qc.quant_method ?? '');
  const asFlag = FLAG_OF[method];
  if (asFlag === undefined) {
    const hint = method === 'bitsandbytes' ? ' (pre-quantized bitsandbytes checkpoints are not supported: serve the 16-bit model with --quantize bitsandbytes-nf4)' : '';
    throw new Error(`${at}: quantization method "${method}" is not supported (supported checkpoints: awq, gptq, compressed-tensors fp8, fbgemm_fp8, fp8)${hint}`);
  }
  if (flag !== undefined && flag !== asFlag) {
    throw new Error(`--quantize ${flag} contradicts the checkpoint, which ${at} says is ${method}-quantized (drop --quantize, or pass --quantize ${asFlag})`);
  }
  switch (method) {
    case 'awq': return parseAwq(qc, at);
    case 'gptq': return parseGptq(qc, at);
    case 'compressed-tensors': return parseCompressedTensors(qc, at);
    case 'fbgemm_fp8': return { method: 'fp8', source: 'fbgemm_fp8', blockSize: null };
    default: return parseFineGrainedFp8(qc, at);
  }
}
