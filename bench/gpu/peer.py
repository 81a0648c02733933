"""Ceilings and the PyTorch peer, measured in the same run as bench/gpu/bench.ts.

Ceilings: device-to-device copy bandwidth (bytes read + written) and dense bf16 matmul rate.
Peer: an eager PyTorch decode step at Mistral-7B's shapes in bf16 (torch.matmul for the base
GEMMs, scaled_dot_product_attention over a contiguous KV cache, gather + bmm for LoRA), batch 64
at 1K context, with no adapter and with 64 distinct rank-16 adapters on all seven projections.
Usage: python3 bench/gpu/peer.py --out ceilings.json
"""
import argparse, json, math
import torch
import torch.nn.functional as F

H, I, L, NH, NKV, D, V, R = 4096, 14336, 32, 32, 8, 128, 32000, 16


def med_ms(fn, warm=3, reps=10):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]


def ceilings():
    n = 1 << 30  # 2 GiB of bf16
    src = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    ms = med_ms(lambda: dst.copy_(src), 3, 20)
    copy_gbps = 2 * n * 2 / (ms / 1e3) / 1e9
    del src, dst
    m = 8192
    a = torch.randn(m, m, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(m, m, device="cuda", dtype=torch.bfloat16)
    ms = med_ms(lambda: a @ b, 3, 20)
    tflops = 2 * m ** 3 / (ms / 1e3) / 1e12
    return copy_gbps, tflops


def peer_decode(batch=64, ctx=1024, adapters=0):
    g = torch.Generator(device="cuda").manual_seed(0)
    def w(*shape):
        return (torch.randn(*shape, device="cuda", dtype=torch.bfloat16, generator=g) * 0.02)
    layers = [dict(qkv=w(NH * D + 2 * NKV * D, H), o=w(H, NH * D), gu=w(2 * I, H), d=w(H, I), n1=torch.ones(H, device="cuda", dtype=torch.bfloat16), n2=torch.ones(H, device="cuda", dtype=torch.bfloat16)) for _ in range(L)]
    emb, lm = w(V, H), w(V, H)
    kc = [torch.randn(batch, NKV, ctx, D, device="cuda", dtype=torch.bfloat16) for _ in range(L)]
    vc = [torch.randn(batch, NKV, ctx, D, device="cuda", dtype=torch.bfloat16) for _ in range(L)]
    dims = {"q": (H, NH * D), "k": (H, NKV * D), "v": (H, NKV * D), "o": (NH * D, H), "g": (H, I), "u": (H, I), "d": (I, H)}
    lora = None
    if adapters:
        lora = [{p: (w(adapters, R, i), w(adapters, o, R)) for p, (i, o) in dims.items()} for _ in range(L)]
    idx = torch.arange(batch, device="cuda") % max(adapters, 1)
    tokens = torch.randint(0, V, (batch,), device="cuda")

    def delta(l, p, x):
        A, B = lora[l][p]
        return torch.bmm(torch.bmm(x[:, None, :], A[idx].transpose(1, 2)), B[idx].transpose(1, 2))[:, 0] * 2.0

    def rms(x, wt):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(x.dtype) * wt

    @torch.no_grad()
    def step():
        x = emb[tokens]
        for l, Ly in enumerate(layers):
            h = rms(x, Ly["n1"])
            qkv = h @ Ly["qkv"].T
            q, k, v = qkv.split([NH * D, NKV * D, NKV * D], -1)
            if lora:
                q, k, v = q + delta(l, "q", h), k + delta(l, "k", h), v + delta(l, "v", h)
            kc[l][:, :, ctx - 1] = k.view(batch, NKV, D)
            vc[l][:, :, ctx - 1] = v.view(batch, NKV, D)
            a = F.scaled_dot_product_attention(q.view(batch, NH, 1, D), kc[l], vc[l], enable_gqa=True).reshape(batch, NH * D)
            o = a @ Ly["o"].T
            if lora:
                o = o + delta(l, "o", a)
            x = x + o
            h = rms(x, Ly["n2"])
            gu = h @ Ly["gu"].T
            gt, up = gu.split([I, I], -1)
            if lora:
                gt, up = gt + delta(l, "g", h), up + delta(l, "u", h)
            act = F.silu(gt) * up
            dd = act @ Ly["d"].T
            if lora:
                dd = dd + delta(l, "d", act)
            x = x + dd
        return (rms(x, layers[0]["n1"]) @ lm.T).argmax(-1)

    ms = med_ms(step)
    del layers, kc, vc, lora
    torch.cuda.empty_cache()
    return ms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    copy_gbps, tflops = ceilings()
    print(f"ceilings: copy {copy_gbps:.0f} GB/s, bf16 matmul {tflops:.0f} TFLOP/s")
    p0 = peer_decode(64, 1024, 0)
    p64 = peer_decode(64, 1024, 64)
    print(f"PyTorch eager decode, batch 64 @1K: {p0:.1f} ms/step no adapter ({64 / p0 * 1e3:.0f} tok/s), {p64:.1f} ms/step with 64 distinct rank-16 adapters ({64 / p64 * 1e3:.0f} tok/s)")
    json.dump({"device": torch.cuda.get_device_name(), "copy_gbps": copy_gbps, "matmul_tflops": tflops,
               "torch_decode_b64_ms": p0, "torch_decode_b64_64adapters_ms": p64}, open(a.out, "w"))


if __name__ == "__main__":
    main()
