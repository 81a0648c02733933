#!/usr/bin/env python3
"""Quantized-checkpoint fixtures for Switchboard (issue 19): the tiny llama fixture written in each
on-disk format the server loads, and reference outputs computed on the DEQUANTISED weights.

Usage (from the repository root):

    python3 scripts/make-quant-fixtures.py pack        # numpy only: writes test/fixtures/models-quant/<variant>/
    python3 scripts/make-quant-fixtures.py reference   # torch + transformers + peft: writes .../reference.json
                                                       # and reference-moe.json (`reference-moe`: that one only)

`pack` quantizes test/fixtures/models/llama (bf16) with the formats' own conventions (layouts taken from
the published reference code of each format; this is an independent numpy implementation):
  awq                 AutoAWQ GEMM: qweight int32 [in, out/8] (nibble order 0,2,4,6,1,3,5,7), qzeros likewise
                      [in/g, out/8], scales fp16 [in/g, out]; asymmetric, 4 bit, group 32
  gptq-4bit           AutoGPTQ v1 ("gptq" checkpoint_format): qweight int32 [in*bits/32, out] packed along the
                      input dim, qzeros int32 [groups, out*bits/32] holding zero-1, scales fp16, g_idx int32;
                      asymmetric, group 32, no act-order
  gptq-4bit-actorder  the same, symmetric, desc_act (g_idx a permuted group map)
  gptq-8bit           8 bit, asymmetric, group 32
  fp8-tensor          compressed-tensors float-quantized, per-tensor weight_scale F32 [1]
  fp8-channel         compressed-tensors float-quantized, per-channel weight_scale BF16 [out, 1]
  fp8-block           transformers fine-grained fp8 (quant_method "fp8"), weight_scale_inv F32 [out/32, in/32]
Quantize-at-load variants (no files; the engine quantizes the 16-bit base itself, --quantize NAME):
  bitsandbytes-nf4, bitsandbytes-fp4 (blocks of 64 over the flattened weight, fp32 absmax),
  bitsandbytes (LLM.int8 weights: row-wise absmax int8, no outlier decomposition), fp8 (per-channel e4m3).
Mixtures of experts, one published layout each, from test/fixtures/models/<model> (group 16; routers 16-bit):
  mixtral-awq          AWQ GEMM as above on block_sparse_moe.experts.E.w1/w2/w3 and attention
  qwen2-moe-gptq-4bit  GPTQ v1 4-bit symmetric on mlp.experts.E.*_proj, mlp.shared_expert.*_proj and attention
  qwen3-moe-fp8-block  transformers fine-grained fp8 (weight_block_size [16, 16]) on experts and attention

`reference` rebuilds every variant's dequantised weights here in numpy FROM THE PACKED FILES (or, for the
at-load variants, by quantizing the base), loads them into transformers' LlamaForCausalLM in float32 on CPU,
applies PEFT adapters trained on the 16-bit base, and records prompt logprobs, top-5 and 16 greedy tokens
per prompt of test/fixtures/reference/llama.json, in the same shape as that file's cases.
"""

import argparse
import json
import shutil
import struct
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "test/fixtures/models/llama"
OUT = ROOT / "test/fixtures/models-quant"
ADAPTERS = ROOT / "test/fixtures/adapters/llama"
PROMPTS_FROM = ROOT / "test/fixtures/reference/llama.json"
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GROUP = 32
SEED = 1919

# ---------------------------------------------------------------- safetensors (raw, numpy only)

NP_OF = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "U8": np.uint8, "F8_E4M3": np.uint8, "BF16": np.uint16}


def read_safetensors(path):
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        raw = np.frombuffer(data[8 + n + a:8 + n + b], dtype=NP_OF[e["dtype"]]).reshape(e["shape"])
        out[name] = (e["dtype"], raw)
    return out


def write_safetensors(path, tensors):
    """tensors: name -> (dtype string, numpy array already holding that dtype's bytes)."""
    header, blobs, cursor = {}, [], 0
    for name in sorted(tensors):
        dtype, arr = tensors[name]
        blob = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [cursor, cursor + len(blob)]}
        blobs.append(blob)
        cursor += len(blob)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def bf16_to_f32(u16):
    return (u16.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x):
    u = np.asarray(x, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def as_f32(entry):
    dtype, raw = entry
    if dtype == "BF16":
        return bf16_to_f32(raw)
    if dtype in ("F16", "F32"):
        return raw.astype(np.float32)
    raise ValueError(dtype)


def load_base():
    idx = json.loads((BASE / "model.safetensors.index.json").read_text())["weight_map"]
    out = {}
    for f in sorted(set(idx.values())):
        out.update(read_safetensors(BASE / f))
    return out


def linear_names(config):
    return [f"model.layers.{l}.{'mlp' if m in ('gate_proj', 'up_proj', 'down_proj') else 'self_attn'}.{m}"
            for l in range(config["num_hidden_layers"]) for m in MODULES]


# ---------------------------------------------------------------- float8 e4m3fn

def e4m3_values():
    b = np.arange(256)
    s = np.where(b >> 7, -1.0, 1.0)
    e = (b >> 3) & 0xF
    m = b & 7
    v = np.where(e == 0, m / 8 * 2.0 ** -6, (1 + m / 8) * 2.0 ** (e - 7)) * s
    v[(e == 15) & (m == 7)] = np.nan
    return v.astype(np.float32)


E4M3 = e4m3_values()


def e4m3_encode(x):
    """Round-to-nearest-even onto e4m3fn codes, saturating at +-448 (x float32)."""
    x = np.clip(np.asarray(x, dtype=np.float32), -448, 448)
    pos = E4M3[:0x7F]  # codes 0..126 ascending, 0 .. 448
    a = np.abs(x)
    hi = np.clip(np.searchsorted(pos, a, side="left"), 1, 126)
    lo = hi - 1
    d_lo = a - pos[lo]
    d_hi = pos[hi] - a
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (hi % 2 == 0))
    code = np.where(pick_hi, hi, lo).astype(np.uint8)
    code = np.where(a == 0, 0, code).astype(np.uint8)
    return np.where(x < 0, code | 0x80, code).astype(np.uint8)


def e4m3_decode(codes):
    return E4M3[codes.astype(np.int64)]


# ---------------------------------------------------------------- AWQ (GEMM)

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def awq_pack(int_cols):
    """[rows, cols] ints 0..15 -> int32 [rows, cols/8]: nibble i holds column AWQ_ORDER[i] of each 8."""
    rows, cols = int_cols.shape
    packed = np.zeros((rows, cols // 8), dtype=np.uint32)
    for i in range(8):
        packed |= int_cols[:, AWQ_ORDER[i]::8].astype(np.uint32) << np.uint32(4 * i)
    return packed.view(np.int32)


def awq_unpack(packed):
    u = packed.view(np.uint32)
    rows, pc = u.shape
    out = np.zeros((rows, pc * 8), dtype=np.int64)
    for i in range(8):
        out[:, AWQ_ORDER[i]::8] = (u >> np.uint32(4 * i)) & 0xF
    return out


def awq_quantize(w, group=GROUP):
    out_f, in_f = w.shape
    g = w.reshape(out_f, in_f // group, group)
    mx, mn = g.max(axis=2), g.min(axis=2)
    scales = (np.maximum(mx - mn, 1e-5) / 15).astype(np.float16).astype(np.float32)
    zeros = np.clip(-np.round(mn / scales), 0, 15)
    q = np.clip(np.round(g / scales[:, :, None]) + zeros[:, :, None], 0, 15).reshape(out_f, in_f).astype(np.int64)
    return {
        "qweight": ("I32", awq_pack(q.T)),
        "qzeros": ("I32", awq_pack(zeros.T.astype(np.int64))),
        "scales": ("F16", scales.T.astype(np.float16)),
    }


def awq_dequant(t, group):
    q = awq_unpack(t["qweight"][1])            # [in, out]
    z = awq_unpack(t["qzeros"][1])             # [in/g, out]
    s = t["scales"][1].astype(np.float32)      # [in/g, out]
    gi = np.arange(q.shape[0]) // group
    return ((q - z[gi]).astype(np.float32) * s[gi]).T.copy()


# ---------------------------------------------------------------- GPTQ (v1 checkpoint format)

def gptq_pack_rows(ints, bits):
    """[rows, cols] -> int32 [rows*bits/32, cols]: value j of a word sits at bit bits*j (input dim packing)."""
    per = 32 // bits
    rows, cols = ints.shape
    u = (ints.astype(np.int64) & ((1 << bits) - 1)).astype(np.uint32).reshape(rows // per, per, cols)
    packed = np.zeros((rows // per, cols), dtype=np.uint32)
    for j in range(per):
        packed |= u[:, j, :] << np.uint32(bits * j)
    return packed.view(np.int32)


def gptq_pack_cols(ints, bits):
    return gptq_pack_rows(ints.T, bits).T.copy()


def gptq_unpack_rows(packed, bits):
    per = 32 // bits
    u = packed.view(np.uint32)
    out = np.zeros((u.shape[0], per, u.shape[1]), dtype=np.int64)
    for j in range(per):
        out[:, j, :] = (u >> np.uint32(bits * j)) & ((1 << bits) - 1)
    return out.reshape(u.shape[0] * per, u.shape[1])


def gptq_quantize(w, bits, sym, act_order, rng, group=GROUP):
    out_f, in_f = w.shape
    maxq = (1 << bits) - 1
    ngroups = in_f // group
    perm = rng.permutation(in_f) if act_order else np.arange(in_f)
    g_idx = np.empty(in_f, dtype=np.int32)
    g_idx[perm] = np.arange(in_f) // group  # column perm[k] was the k-th processed: group k // group
    scales = np.zeros((ngroups, out_f), dtype=np.float32)
    zeros = np.zeros((ngroups, out_f), dtype=np.int64)
    for gi in range(ngroups):
        cols = w[:, g_idx == gi]
        xmin = np.minimum(cols.min(axis=1), 0)
        xmax = np.maximum(cols.max(axis=1), 0)
        if sym:
            xmax = np.maximum(np.abs(xmin), xmax)
            xmin = np.where(xmin < 0, -xmax, xmin)
        flat = (xmin == 0) & (xmax == 0)
        xmin, xmax = np.where(flat, -1, xmin), np.where(flat, 1, xmax)
        s = ((xmax - xmin) / maxq).astype(np.float16).astype(np.float32)
        z = np.full(out_f, (maxq + 1) // 2) if sym else np.round(-xmin / s).astype(np.int64)
        scales[gi], zeros[gi] = s, z
    # v1 stores zero - 1; a zero of 0 would wrap (the format's known flaw), so the fixture must not have one.
    assert zeros.min() >= 1, "a zero point of 0 cannot be stored in the gptq v1 format"
    q = np.clip(np.round(w / scales[g_idx].T) + zeros[g_idx].T, 0, maxq).astype(np.int64)  # [out, in]
    return {
        "qweight": ("I32", gptq_pack_rows(q.T, bits)),
        "qzeros": ("I32", gptq_pack_cols(zeros - 1, bits)),
        "scales": ("F16", scales.astype(np.float16)),
        "g_idx": ("I32", g_idx),
    }


def gptq_dequant(t, bits):
    q = gptq_unpack_rows(t["qweight"][1], bits)                 # [in, out]
    z = gptq_unpack_rows(t["qzeros"][1].T.copy(), bits).T + 1    # [groups, out], v1: stored + 1
    s = t["scales"][1].astype(np.float32)
    g = t["g_idx"][1].astype(np.int64)
    return (s[g] * (q - z[g]).astype(np.float32)).T.copy()


# ---------------------------------------------------------------- FP8

def fp8_quantize(w, strategy, scale_dtype="F32", group=GROUP):
    out_f, in_f = w.shape
    if strategy == "tensor":
        s = np.array([np.abs(w).max() / 448], dtype=np.float32)
        full = np.full_like(w, s[0])
        stored = ("F32", s)
    elif strategy == "channel":
        s = (np.abs(w).max(axis=1, keepdims=True) / 448).astype(np.float32)
        if scale_dtype == "BF16":
            stored = ("BF16", f32_to_bf16(s))
            s = bf16_to_f32(stored[1])
        else:
            stored = ("F32", s)
        full = np.broadcast_to(s, w.shape)
    else:  # block of group x group
        b = w.reshape(out_f // group, group, in_f // group, group)
        s = (np.abs(b).max(axis=(1, 3)) / 448).astype(np.float32)
        stored = ("F32", s)
        full = np.repeat(np.repeat(s, group, axis=0), group, axis=1)
    codes = e4m3_encode((w / full).astype(np.float32))
    return codes, stored


def fp8_dequant(codes, scale, block=None):
    v = e4m3_decode(codes)
    s = scale.astype(np.float32)
    if s.size == 1:
        return (v * s.reshape(())).astype(np.float32)
    if s.ndim == 2 and s.shape[1] == 1 or s.ndim == 1:
        return (v * s.reshape(-1, 1)).astype(np.float32)
    full = np.repeat(np.repeat(s, block[0], axis=0), block[1], axis=1)[: v.shape[0], : v.shape[1]]
    return (v * full).astype(np.float32)


# ---------------------------------------------------------------- bitsandbytes-style, at load

NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0], dtype=np.float32)
# bitsandbytes' FP4 (1 sign, 2 exponent, 1 mantissa bit, normalised to a maximum of 1), by 4-bit code.
FP4 = np.array([0, 0.0625 / 12, 8 / 12, 1.0, 4 / 12, 6 / 12, 2 / 12, 3 / 12], dtype=np.float32)
FP4 = np.concatenate([FP4, -FP4])


def nearest_code(norm, table):
    """Index of the nearest table value; an exact midpoint goes to the smaller value."""
    order = np.argsort(table, kind="stable")
    vals = table[order]
    mids = ((vals[:-1] + vals[1:]) / np.float32(2)).astype(np.float32)
    pos = np.searchsorted(mids, norm, side="left")  # norm > mid -> upper
    return order[pos]


def bnb4_dequant(w, table, block=64):
    flat = w.reshape(-1).astype(np.float32)
    n = flat.size
    pad = (-n) % block
    blocks = np.concatenate([flat, np.zeros(pad, np.float32)]).reshape(-1, block)
    absmax = np.abs(blocks).max(axis=1).astype(np.float32)
    safe = np.where(absmax == 0, np.float32(1), absmax)
    norm = (blocks / safe[:, None]).astype(np.float32)
    idx = nearest_code(norm, table)
    out = (table[idx] * absmax[:, None]).astype(np.float32)
    return out.reshape(-1)[:n].reshape(w.shape)


def int8_dequant(w):
    scb = np.abs(w).max(axis=1, keepdims=True).astype(np.float32)
    safe = np.where(scb == 0, np.float32(1), scb)
    q = np.clip(np.round(w * (np.float32(127) / safe)), -127, 127).astype(np.float32)
    return ((q * scb) / np.float32(127)).astype(np.float32)


def fp8_at_load(w):
    codes, (_, s) = fp8_quantize(w, "channel")
    return fp8_dequant(codes, s)


AT_LOAD = {
    "bitsandbytes-nf4": lambda w: bnb4_dequant(w, NF4),
    "bitsandbytes-fp4": lambda w: bnb4_dequant(w, FP4),
    "bitsandbytes": int8_dequant,
    "fp8": fp8_at_load,
}

# ---------------------------------------------------------------- variants

PACKED = {
    "awq": {"quant_method": "awq", "bits": 4, "group_size": GROUP, "zero_point": True, "version": "gemm"},
    "gptq-4bit": {"quant_method": "gptq", "bits": 4, "group_size": GROUP, "desc_act": False, "sym": False,
                  "checkpoint_format": "gptq"},
    "gptq-4bit-actorder": {"quant_method": "gptq", "bits": 4, "group_size": GROUP, "desc_act": True, "sym": True,
                           "checkpoint_format": "gptq"},
    "gptq-8bit": {"quant_method": "gptq", "bits": 8, "group_size": GROUP, "desc_act": False, "sym": False,
                  "checkpoint_format": "gptq"},
    "fp8-tensor": {"quant_method": "compressed-tensors", "format": "float-quantized", "quantization_status": "compressed",
                   "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None, "output_activations": None,
                                                 "weights": {"num_bits": 8, "type": "float", "strategy": "tensor",
                                                             "symmetric": True, "dynamic": False}}},
                   "ignore": ["lm_head"]},
    "fp8-channel": {"quant_method": "compressed-tensors", "format": "float-quantized", "quantization_status": "compressed",
                    "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None, "output_activations": None,
                                                  "weights": {"num_bits": 8, "type": "float", "strategy": "channel",
                                                              "symmetric": True, "dynamic": False}}},
                    "ignore": ["lm_head"]},
    "fp8-block": {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [GROUP, GROUP]},
}


def pack(args):
    config = json.loads((BASE / "config.json").read_text())
    base = load_base()
    rng = np.random.default_rng(SEED)
    for variant, qc in PACKED.items():
        d = OUT / variant
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        tensors = {}
        lin = set(linear_names(config))
        for name, entry in base.items():
            prefix = name[: -len(".weight")] if name.endswith(".weight") else None
            if prefix not in lin:
                tensors[name] = entry
                continue
            w = as_f32(entry)
            if variant == "awq":
                parts = awq_quantize(w)
            elif variant.startswith("gptq"):
                parts = gptq_quantize(w, qc["bits"], qc["sym"], qc["desc_act"], rng)
            else:
                strategy = variant.split("-")[1]
                codes, scale = fp8_quantize(w, strategy, "BF16" if strategy == "channel" else "F32")
                parts = {"weight": ("F8_E4M3", codes), "weight_scale_inv" if strategy == "block" else "weight_scale": scale}
            for k, v in parts.items():
                tensors[f"{prefix}.{k}"] = v
        write_safetensors(d / "model.safetensors", tensors)
        cfg = dict(config)
        cfg["quantization_config"] = qc
        cfg["dtype"] = "float16" if variant in ("awq",) or variant.startswith("gptq") else config.get("dtype")
        (d / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
            shutil.copy(BASE / f, d / f)
        print(f"{variant}: {sum(p.stat().st_size for p in d.iterdir())} bytes in {d.relative_to(ROOT)}")


# ---------------------------------------------------------------- reference

def dequantised_state(variant):
    """float32 state dict of a variant, decoded from its files (or quantized from the base at load)."""
    config = json.loads((BASE / "config.json").read_text())
    lin = set(linear_names(config))
    if variant in AT_LOAD:
        base = load_base()
        out = {}
        for name, entry in base.items():
            w = as_f32(entry)
            out[name] = AT_LOAD[variant](w) if name[: -len(".weight")] in lin else w
        return out
    qc = PACKED[variant]
    t = read_safetensors(OUT / variant / "model.safetensors")
    out = {}
    for prefix in lin:
        parts = {k[len(prefix) + 1:]: v for k, v in t.items() if k.startswith(prefix + ".")}
        if variant == "awq":
            out[prefix + ".weight"] = awq_dequant(parts, qc["group_size"])
        elif variant.startswith("gptq"):
            out[prefix + ".weight"] = gptq_dequant(parts, qc["bits"])
        else:
            scale = parts.get("weight_scale", parts.get("weight_scale_inv"))
            s = bf16_to_f32(scale[1]) if scale[0] == "BF16" else scale[1]
            out[prefix + ".weight"] = fp8_dequant(parts["weight"][1], s, qc.get("weight_block_size"))
    for name, entry in t.items():
        if name.rsplit(".", 1)[0] not in lin:
            out[name] = as_f32(entry)
    return out


def reference(args):
    import torch
    import transformers
    import peft
    from transformers import AutoConfig, AutoModelForCausalLM
    from peft import PeftModel

    torch.manual_seed(0)
    prompts = json.loads(PROMPTS_FROM.read_text())["prompts"]
    adapters = [None, "r8-qv", "r16-all"]
    config = AutoConfig.from_pretrained(BASE)
    result = {
        "model": "llama", "transformers": transformers.__version__, "peft": peft.__version__, "torch": torch.__version__,
        "notes": "float32 forward (CPU) of transformers' LlamaForCausalLM on weights dequantised by this script's numpy "
                 "decoders; PEFT adapters trained on the 16-bit base; same case shape as test/fixtures/reference",
        "prompts": prompts, "variants": {},
    }

    for variant in list(PACKED) + list(AT_LOAD):
        state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in dequantised_state(variant).items()}
        cases = []
        for adapter in adapters:
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            missing, unexpected = model.load_state_dict(state, strict=False)
            assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
            if adapter is not None:
                model = PeftModel.from_pretrained(model, str(ADAPTERS / adapter))
            model.eval()
            cases += reference_cases(model, prompts, adapter)
        result["variants"][variant] = {"dir": variant if variant in PACKED else None,
                                       "quantize": variant if variant in AT_LOAD else None, "cases": cases}
        print(f"{variant}: {len(cases)} cases", flush=True)
    (OUT / "reference.json").write_text(json.dumps(result) + "\n")

# ---------------------------------------------------------------- mixtures of experts

# One published MoE layout per format, from the tiny MoE fixtures. As the published checkpoints do, every
# expert's and shared expert's projection is quantized, and the routers (Mixtral's block_sparse_moe.gate,
# Qwen-MoE's mlp.gate and mlp.shared_expert_gate) stay 16-bit: they are not *_proj modules, and AutoAWQ /
# AutoGPTQ / transformers' fp8 leave them out (modules_to_not_convert: ["gate"] in AutoAWQ's Mixtral
# configs). Groups of 16 divide every tiny dimension (64, 48, 32).
MOE_GROUP = 16
MOE = {
    "mixtral-awq": ("mixtral", {"quant_method": "awq", "bits": 4, "group_size": MOE_GROUP, "zero_point": True,
                                "version": "gemm", "modules_to_not_convert": ["gate"]}),
    "qwen2-moe-gptq-4bit": ("qwen2-moe", {"quant_method": "gptq", "bits": 4, "group_size": MOE_GROUP, "desc_act": False,
                                          "sym": True, "checkpoint_format": "gptq"}),
    "qwen3-moe-fp8-block": ("qwen3-moe", {"quant_method": "fp8", "activation_scheme": "dynamic",
                                          "weight_block_size": [MOE_GROUP, MOE_GROUP],
                                          "modules_to_not_convert": ["lm_head"]}),
}
MOE_ADAPTERS = [None, "r8-qv", "r4-experts"]


def moe_quantized(name):
    """The checkpoint's 2-D projections the quantizer converts: attention, experts, shared expert."""
    return (".layers." in name and name.endswith(".weight")
            and (name.endswith("_proj.weight") or any(name.endswith(f".{w}.weight") for w in ("w1", "w2", "w3"))))


def moe_base(model):
    return read_safetensors(ROOT / "test/fixtures/models" / model / "model.safetensors")


def pack_moe(args):
    rng = np.random.default_rng(SEED + 1)
    for variant, (model, qc) in MOE.items():
        src = ROOT / "test/fixtures/models" / model
        d = OUT / variant
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        tensors = {}
        for name, entry in moe_base(model).items():
            if not moe_quantized(name):
                tensors[name] = entry
                continue
            prefix, w = name[: -len(".weight")], as_f32(entry)
            if qc["quant_method"] == "awq":
                parts = awq_quantize(w, MOE_GROUP)
            elif qc["quant_method"] == "gptq":
                parts = gptq_quantize(w, qc["bits"], qc["sym"], qc["desc_act"], rng, MOE_GROUP)
            else:
                codes, scale = fp8_quantize(w, "block", group=MOE_GROUP)
                parts = {"weight": ("F8_E4M3", codes), "weight_scale_inv": scale}
            for k, v in parts.items():
                tensors[f"{prefix}.{k}"] = v
        write_safetensors(d / "model.safetensors", tensors)
        cfg = json.loads((src / "config.json").read_text())
        cfg["quantization_config"] = qc
        (d / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(src / f, d / f)
        print(f"{variant}: {sum(p.stat().st_size for p in d.iterdir())} bytes in {d.relative_to(ROOT)}")


def dequantised_moe(variant):
    """float32 tensors of an MoE variant under the 16-bit checkpoint's names, decoded from its files."""
    qc = MOE[variant][1]
    t = read_safetensors(OUT / variant / "model.safetensors")
    prefixes = {k.rsplit(".", 1)[0] for k in t if k.endswith((".qweight", ".weight_scale_inv"))}
    out = {}
    for prefix in prefixes:
        parts = {k[len(prefix) + 1:]: v for k, v in t.items() if k.startswith(prefix + ".") and "." not in k[len(prefix) + 1:]}
        if qc["quant_method"] == "awq":
            w = awq_dequant(parts, qc["group_size"])
        elif qc["quant_method"] == "gptq":
            w = gptq_dequant(parts, qc["bits"])
        else:
            w = fp8_dequant(parts["weight"][1], parts["weight_scale_inv"][1], qc["weight_block_size"])
        out[prefix + ".weight"] = w.astype(np.float32)
    for name, entry in t.items():
        prefix, part = name.rsplit(".", 1)
        if prefix not in prefixes or part not in ("qweight", "qzeros", "scales", "g_idx", "weight", "weight_scale_inv"):
            out[name] = as_f32(entry)  # 16-bit tensors, a quantized projection's bias included
    return out


def reference_moe(args):
    """reference-moe.json: transformers' own MoE classes (from_pretrained converts the per-expert tensors)."""
    import tempfile
    import torch
    import transformers
    import peft
    from transformers import AutoModelForCausalLM
    from peft import PeftModel

    torch.manual_seed(0)
    result = {"transformers": transformers.__version__, "peft": peft.__version__, "torch": torch.__version__,
              "notes": "float32 forward (CPU) of transformers' MoE models on weights dequantised by this script's numpy "
                       "decoders (routers 16-bit as stored); PEFT adapters trained on the 16-bit base",
              "variants": {}}
    for variant, (model_name, qc) in MOE.items():
        prompts = json.loads((ROOT / "test/fixtures/reference" / f"{model_name}.json").read_text())["prompts"]
        with tempfile.TemporaryDirectory() as tmp:
            cfg = json.loads((ROOT / "test/fixtures/models" / model_name / "config.json").read_text())
            (Path(tmp) / "config.json").write_text(json.dumps(cfg))
            write_safetensors(Path(tmp) / "model.safetensors",
                              {k: ("F32", np.ascontiguousarray(v, dtype=np.float32)) for k, v in dequantised_moe(variant).items()})
            cases = []
            for adapter in MOE_ADAPTERS:
                model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32)
                if adapter is not None:
                    model = PeftModel.from_pretrained(model, str(ROOT / "test/fixtures/adapters" / model_name / adapter))
                model.eval()
                got = reference_cases(model, prompts, adapter)
                # transformers' own bfloat16 run on the same weights: where bf16 rounding flips a near-tied router
                # choice, logprobs move by tenths without a bug; the GPU suite allows a bf16 case this much.
                m16 = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.bfloat16)
                if adapter is not None:
                    m16 = PeftModel.from_pretrained(m16, str(ROOT / "test/fixtures/adapters" / model_name / adapter))
                m16.eval()
                for c in got:
                    ids = prompts[c["prompt"]]["ids"]
                    with torch.no_grad():
                        lp16 = torch.log_softmax(m16(torch.tensor([ids])).logits[0].double(), dim=-1)
                    c["bf16_drift"] = float(f"{max(abs(lp16[i - 1, ids[i]].item() - c['prompt_logprobs'][i - 1]) for i in range(1, len(ids))):.6g}")
                cases += got
        result["variants"][variant] = {"model": model_name, "dir": variant, "quantize": None, "prompts": prompts, "cases": cases}
        print(f"{variant}: {len(cases)} cases", flush=True)
    (OUT / "reference-moe.json").write_text(json.dumps(result) + "\n")


def reference_cases(model, prompts, adapter):
    import torch

    def run(ids):
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0].float()

    cases = []
    for pi, p in enumerate(prompts):
        ids = list(p["ids"])
        logits = run(ids)
        lp = torch.log_softmax(logits.double(), dim=-1)
        prompt_lp = [round(lp[i - 1, ids[i]].item(), 7) for i in range(1, len(ids))]
        top = torch.topk(logits[-1], 6)
        top5 = [int(i) for i in top.indices[:5].tolist()]
        g_ids, g_lps, margins, seq = [], [], [], list(ids)
        for _ in range(16):
            step = run(seq)[-1]
            two = torch.topk(step, 2).values
            margins.append((two[0] - two[1]).item())
            tok = int(torch.argmax(step).item())
            g_ids.append(tok)
            g_lps.append(round(torch.log_softmax(step.double(), dim=-1)[tok].item(), 7))
            seq.append(tok)
        cases.append({"adapter": adapter, "prompt": pi, "prompt_logprobs": prompt_lp,
                      "top5": {"ids": top5, "logprobs": [round(lp[-1, i].item(), 7) for i in top5],
                               "min_gap": float(min(top.values[i] - top.values[i + 1] for i in range(5)))},
                      "greedy": {"ids": g_ids, "logprobs": g_lps, "min_margin": min(margins)}})
    return cases


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", choices=["pack", "reference", "reference-moe"])
    a = ap.parse_args()
    if a.phase == "pack":
        pack(a)
        pack_moe(a)
    elif a.phase == "reference-moe":
        reference_moe(a)
    else:
        reference(a)
        reference_moe(a)
