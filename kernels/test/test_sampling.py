"""sampling family (sampling.cuh, sampling.cu): logit rows to prompt logprobs, alternatives, greedy
and seeded sampling with mask / penalty / temperature / top-k / top-p, against a plain reference of
the same semantics (its draw is kernels/rng.h's, as on the host); plus a distribution check.
Usage: python3 kernels/test/test_sampling.py [--arch 90]"""
import math
import torch
from harness import RowFinish, main, p, run, uniform, verdict


def ref_choose(x, r, mask_bits, pen, bias=None):
    """The documented semantics of sampling.cuh, written plainly (float32 logits, exact int64 weights)."""
    z = x.clone()
    if mask_bits is not None:
        z[~mask_bits] = float("-inf")
    if pen:
        idx = torch.tensor(sorted(set(pen)), device=x.device).long()
        zz, pt = z[idx], torch.tensor(r.repetitionPenalty, device=x.device)
        z[idx] = torch.where(zz > 0, zz / pt, zz * pt)  # tensor / tensor: true division, as the kernel
    for t, v in (bias or {}).items():  # additive biases (logit_bias, frequency/presence penalties)
        z[t] = z[t] + torch.tensor(v, device=x.device)
    fin = z != float("-inf")
    if not fin.any():
        return -1
    if r.temperature <= 0:
        return int(torch.nonzero(z == z.max())[0])  # lowest id among the best
    z = z / torch.tensor(r.temperature, device=x.device)
    m = z[fin].max()
    w = torch.where(fin, torch.round(torch.exp(z - m) * 4294967296.0).double(), torch.zeros_like(z, dtype=torch.float64)).long()
    kept = fin.clone()
    if 0 < r.topK < int(fin.sum()):
        kept &= z >= torch.topk(z[fin], r.topK).values[-1]
    if r.topP < 1:
        total = int(w[kept].sum())
        want = min(max(math.ceil(r.topP * total), 1), total)
        order = torch.argsort(z[kept], descending=True, stable=True)
        zs, cw = z[kept][order], torch.cumsum(w[kept][order], 0)
        kept &= z >= zs[int(torch.nonzero(cw >= want)[0])]  # every tie of the edge value stays
    wk = torch.where(kept, w, torch.zeros_like(w))
    S = int(wk.sum())
    rr = min(int(uniform(r.seed, r.position) * S), S - 1)
    cum = torch.cumsum(wk, 0)
    return int(torch.nonzero(cum > rr)[0])


def test_finish_rows(lib):
    """Prompt logprobs, alternatives, greedy, and seeded sampling with mask / penalty / temperature /
    top-k / top-p, against a plain reference of the same semantics; plus a distribution check."""
    for vocab in (32000, 152064):
        gen = torch.Generator(device="cuda").manual_seed(vocab)
        rows = 48
        logits = torch.randn(rows, vocab, device="cuda", generator=gen) * 4
        logits[0, 100] = logits[0, 200] = 50.0  # a tie: the lower id wins, as torch.argmax
        logits[5, :300] = 30.0  # many ties at the k-th value: top-k keeps them all
        params = (RowFinish * rows)()
        masks, pens, mask_of, pen_of, bias_of = [], [], {}, {}, {}
        words = (vocab + 31) // 32
        for i in range(rows):
            r = params[i]
            r.seed, r.position = 1000 + i, 7 + 3 * i
            r.temperature = [0.0, 0.7, 1.0, 1.5][i % 4] if i > 0 else 0.0
            r.topP = [1.0, 0.9, 0.5, 1.0, 0.95][i % 5]
            r.repetitionPenalty = 1.0
            r.topK = [0, 50, 1, 0, 5, 0][i % 6] if i != 5 else 40
            r.maskOffset, r.penaltyOffset, r.penaltyCount = -1, 0, 0
            r.target = (i * 7919) % vocab if i % 3 else -1
            r.topN = [0, 5, 20][i % 3]
            r.sample, r.workRow = int(i % 8 != 7), i
            if i % 4 == 2:
                allowed = torch.rand(vocab, device="cuda", generator=gen) < 0.3
                if i == 10:
                    allowed[:] = False  # nothing allowed: status 1
                bits = torch.zeros(words * 32, dtype=torch.int64, device="cuda")
                bits[:vocab] = allowed.long()
                w = (bits.view(words, 32) << torch.arange(32, device="cuda")).sum(1)
                r.maskOffset = sum(len(m_) for m_ in masks)
                masks.append(w)
                mask_of[i] = allowed
            if i % 5 == 3:
                pen = torch.randint(0, vocab, (40,), device="cuda", generator=gen).unique().int()
                pen = torch.cat([pen, logits[i].topk(3).indices.int()]).unique()
                r.repetitionPenalty, r.penaltyOffset, r.penaltyCount = 1.3, sum(len(q) for q in pens), len(pen)
                pens.append(pen)
                pen_of[i] = pen.tolist()
            if i % 6 == 1:
                # Biases: push the third-best token up, ban the best (OpenAI's -100), one random.
                order = logits[i].argsort(descending=True)
                b = {int(order[2]): 8.5, int(order[0]): -100.0, int((i * 977) % vocab): -1.25}
                r.biasOffset, r.biasCount = sum(len(q) for q in pens), len(b)
                words_ = torch.tensor(list(b.values()), dtype=torch.float32).view(torch.int32).tolist()
                pens.append(torch.tensor(list(b.keys()) + words_, dtype=torch.int32, device="cuda"))
                bias_of[i] = b
        dev_params = torch.frombuffer(bytearray(params), dtype=torch.uint8).cuda()
        dmask = torch.cat(masks)  # 32-bit words held in int64: wrap into int32
        dmask = torch.where(dmask >= 2**31, dmask - 2**32, dmask).int()
        dpen = torch.cat(pens) if pens else torch.zeros(1, dtype=torch.int32, device="cuda")
        work = torch.full((rows, vocab), float("nan"), device="cuda")
        max_n = 20
        stride = 4 + 2 * max_n
        res = torch.full((rows, stride), -7, dtype=torch.int32, device="cuda")
        run(lib, "sb_finish_rows", p(logits), rows, vocab, p(dev_params), p(dmask), p(dpen), p(work), p(res), stride)
        lsm = torch.log_softmax(logits.double(), -1)
        bad = []
        lp_err = []
        for i in range(rows):
            r = params[i]
            out = res[i]
            if r.target >= 0:
                lp_err.append(abs(out[2:3].view(torch.float32).item() - lsm[i, r.target].item()))
            if r.topN:
                ids = out[4 : 4 + 2 * r.topN : 2].long()
                lps = out[5 : 5 + 2 * r.topN : 2].view(torch.float32)
                ref_ids = torch.argsort(-logits[i], stable=True)[: r.topN]  # ties: lower id first
                if not torch.equal(ids, ref_ids):
                    bad.append(f"row {i} top-{r.topN} ids")
                lp_err.append((lps.double() - lsm[i, ref_ids]).abs().max().item())
            if not r.sample:
                continue
            want = ref_choose(logits[i], r, mask_of.get(i), pen_of.get(i, []), bias_of.get(i))
            got = int(out[0])
            if got != want:
                bad.append(f"row {i}: token {got}, reference {want}")
            if want < 0:
                if int(out[3]) != 1:
                    bad.append(f"row {i}: no status for an empty mask")
            else:
                lp_err.append(abs(out[1:2].view(torch.float32).item() - lsm[i, got].item()))
        ok = not bad and max(lp_err) < 1e-4
        verdict(ok, f"finish rows vocab {vocab}: {rows} rows, tokens equal the reference, logprob err {max(lp_err):.1e} {bad[:4]}",
                f"finish rows {vocab}: {bad[:4]} {max(lp_err)}")
    # Distribution: 20000 draws from one row, top-k 8, temperature 0.8 -> frequencies match softmax.
    vocab, n = 32000, 20000
    base = torch.randn(vocab, device="cuda") * 0.5
    base[:8] = torch.tensor([6.0, 5.5, 5.2, 5.0, 4.0, 3.9, 3.0, 2.5], device="cuda")
    logits = base.expand(n, vocab).contiguous()
    params = (RowFinish * n)()
    for i in range(n):
        params[i].seed, params[i].position, params[i].temperature, params[i].topP = 42, i, 0.8, 1.0
        params[i].repetitionPenalty, params[i].topK, params[i].maskOffset, params[i].target = 1.0, 8, -1, -1
        params[i].sample, params[i].workRow = 1, i
    dev_params = torch.frombuffer(bytearray(params), dtype=torch.uint8).cuda()
    work = torch.empty(n, vocab, device="cuda")
    res = torch.zeros(n, 4, dtype=torch.int32, device="cuda")
    z = torch.zeros(1, dtype=torch.int32, device="cuda")
    run(lib, "sb_finish_rows", p(logits), n, vocab, p(dev_params), p(z), p(z), p(work), p(res), 4)
    top = torch.topk(base / 0.8, 8)
    expect = torch.softmax(top.values.double(), 0)
    counts = torch.bincount(res[:, 0].long(), minlength=vocab)[top.indices].double()
    tv = 0.5 * (counts / n - expect).abs().sum().item()
    outside = n - int(counts.sum())
    ok = tv < 0.025 and outside == 0
    verdict(ok, f"sampled frequencies vs softmax over top-8 (20000 draws): total variation {tv:.4f}, outside top-k {outside}",
            f"sampling distribution tv {tv} outside {outside}")


def run_family(lib):
    test_finish_rows(lib)


if __name__ == "__main__":
    main(run_family, __doc__)
