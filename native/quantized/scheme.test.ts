// quantization_config + --quantize -> the scheme loaded, or a refusal naming what is wrong.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { refuseQuantizeValue, resolveQuantization } from './scheme.ts';

const cfg = (qc: unknown) => ({ hidden_size: 64, quantization_config: qc });
const ct = (weights: unknown, format = 'float-quantized') => ({ quant_method: 'compressed-tensors', format, config_groups: { group_0: { targets: ['Linear'], weights } } });

describe('resolveQuantization', () => {
  it('plain checkpoints: nothing, or a method that quantizes at load', () => {
    assert.equal(resolveQuantization({}, undefined), null);
    assert.equal(resolveQuantization({}, 'none'), null);
    assert.deepEqual(resolveQuantization({}, 'bitsandbytes-nf4'), { method: 'bitsandbytes-nf4' });
    assert.deepEqual(resolveQuantization({}, 'bitsandbytes'), { method: 'bitsandbytes' });
    assert.deepEqual(resolveQuantization({}, 'fp8'), { method: 'fp8-at-load' });
    assert.throws(() => resolveQuantization({}, 'awq'), /--quantize awq needs a AWQ checkpoint/);
    assert.throws(() => resolveQuantization({}, 'gptq'), /no quantization_config/);
  });

  it('reads AWQ, GPTQ and FP8 configs as transformers and the quantizers write them', () => {
    assert.deepEqual(resolveQuantization(cfg({ quant_method: 'awq', bits: 4, group_size: 128, zero_point: true, version: 'gemm' }), undefined), { method: 'awq', bits: 4, groupSize: 128 });
    assert.deepEqual(resolveQuantization(cfg({ quant_method: 'awq', w_bit: 4, q_group_size: 64, version: 'GEMM' }), 'awq'), { method: 'awq', bits: 4, groupSize: 64 });
    assert.deepEqual(resolveQuantization(cfg({ quant_method: 'gptq', bits: 8, group_size: -1, desc_act: true, sym: false }), 'gptq'), { method: 'gptq', bits: 8, groupSize: -1, descAct: true, sym: false, zeroOffset: 1 });
    assert.equal((resolveQuantization(cfg({ quant_method: 'gptq', bits: 4, group_size: 128, checkpoint_format: 'gptq_v2' }), undefined) as { zeroOffset: number }).zeroOffset, 0);
    assert.deepEqual(resolveQuantization(cfg(ct({ num_bits: 8, type: 'float', strategy: 'channel' })), 'fp8'), { method: 'fp8', source: 'compressed-tensors', blockSize: null });
    assert.deepEqual(resolveQuantization(cfg(ct({ num_bits: 8, type: 'float', strategy: 'block', block_structure: [128, 128] })), undefined), { method: 'fp8', source: 'compressed-tensors', blockSize: [128, 128] });
    assert.deepEqual(resolveQuantization(cfg({ quant_method: 'fbgemm_fp8' }), undefined), { method: 'fp8', source: 'fbgemm_fp8', blockSize: null });
    assert.deepEqual(resolveQuantization(cfg({ quant_method: 'fp8', weight_block_size: [128, 128] }), 'fp8'), { method: 'fp8', source: 'fp8', blockSize: [128, 128] });
  });

  it('refuses a --quantize that contradicts the checkpoint', () => {
    assert.throws(() => resolveQuantization(cfg({ quant_method: 'awq', bits: 4, group_size: 128 }), 'gptq'), /--quantize gptq contradicts the checkpoint, which config.json says is awq-quantized/);
    assert.throws(() => resolveQuantization(cfg({ quant_method: 'gptq', bits: 4, group_size: 128 }), 'bitsandbytes-nf4'), /contradicts/);
  });

  it('refuses other methods and layouts by name', () => {
    assert.throws(() => resolveQuantization({}, 'eetq'), /--quantize "eetq" is not supported \(supported: awq, gptq, fp8, bitsandbytes, bitsandbytes-nf4, bitsandbytes-fp4\)/);
    assert.throws(() => resolveQuantization(cfg({ quant_method: 'hqq' }), undefined), /quantization method "hqq" is not supported/);
    assert.throws(() => resolveQuantization(cfg({ quant_method: 'bitsandbytes', load_in_4bit: true }), undefined), /pre-quantized bitsandbytes checkpoints are not supported/);
    assert.throws(() => resolveQuantization(cfg({ quant_method: 'awq', bits: 4, group_size: 128, version: 'gemv' }), undefined), /AWQ version "gemv"/);
    assert.throws(() => resolveQuantization(cfg({ quant_method: 'gptq', bits: 3, group_size: 128 }), undefined), /3 bits/);
    assert.throws(() => resolveQuantization(cfg({ quant_method: 'gptq', bits: 4, group_size: 128, checkpoint_format: 'marlin' }), undefined), /format "marlin"/);
    assert.throws(() => resolveQuantization(cfg(ct({ num_bits: 4, type: 'int' }, 'pack-quantized')), undefined), /compressed-tensors format "pack-quantized"/);
  });

  it('--quantize values: LoRAX\'s names pass, anything else is refused by name', () => {
    for (const v of ['none', 'awq', 'gptq', 'fp8', 'bitsandbytes', 'bitsandbytes-nf4', 'bitsandbytes-fp4']) assert.equal(refuseQuantizeValue(v), undefined);
    assert.match(refuseQuantizeValue('exl2')!, /"exl2" is not supported/);
  });
});
