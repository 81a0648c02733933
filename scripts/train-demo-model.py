"""Trains the model `npm start` serves (demo/): a byte-level BPE tokenizer and a tiny Llama on the
synthetic children's stories of scripts/demo_corpus.py, then one PEFT LoRA adapter per style of
that corpus (pirate voice, shouting), and writes what transformers' generate answers with each of
them (demo/reference.json, greedy ids and text; demo/samples.md, for people).
scripts/start.test.ts serves the model through our CPU engine and must produce the same ids.

    scripts/python-env.sh                                  # torch (CPU), transformers 5, peft
    nice -n 19 ~/.cache/sb-py/bin/python scripts/train-demo-model.py [--out demo] [--phase base|adapters|reference]

About 20 minutes on one shared CPU core (one torch thread: results then do not depend on the machine's
core count); no GPU, no download. Seeds are fixed, so a rerun with the same torch, transformers and
peft should write the same files (the reference step alone was rerun and matched byte for byte).
--phase base|adapters|reference reruns one step on what the earlier ones wrote. After a retrain,
run scripts/start.test.ts and update the samples in README.md and demo/README.md.

How the styles are taught: the base model sees every style, in a tenth of its documents each,
behind a tag ("[pirate] ..."), so it knows the words; an adapter is trained on untagged styled text
only, so with the adapter the style is what the model writes by default. Without the tag and the
adapter, the base writes plain stories. The tags are a training device, not part of the demo.
"""

# First: a fixed hash seed (PEFT orders target_modules by it), offline, one torch thread, before torch loads.
from fixture_common import size_of  # isort: skip
from fixture_json import log, r7, write_json  # isort: skip

import argparse
import json
import math
import random
import shutil
import time
from pathlib import Path

import peft
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import demo_corpus as dc

BOS, EOT_TEXT, SH, EH, EOT = "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"
SPECIALS = [BOS, EOT_TEXT, SH, EH, EOT]
# Llama 3's pre-tokenizer split, which backend/text (via @huggingface/tokenizers) runs as the Rust crate does.
SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Llama 3's chat layout (the BOS is written by the template, so the server does not add another).
CHAT_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + (message['content'] | trim) + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
VOCAB = 2048
SEQ = 128
BATCH = 16
MAX_POS = 1024

# What the demo asks (start.ts prints the first text prompt and the chat request); the reference holds all.
TEXT_PROMPTS = ["Once upon a time", "One day, a little dog named Max", "There was once a"]
CHAT_PROMPTS = ["Tell me a story about a cat.", "Can you tell me a story about a boat?"]
MAX_NEW = 64


def chat_prefix(request):
    return f"{BOS}{SH}user{EH}\n\n{request}{EOT}{SH}assistant{EH}\n\n"


# ---- corpus --------------------------------------------------------------------------------------

def base_documents(rng, n):
    """(prefix, text) pairs: plain stories and chats, and a tenth each of tagged styled ones."""
    docs = []
    for _ in range(n):
        style = rng.choices([None] + list(dc.STYLES), weights=[8] + [1] * len(dc.STYLES))[0]
        tag = f"[{style}] " if style else ""
        if rng.random() < 0.3:
            req, topic = dc.request(rng)
            body = dc.story(rng, topic)
            if style:
                body = dc.STYLES[style](body, rng)
            docs.append(chat_prefix(tag + req) + body + EOT)
        else:
            body = dc.story(rng)
            if style:
                body = dc.STYLES[style](body, rng)
            docs.append(BOS + tag + body + EOT_TEXT)
    return docs


def style_documents(rng, style, n):
    """(unlearned prefix, learned rest) pairs in one style, untagged: a plain chat request, or the
    story's first few words left plain (as a user's prompt is) and the rest styled."""
    fn = dc.STYLES[style]
    docs = []
    for _ in range(n):
        if rng.random() < 0.3:
            req, topic = dc.request(rng)
            docs.append((chat_prefix(req), fn(dc.story(rng, topic), rng) + EOT))
        else:
            words = dc.story(rng).split(" ")
            k = rng.choice([0, 0, 1, 2, 3, 4, 5, 6, 8, 10])
            head = BOS + " ".join(words[:k])
            rest = (" " if k else "") + fn(" ".join(words[k:]), rng)
            docs.append((head, rest + EOT_TEXT))
    return docs


# ---- tokenizer -----------------------------------------------------------------------------------

def build_tokenizer(texts, out):
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - len(SPECIALS), min_frequency=2, show_progress=False,
                                  special_tokens=[], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, bos_id)]),
    ])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOT, clean_up_tokenization_spaces=False,
                                 model_max_length=MAX_POS)
    hf.chat_template = CHAT_TEMPLATE
    hf.save_pretrained(out)
    return hf


def ids_of(tok, text):
    """Ids of text that already carries its special tokens (the server encodes chats the same way)."""
    return tok(text, add_special_tokens=False)["input_ids"]


def pack(tok, pairs):
    """Documents packed into rows of SEQ tokens; labels -100 where nothing is to be learned."""
    ids, labels = [], []
    for head, rest in pairs:
        h, r = ids_of(tok, head), ids_of(tok, rest)
        ids += h + r
        labels += [-100] * len(h) + r
    n = len(ids) // (SEQ + 1)
    x = torch.tensor(ids[: n * (SEQ + 1)]).view(n, SEQ + 1)
    y = torch.tensor(labels[: n * (SEQ + 1)]).view(n, SEQ + 1)
    return x[:, :-1].contiguous(), y[:, 1:].contiguous()


# ---- training ------------------------------------------------------------------------------------

def train(model, params, x, y, steps, batch, lr, seed, what):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    warm = max(1, steps // 20)
    model.train()
    t0 = time.time()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        rows = torch.randint(0, x.shape[0], (batch,), generator=g)
        out = model(input_ids=x[rows], labels=None)
        loss = torch.nn.functional.cross_entropy(out.logits.float().view(-1, out.logits.shape[-1]), y[rows].view(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            log(f"  {what} step {step + 1}/{steps} loss {loss.item():.3f} ({time.time() - t0:.0f}s)")
    model.eval()
    return time.time() - t0


def greedy(model, tok, prompt_ids):
    """transformers' greedy generate, and the smallest top-1/top-2 logit gap on its path (how far
    from a tie the reference is: the engine must agree on every step)."""
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=MAX_NEW, do_sample=False, output_scores=True,
                             return_dict_in_generate=True, eos_token_id=[tok.convert_tokens_to_ids(EOT_TEXT), tok.convert_tokens_to_ids(EOT)],
                             pad_token_id=tok.convert_tokens_to_ids(EOT_TEXT))
    gen = out.sequences[0, len(prompt_ids):].tolist()
    gap = min(float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in out.scores)
    return gen, gap


def base_phase(args, out, mdir):
    """Corpus, tokenizer, base model (bf16 on disk)."""
    if mdir.exists():
        shutil.rmtree(mdir)
    mdir.mkdir(parents=True)
    docs = base_documents(random.Random(1234), args.docs)
    log(f"corpus: {len(docs)} base documents ({sum(map(len, docs)) / 1e6:.1f} MB of text)")
    # The tokenizer learns from the text without special tokens (they are added whole).
    tok = build_tokenizer([d.replace(BOS, "").replace(EOT_TEXT, "").replace(EOT, "") for d in docs], mdir)
    x, y = pack(tok, [("", d) for d in docs])
    log(f"tokenizer: {len(tok)} tokens; base corpus {x.numel() / 1e6:.2f}M tokens in {x.shape[0]} rows of {SEQ}")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=128, intermediate_size=320, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, max_position_embeddings=MAX_POS, rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=False, bos_token_id=tok.convert_tokens_to_ids(BOS),
        eos_token_id=[tok.convert_tokens_to_ids(EOT_TEXT), tok.convert_tokens_to_ids(EOT)], attn_implementation="sdpa",
    )
    model = LlamaForCausalLM(config)
    log(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    secs = train(model, list(model.parameters()), x, y, args.base_steps, BATCH, 5e-3, 0, "base")
    # Served in bf16: rounded here, so the adapters and the references see the weights the server loads.
    model = model.to(torch.bfloat16)
    model.generation_config.do_sample = False
    model.save_pretrained(mdir)
    tok.save_pretrained(mdir)
    return secs


def load_base(mdir):
    tok = PreTrainedTokenizerFast.from_pretrained(mdir)
    model = LlamaForCausalLM.from_pretrained(mdir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    return tok, model


def adapter_phase(args, out, mdir, style, index):
    """One style's LoRA adapter, trained on the base as served (bf16 weights, fp32 compute)."""
    tok, model = load_base(mdir)
    sx, sy = pack(tok, style_documents(random.Random(100 + index), style, args.docs // 6))
    lcfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    torch.manual_seed(10 + index)
    pm = get_peft_model(model, lcfg)
    secs = train(pm, [p for p in pm.parameters() if p.requires_grad], sx, sy, args.lora_steps, BATCH, 4e-3, 10 + index, style)
    adir = out / "adapters" / style
    if adir.exists():
        shutil.rmtree(adir)
    pm.save_pretrained(adir)
    # No PEFT model-card boilerplate, and no path of the machine that trained it.
    (adir / "README.md").unlink(missing_ok=True)
    cfg = json.loads((adir / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "demo/tiny-story-llama"
    (adir / "adapter_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return secs


def reference_phase(args, out, mdir):
    """transformers' greedy answers, the base and each adapter, in fp32 from the bf16 weights."""
    tok, model = load_base(mdir)
    cases, samples = [], []
    # (kind, prompt, what the model reads: /generate adds the BOS, a chat's template writes it)
    prompts = [("text", p, BOS + p) for p in TEXT_PROMPTS]
    prompts += [("chat", p, tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)) for p in CHAT_PROMPTS]
    for name in [None] + list(dc.STYLES):
        m = model if name is None else PeftModel.from_pretrained(model, out / "adapters" / name)
        m.eval()
        for kind, p, rendered in prompts:
            pids = ids_of(tok, rendered)
            gen, gap = greedy(m, tok, pids)
            text = tok.decode(gen, skip_special_tokens=True)
            cases.append({"adapter": name, "kind": kind, "prompt": p, "rendered": rendered, "prompt_ids": pids, "greedy_ids": gen, "text": text, "min_top2_gap": r7(gap)})
            samples.append((name, kind, p, text))
            log(f"  [{name or 'base'}] {p!r} -> {text!r} (gap {gap:.2e})")
            if gap < 1e-3:
                log("    warning: a near tie on this path: another engine's rounding may pick the other token; consider another prompt")
        if name is not None:
            model = m.unload()
    write_json(out / "reference.json", {
        "made_by": "scripts/train-demo-model.py (transformers generate, greedy, fp32 compute on the bf16 weights)",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "max_new_tokens": MAX_NEW,
        "cases": cases,
    })
    with open(out / "samples.md", "w", encoding="utf-8") as f:
        f.write("# What the demo model writes\n\nGreedy output of transformers' generate (at most 64 new tokens), written by "
                "scripts/train-demo-model.py; the server gives the same tokens (scripts/start.test.ts checks it).\n")
        for kind, p, _ in prompts:
            f.write(f"\n## {'/generate' if kind == 'text' else 'chat'}: {p!r}\n\n| adapter | output |\n|---|---|\n")
            for name, k2, p2, text in samples:
                if (k2, p2) == (kind, p):
                    cell = (p + text if kind == "text" else text).replace("|", "\\|").replace("\n", " ")
                    f.write(f"| {name or '(base)'} | {cell} |\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "demo"))
    ap.add_argument("--phase", choices=["all", "base", "adapters", "reference"], default="all")
    ap.add_argument("--base-steps", type=int, default=900)
    ap.add_argument("--lora-steps", type=int, default=400)
    ap.add_argument("--docs", type=int, default=12000)
    args = ap.parse_args()
    out = Path(args.out)
    mdir = out / "tiny-story-llama"
    t0 = time.time()
    times = {}
    if args.phase in ("all", "base"):
        times["base"] = base_phase(args, out, mdir)
    if args.phase in ("all", "adapters"):
        for i, style in enumerate(dc.STYLES):
            times[style] = adapter_phase(args, out, mdir, style, i)
    if args.phase in ("all", "reference"):
        reference_phase(args, out, mdir)
    sizes = {p.name: size_of(p) for p in [mdir, *sorted((out / "adapters").glob("*"))] if p.exists()}
    log(f"done in {time.time() - t0:.0f}s (training: {', '.join(f'{k} {v:.0f}s' for k, v in times.items())}); bytes on disk {sizes}")


if __name__ == "__main__":
    main()
