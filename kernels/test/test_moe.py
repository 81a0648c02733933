"""moe family (moe.cuh, moe.cu): mixture-of-experts routing as transformers computes it (softmax of
the router logits in fp32, top-k with ties to the lower expert, optional renormalisation), the slots
grouped by expert, the gather of expert inputs, the one-launch expert GEMMs for few rows, and the
weighted combine in ascending expert order, Qwen2-MoE's sigmoid-gated shared-expert add, and LoRA on the experts'
weights (PEFT target_parameters) for grouped rows, against PyTorch.
Usage: python3 kernels/test/test_moe.py [--arch 90]"""
import ctypes
import torch
from harness import DT, F32, SHORT, TYPES, Entry, check, main, p, poison, run, upload_table, verdict


def test_moe(lib, t):
    for rows, experts, top_k, renorm, hidden in ((37, 128, 8, 1, 256), (5, 8, 2, 1, 64), (300, 60, 4, 0, 128), (1, 64, 6, 1, 2048)):
        # Distinct logits even in bf16 (steps of 0.05 over a random order), so torch.topk's order is the only order.
        logits = (torch.stack([torch.randperm(experts, device="cuda") for _ in range(rows)]).float() * 0.05 - 3).to(DT[t])
        choice = torch.full((rows, top_k), -1, dtype=torch.int32, device="cuda")
        weight = poison((rows, top_k), torch.float32)
        run(lib, "sb_moe_route", t, p(logits), rows, experts, top_k, renorm, p(choice), p(weight))
        probs = torch.softmax(logits.float(), dim=-1)
        ref_w, ref_e = torch.topk(probs, top_k, dim=-1)
        if renorm:
            ref_w = ref_w / ref_w.sum(-1, keepdim=True)
        name = f"rows {rows}, {top_k} of {experts} experts{' renormalised' if renorm else ''}"
        verdict(torch.equal(choice.long(), ref_e), f"moe route: experts chosen, {name:<34} {SHORT[t]:>5}", f"moe route experts {name} {t}")
        check(f"moe route: weights, {name}", F32, weight, ref_w)

        n = rows * top_k
        offsets = torch.full((experts + 1,), -1, dtype=torch.int32, device="cuda")
        order = torch.full((n,), -1, dtype=torch.int32, device="cuda")
        slot_pos = torch.full((n,), -1, dtype=torch.int32, device="cuda")
        run(lib, "sb_moe_plan", p(choice), rows, top_k, experts, p(offsets), p(order), p(slot_pos))
        flat = choice.flatten().long().cpu()
        ref_order = torch.cat([torch.nonzero(flat == e).flatten() for e in range(experts)])
        ref_off = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(torch.bincount(flat, minlength=experts), 0)])
        ok = torch.equal(order.long().cpu(), ref_order) and torch.equal(offsets.long().cpu(), ref_off)
        ok = ok and torch.equal(order.long()[slot_pos.long()].cpu(), torch.arange(n))
        verdict(ok, f"moe plan: slots grouped by expert, {name:<26} {SHORT[t]:>5}", f"moe plan {name} {t}")

        x = torch.randn(rows, hidden, device="cuda").to(DT[t])
        xg = poison((n, hidden), DT[t])
        run(lib, "sb_moe_gather", t, p(x), p(order), n, top_k, hidden, p(xg))
        check(f"moe gather, {name}", t, xg, x[order.long() // top_k].double(), 0)

        y = torch.randn(n, hidden, device="cuda").to(DT[t])
        out = poison((rows, hidden), DT[t])
        run(lib, "sb_moe_combine", t, p(y), p(choice), p(weight), p(slot_pos), rows, top_k, hidden, p(out))
        w_t = weight.to(DT[t]).double()  # transformers casts the routing weights to the hidden dtype
        ref = (y.double()[slot_pos.long()].view(rows, top_k, hidden) * w_t[..., None]).sum(1)
        check(f"moe combine, {name}", t, out, ref)


def test_moe_ties(lib, t):
    """Equal probabilities go to the lower expert, as the CPU engine (and torch.topk on CPU) picks them."""
    rows, experts, top_k = 3, 16, 4
    logits = torch.zeros(rows, experts, device="cuda").to(DT[t])
    logits[1, 9] = 1.0
    choice = torch.full((rows, top_k), -1, dtype=torch.int32, device="cuda")
    weight = poison((rows, top_k), torch.float32)
    run(lib, "sb_moe_route", t, p(logits), rows, experts, top_k, 1, p(choice), p(weight))
    want = torch.tensor([[0, 1, 2, 3], [9, 0, 1, 2], [0, 1, 2, 3]], dtype=torch.int32, device="cuda")
    verdict(torch.equal(choice, want), f"moe route: ties to the lower expert                          {SHORT[t]:>5}", f"moe ties {t}")
    check("moe route: tied weights renormalised", F32, weight[0], torch.full((top_k,), 0.25, device="cuda"))


def routed_plan(lib, t, rows, experts, top_k):
    """Distinct random router logits per row, routed (sb_moe_route) and grouped by expert (sb_moe_plan)."""
    logits = (torch.stack([torch.randperm(experts, device="cuda") for _ in range(rows)]).float() * 0.05).to(DT[t])
    choice = torch.empty((rows, top_k), dtype=torch.int32, device="cuda")
    weight = torch.empty((rows, top_k), dtype=torch.float32, device="cuda")
    run(lib, "sb_moe_route", t, p(logits), rows, experts, top_k, 1, p(choice), p(weight))
    n = rows * top_k
    offsets = torch.empty((experts + 1,), dtype=torch.int32, device="cuda")
    order = torch.empty((n,), dtype=torch.int32, device="cuda")
    slot_pos = torch.empty((n,), dtype=torch.int32, device="cuda")
    run(lib, "sb_moe_plan", p(choice), rows, top_k, experts, p(offsets), p(order), p(slot_pos))
    return choice, weight, n, offsets, order, slot_pos


def test_moe_gemv(lib, t):
    """The one-launch expert GEMMs for few rows: every expert's grouped rows times its own weights."""
    for rows, experts, top_k, hidden, out in ((3, 128, 8, 2048, 1536), (64, 16, 4, 768, 2048), (5, 8, 2, 100, 70)):
        choice, weight, n, offsets, order, slot_pos = routed_plan(lib, t, rows, experts, top_k)
        xg = torch.randn(n, hidden, device="cuda").to(DT[t])
        ws = [(torch.randn(out, hidden, device="cuda") / hidden ** 0.5).to(DT[t]) for _ in range(experts)]
        ptrs = torch.tensor([w.data_ptr() for w in ws], dtype=torch.int64, device="cuda")
        y = poison((n, out), DT[t])
        run(lib, "sb_moe_gemv", t, p(xg), hidden, p(offsets), p(ptrs), experts, out, p(y))
        off = offsets.tolist()
        ref = torch.zeros(n, out, dtype=torch.float64, device="cuda")
        for e in range(experts):
            if off[e + 1] > off[e]:
                ref[off[e]:off[e + 1]] = xg[off[e]:off[e + 1]].double() @ ws[e].double().T
        check(f"moe gemv: {rows} rows, {top_k} of {experts} experts, {hidden} -> {out}", t, y, ref)


def test_moe_shared_add(lib, t):
    """Qwen2-MoE's shared expert: out += sigmoid(gate) * y, in t as Qwen2MoeSparseMoeBlock (a rounding after each op)."""
    for rows, hidden in ((1, 64), (37, 2048), (300, 100)):
        y = torch.randn(rows, hidden, device="cuda").to(DT[t])
        gate = (torch.randn(rows, 1, device="cuda") * 3).to(DT[t])
        out = torch.randn(rows, hidden, device="cuda").to(DT[t])
        ref = out + torch.sigmoid(gate) * y  # in t, as transformers runs it
        run(lib, "sb_moe_shared_add", t, p(y), p(gate), rows, hidden, p(out))
        check(f"moe shared expert add: {rows} rows of {hidden}", t, out, ref.double())


def test_moe_lora(lib, t):
    """LoRA on the experts' weights for grouped rows: each row's adapter (by its sequence; one without an adapter, one
    whose adapter lacks this module) adds scale * B_e A_e x for its own expert e, B_e regrouped [E][out][r]."""
    rows, experts, top_k, hin, out, stride = 7, 4, 2, 64, 96, 4  # stride: 2 layers x (gate_up, down)
    choice, weight, n, offsets, order, slot_pos = routed_plan(lib, t, rows, experts, top_k)
    row_seq = torch.tensor([0, 0, 1, 1, 2, 3, 3], dtype=torch.int32, device="cuda")
    seq_slot = torch.tensor([1, -1, 0, 2], dtype=torch.int32, device="cuda")  # slot 2 has no LoRA at this offset
    ranks, scales, offset = {0: 4, 1: 8}, {0: 2.0, 1: 0.5}, 3  # offset: layer 1, down (any entry of the row)
    A = {a: (torch.randn(experts, r, hin, device="cuda") / hin ** 0.5).to(DT[t]) for a, r in ranks.items()}
    B = {a: (torch.randn(experts, out, r, device="cuda") / r ** 0.5).to(DT[t]) for a, r in ranks.items()}
    entries = [Entry(None, None, 0, 0.0) for _ in range(3 * stride)]
    for a, r in ranks.items():
        entries[a * stride + offset] = Entry(A[a].data_ptr(), B[a].data_ptr(), r, scales[a])
    table = upload_table(entries)
    x = torch.randn(n, hin, device="cuda").to(DT[t])
    y = torch.randn(n, out, device="cuda").to(DT[t])
    ref = y.double().clone()
    for i, slot in enumerate(order.tolist()):
        a = seq_slot[row_seq[slot // top_k]].item()
        if a not in ranks:
            continue
        e = choice.flatten()[slot].item()
        ref[i] += scales[a] * (B[a][e].double() @ (A[a][e].double() @ x[i].double()))
    run(lib, "sb_moe_lora", t, p(x), hin, p(y), out, out, n, top_k, p(order), p(choice), p(row_seq), p(seq_slot), p(table), stride, offset, 8)
    check(f"moe lora: {rows} rows, {top_k} of {experts} experts, ranks 4/8", t, y, ref)


def run_family(lib):
    for t in TYPES:
        test_moe(lib, t)
        test_moe_ties(lib, t)
        test_moe_gemv(lib, t)
        test_moe_shared_add(lib, t)
        test_moe_lora(lib, t)


if __name__ == "__main__":
    main(run_family, __doc__)
