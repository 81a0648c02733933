"""lora_model family (lora_model.cu): LoRA on the token embeddings (PEFT's Embedding LoRA, times the
embedding scale) and on lm_head (added to fp32 logits), per row through each sequence's adapter slot,
against a float64 PyTorch reference. Rows of sequences without an adapter, or whose adapter lacks the
module, must be left exactly as they were.
Usage: python3 kernels/test/test_lora_model.py [--arch 90]"""
import ctypes, math
import torch
from harness import DT, Entry, TYPES, check, main, p, run, upload_table, verdict


def slots_of(nseq, nslots):
    # Sequence s uses slot s % (nslots + 1) - 1: every slot and "no adapter" (-1) appear.
    return [s % (nslots + 1) - 1 for s in range(nseq)]


def embedding_case(lib, t, name, vocab, hidden, ranks, seq_rows, embed_scale, absent=frozenset()):
    nseq = len(seq_rows)
    seq_slot = slots_of(nseq, len(ranks))
    A = [torch.randn(r, vocab, device="cuda").to(DT[t]) for r in ranks]
    B = [torch.randn(hidden, r, device="cuda").to(DT[t]) for r in ranks]
    scales = [0.5 + 0.25 * i for i in range(len(ranks))]
    table = upload_table([Entry(None, None, 0, 0.0) if i in absent else Entry(A[i].data_ptr(), B[i].data_ptr(), r, scales[i]) for i, r in enumerate(ranks)])
    row_seq = [s for s, n in enumerate(seq_rows) for _ in range(n)]
    rows = len(row_seq)
    tokens = torch.randint(0, vocab, (rows,), dtype=torch.int32, device="cuda")
    x0 = torch.randn(rows, hidden, device="cuda").to(DT[t])
    x = x0.clone()
    rs = torch.tensor(row_seq, dtype=torch.int32, device="cuda")
    ss = torch.tensor(seq_slot, dtype=torch.int32, device="cuda")
    run(lib, "sb_lora_embedding", t, p(tokens), p(rs), p(ss), rows, p(table), vocab, hidden, ctypes.c_float(embed_scale), p(x))
    ref = x0.double().clone()
    untouched = []
    for r in range(rows):
        sl = seq_slot[row_seq[r]]
        if sl < 0 or sl in absent:
            untouched.append(r)
            continue
        tok = int(tokens[r])
        ref[r] += scales[sl] * embed_scale * (B[sl].double() @ A[sl][:, tok].double())
    check(f"lora_model embedding {name}", t, x.double() - x0.double(), ref - x0.double())
    same = all(torch.equal(x[r], x0[r]) for r in untouched)
    verdict(same, f"lora_model embedding {name}: rows without the module untouched", f"embedding {name} {t}: rows changed")


def logits_case(lib, t, name, vocab, hidden, ranks, seq_rows, logit_rows, absent=frozenset()):
    nseq = len(seq_rows)
    seq_slot = slots_of(nseq, len(ranks))
    A = [(torch.randn(r, hidden, device="cuda") / math.sqrt(hidden)).to(DT[t]) for r in ranks]
    B = [torch.randn(vocab, r, device="cuda").to(DT[t]) for r in ranks]
    scales = [2.0 / math.sqrt(r) for r in ranks]
    table = upload_table([Entry(None, None, 0, 0.0) if i in absent else Entry(A[i].data_ptr(), B[i].data_ptr(), r, scales[i]) for i, r in enumerate(ranks)])
    row_seq = [s for s, n in enumerate(seq_rows) for _ in range(n)]
    nl = len(logit_rows)
    x = torch.randn(nl, hidden, device="cuda").to(DT[t])
    logits0 = torch.randn(nl, vocab, device="cuda") * 3
    logits = logits0.clone()
    max_rank = max(ranks)
    tmp = torch.full((nl, max_rank), float("nan"), device="cuda")
    lr = torch.tensor(logit_rows, dtype=torch.int32, device="cuda")
    rs = torch.tensor(row_seq, dtype=torch.int32, device="cuda")
    ss = torch.tensor(seq_slot, dtype=torch.int32, device="cuda")
    run(lib, "sb_lora_logits", t, p(x), p(lr), p(rs), p(ss), nl, p(table), max_rank, hidden, vocab, p(tmp), p(logits))
    ref = logits0.double().clone()
    untouched = []
    for i, r in enumerate(logit_rows):
        sl = seq_slot[row_seq[r]]
        if sl < 0 or sl in absent:
            untouched.append(i)
            continue
        ref[i] += scales[sl] * (B[sl].double() @ (A[sl].double() @ x[i].double()))
    check(f"lora_model logits {name}", t, logits.double() - logits0.double(), ref - logits0.double())
    same = all(torch.equal(logits[i], logits0[i]) for i in untouched)
    verdict(same, f"lora_model logits {name}: rows without the module untouched", f"logits {name} {t}: rows changed")


def test_lora_model(lib, t):
    # Decode-like: 64 one-row sequences over 3 adapters (one without the module) and none; real vocab sizes.
    embedding_case(lib, t, "64 decode rows, vocab 152064, h 4096, ranks 8/16/64", 152064, 4096, [8, 16, 64], [1] * 64, 1.0, absent={1})
    embedding_case(lib, t, "prompts 5/1/33 rows, Gemma scale 48, h 2304", 256000, 2304, [16, 4], [5, 1, 33], 48.0)
    embedding_case(lib, t, "odd sizes: vocab 1001, h 100, rank 3", 1001, 100, [3, 7], [2, 3, 1, 4], 1.0)
    logits_case(lib, t, "64 decode rows, vocab 128256, h 4096, ranks 8/16/64", 128256, 4096, [8, 16, 64], [1] * 64, list(range(64)), absent={2})
    logits_case(lib, t, "prompt rows with logprobs + decode rows", 32000, 2048, [16, 32], [7, 1, 1, 20], [0, 1, 2, 3, 4, 5, 6, 7, 8, 28])
    logits_case(lib, t, "odd sizes: vocab 1001, h 100, rank 3", 1001, 100, [3, 5], [1, 2, 1], [0, 2, 3])


def run_family(lib):
    for t in TYPES:
        test_lora_model(lib, t)


if __name__ == "__main__":
    main(run_family, __doc__)
