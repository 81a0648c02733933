#!/usr/bin/env python3
"""Build tiny HF models, PEFT LoRA adapters and reference outputs for Switchboard's engine tests.

Usage (from the repository root):

    python3 scripts/make-fixtures.py [--out test/fixtures] [--models llama,mistral,qwen2]

Needs torch, transformers (5.x; 4.5x mostly works), peft, tokenizers, safetensors, numpy, jinja2.
Nothing is downloaded: tokenizers are trained here on an embedded corpus, weights are random.
Everything runs on CPU in float32 with fixed seeds.

Writes, for each model NAME in llama / mistral / qwen2:
    OUT/models/NAME/           config.json, *.safetensors, tokenizer files, generation_config.json
    OUT/adapters/NAME/ADAPTER/ adapter_config.json + adapter_model.safetensors (PEFT save_pretrained)
    OUT/reference/NAME.json    tokenization, chat template, prompt logprobs, top-5, greedy references
Only those paths are replaced; anything else under OUT is left alone.
"""

import os
import sys

# Python's string hashing is randomised per process; PEFT stores target_modules in a set, so the order written
# to adapter_config.json would change between runs. Re-run ourselves with a fixed hash seed.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

# No network, ever.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_json import log, sig6, write_json  # noqa: E402
from fixture_common import logits_of, reference_case  # noqa: E402

import torch  # noqa: E402
import tokenizers  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForCausalLM,
    GenerationConfig,
    LlamaConfig,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)
import peft  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402

try:
    from packaging.version import Version
except Exception:  # pragma: no cover - packaging ships with transformers
    Version = None


def _ver_tuple(v):
    out = []
    for part in v.split(".")[:3]:
        num = ""
        for ch in part:
            if ch.isdigit():
                num += ch
            else:
                break
        out.append(int(num) if num else 0)
    while len(out) < 3:
        out.append(0)
    return tuple(out)


TF_VER = _ver_tuple(transformers.__version__)
TF5 = TF_VER[0] >= 5
# from_pretrained(dtype=...) exists since 4.56; older versions only know torch_dtype.
DTYPE_KW = "dtype" if TF_VER >= (4, 56, 0) else "torch_dtype"

torch.set_num_threads(1)  # one thread: same reduction order on every run
try:
    transformers.utils.logging.disable_progress_bar()
except Exception:
    pass
torch.manual_seed(0)

# ----------------------------------------------------------------------------------------------------------
# Constants
# ----------------------------------------------------------------------------------------------------------

HIDDEN = 64
INTERMEDIATE = 160
LAYERS = 2
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 16
MAX_POS = 512

LOGIT_STD = 3.0  # std of the final logits (lm_head std = LOGIT_STD / sqrt(hidden)); makes greedy margins large
LORA_REL = 0.4  # LoRA delta-weight entry std relative to the base weight entry std
MARGIN_MIN = 1e-3  # smallest acceptable top1-top2 logit margin during greedy decoding
TOP5_GAP_MIN = 1e-4  # smallest acceptable gap between consecutive top-6 logits after the prompt
PREFERRED_MARGIN = 3e-3  # seeds are tried until both preferred bounds hold (or MAX_ATTEMPTS is reached)
PREFERRED_GAP = 1e-3
MAX_ATTEMPTS = 8  # seeds tried per model before keeping the best one
SIZE_LIMIT = 4 * 1024 * 1024

ALL_PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

ADAPTERS = [
    dict(name="r8-qv", r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
    dict(name="r16-all", r=16, lora_alpha=8, target_modules=list(ALL_PROJ)),
    dict(
        name="r4-rslora-mlp",
        r=4,
        lora_alpha=8,
        use_rslora=True,
        target_modules=["gate_proj", "up_proj", "down_proj", "o_proj"],
    ),
    dict(
        name="r8-patterns",
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        rank_pattern={"k_proj": 4, "layers.1.self_attn.o_proj": 12},
        alpha_pattern={"v_proj": 32},
    ),
]
# Second adapter with the same rank and targets as r8-qv, for add_weighted_adapter (llama only).
ADAPTER_QV_B = dict(name="r8-qv-b", r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])

MERGE_SOURCES = ["r8-qv", "r8-qv-b"]
MERGE_WEIGHTS = [0.7, 0.5]
MERGES = [
    dict(combination_type="linear"),
    dict(combination_type="cat"),
    dict(combination_type="ties", density=0.5, majority_sign_method="total"),
    dict(combination_type="magnitude_prune", density=0.5),
]

# ----------------------------------------------------------------------------------------------------------
# Training corpus for the tokenizers (varied prose, JSON, digits, punctuation, some non-ASCII, an emoji)
# ----------------------------------------------------------------------------------------------------------

CORPUS = r"""
The old lighthouse stood at the edge of the harbour, and every evening the keeper climbed its spiral stairs to light the lamp. He counted the steps as he went: one hundred and twelve, always the same, although on windy nights it felt like more.
Ships passed in the dark. Some were small fishing boats coming home with their nets full; others were large cargo vessels carrying containers from distant ports. The keeper wrote each one down in a notebook, with the time, the direction and the weather.
In the morning the town woke slowly. The baker opened first, then the café on the corner, where a naïve young waiter named Théo served coffee and croissants to sleepy customers. "Good morning!" he said to everyone, even to the seagulls.
A traveller arrived from Kyoto with stories about 日本 and its temples, its trains that were never late, and its gardens of moss and stone. The children listened with wide eyes. 🙂
Switchboard is a server that routes requests to language models. Each request may name an adapter, and the scheduler groups requests so that the same base model can serve many adapters at once.
The server reads a configuration file, loads the weights, and then waits for requests. When a request arrives, it is tokenized, placed into a batch, and processed step by step until the model produces an end token or reaches the maximum length.
{"model": "llama", "adapter": "r8-qv", "max_tokens": 16, "temperature": 0.0, "stream": true}
{"id": 42, "name": "example", "tags": ["fast", "small", "test"], "score": 3.14159, "ok": false, "next": null}
[1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987]
The numbers 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 appear often: 2024, 1999, 365 days, 24 hours, 60 minutes, 3.5 percent, 100% sure, $12.50 each, version 1.2.3.
Questions are useful. Why does the sea look blue? How far away is the moon? What is the best way to learn a new language? Who wrote this sentence, and when?
She said: 'I can't come today, but I'll be there tomorrow.' He replied: "That's fine; we'll wait." They didn't know it would rain all week.
Mathematics: if x = 3 and y = 4, then x * x + y * y = 25, so the length of the hypotenuse is 5. The sum 1 + 2 + ... + 100 equals 5050.
Code often looks like this: for (int i = 0; i < n; i++) { total += values[i]; } return total;
def add(a, b):
    return a + b
Lists, tables and records: name, age, city; Anna, 31, Lisbon; Bruno, 27, São Paulo; Chloé, 45, Montréal; Dmitri, 38, Zürich.
The weather report predicted clouds in the morning, sunshine in the afternoon, and a light breeze from the west. Temperatures would range from 12 to 19 degrees.
Once upon a time there was a small robot who wanted to learn how to paint. It practised every day, mixing colours and drawing shapes, until one day it painted the sunrise over the mountains.
A user asks the assistant a question, and the assistant answers politely and clearly. The system message describes how the assistant should behave.
Good software is tested carefully. Tests compare the output of a program with known, correct answers, so that mistakes are found early and fixed quickly.
The library had thousands of books: novels, poems, histories, atlases and dictionaries. Readers came from every part of the city to sit by the tall windows and read in silence.
Énergie, élève, garçon, façade, jalapeño, smörgåsbord, crème brûlée and déjà vu are words that travelled between languages.
"""

# Characters at or above this code point are dropped from the mistral training corpus so that they can only be
# encoded through <0xNN> byte fallback (CJK, emoji). Latin-1 letters such as é and ï stay in the vocabulary.
FALLBACK_ONLY_FROM = 0x2E80

# GPT-4 / Llama 3 style split pattern (digits in groups of up to three).
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen2 style split pattern (single digits).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# ----------------------------------------------------------------------------------------------------------
# Chat templates (Jinja)
# ----------------------------------------------------------------------------------------------------------

LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + (message['content'] | trim)"
    " + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)

MISTRAL_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}"
    "{%- set system_message = '' %}"
    "{%- set loop_messages = messages %}"
    "{%- endif %}"
    "{{- bos_token }}"
    "{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if loop.first and system_message != '' %}"
    "{{- '[INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}"
    "{%- else %}"
    "{{- '[INST] ' + message['content'] + ' [/INST]' }}"
    "{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- ' ' + message['content'] + eos_token }}"
    "{%- else %}"
    "{{- raise_exception('Only user and assistant roles are supported after an optional system message') }}"
    "{%- endif %}"
    "{%- endfor %}"
)

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

CHATS = [
    dict(
        messages=[
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        add_generation_prompt=True,
    ),
    dict(
        messages=[
            {"role": "user", "content": "Hello! Can you count to three?"},
            {"role": "assistant", "content": "Sure: 1, 2, 3."},
            {"role": "user", "content": "  Now backwards, please.\n"},
        ],
        add_generation_prompt=True,
    ),
    dict(
        messages=[{"role": "user", "content": "Say café and 日本 🙂"}],
        add_generation_prompt=False,
    ),
]

# ----------------------------------------------------------------------------------------------------------
# Prompts and tokenization test texts
# ----------------------------------------------------------------------------------------------------------

PROMPT_TARGETS = [6, 20, 35, 60]
PROMPT_SOURCES = [
    "The quick brown fox jumps over the lazy dog near the river bank today.",
    "Switchboard routes each request to the right adapter, and the scheduler batches many requests together so "
    "that one base model serves them all at the same time without waiting.",
    'Config: {"rank": 8, "alpha": 16, "targets": ["q_proj", "v_proj"]} was loaded at 12:45 on 2024-03-07 by '
    "the café server, which then answered 1234 requests in 56.7 seconds before it was restarted again by the "
    "operator on duty.",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who counted the waves every "
    "morning.\nHe wrote the numbers 17, 42 and 365 in a worn notebook, drank his coffee at the naïve little café, "
    "and dreamed of 日本 and of faraway mountains 🙂. Nobody knew why he did it, but everyone agreed that the sea "
    "was calmer whenever he was watching it closely, and so the village let him be, year after year, until the "
    "lighthouse keeper finally asked him what the numbers meant.",
]

TOKENIZATION_TEXTS = [
    "Hello world",
    " Hello  world, leading space and double  spaces",
    "Line one\nLine two\n\n  indented line\twith a tab\n",
    "Numbers: 0 7 42 1234567 3.14159 -12,345 2024-03-07",
    "café naïve résumé Ünïcödé São Paulo",
    "cafe\u0301 (decomposed accent) vs caf\u00e9",
    "日本語のテキスト 日本",
    "emoji: 🙂🚀 ok",
    '{"name": "Switchboard", "ids": [1, 2, 3], "ok": true, "x": null}',
    "",
    "   ",
    "I can't believe it's not butter! We'll see, they'd say.",
]


# ----------------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------------


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def ids_of(result):
    """Normalise whatever apply_chat_template(tokenize=True) / tokenizer(...) returned into a list of ints."""
    if hasattr(result, "keys") and "input_ids" in result:
        result = result["input_ids"]
    if hasattr(result, "tolist"):
        result = result.tolist()
    result = list(result)
    if result and isinstance(result[0], (list, tuple)):
        if len(result) != 1:
            raise AssertionError("expected a single sequence")
        result = list(result[0])
    return [int(x) for x in result]


def load_model(model_dir, config=None):
    kwargs = {"attn_implementation": "eager", DTYPE_KW: torch.float32}
    if config is not None:
        kwargs["config"] = config
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    model.eval()
    return model


def rope_info(config):
    """(theta, rope dict or None) from a config of either transformers generation."""
    rp = getattr(config, "rope_parameters", None)
    if isinstance(rp, dict) and "rope_theta" in rp:
        return float(rp["rope_theta"]), rp
    theta = getattr(config, "rope_theta", None)
    return (float(theta) if theta is not None else None), getattr(config, "rope_scaling", None)


def default_inv_freq(theta, dim):
    return [1.0 / (theta ** (i / dim)) for i in range(0, dim, 2)]


def llama3_inv_freq(theta, dim, factor, low_freq_factor, high_freq_factor, original_max):
    """Llama 3.1 frequency scaling, written out from its definition."""
    low_wavelen = original_max / low_freq_factor
    high_wavelen = original_max / high_freq_factor
    out = []
    for f in default_inv_freq(theta, dim):
        wavelen = 2.0 * math.pi / f
        if wavelen < high_wavelen:
            out.append(f)
        elif wavelen > low_wavelen:
            out.append(f / factor)
        else:
            smooth = (original_max / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            out.append((1.0 - smooth) * f / factor + smooth * f)
    return out


def model_inv_freq(model):
    inner = getattr(model, "model", model)
    rot = getattr(inner, "rotary_emb", None)
    if rot is None or not hasattr(rot, "inv_freq"):
        return None
    return [float(x) for x in rot.inv_freq.detach().double().tolist()]


def close_lists(a, b, rtol=1e-5):
    return len(a) == len(b) and all(abs(x - y) <= rtol * max(abs(x), abs(y), 1e-30) for x, y in zip(a, b))


# ----------------------------------------------------------------------------------------------------------
# Tokenizers
# ----------------------------------------------------------------------------------------------------------


def corpus_lines(drop_fallback_only=False):
    lines = []
    for line in CORPUS.strip("\n").split("\n"):
        if drop_fallback_only:
            line = "".join(ch for ch in line if ord(ch) < FALLBACK_ONLY_FROM)
        if line.strip():
            lines.append(line)
    return lines


def trained_vocab_merges(tok):
    model = json.loads(tok.to_str())["model"]
    vocab = dict(model["vocab"])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return vocab, merges


def build_bytelevel_tokenizer(split_pattern, vocab_total, specials, nfc, ignore_merges):
    trainer_tok = Tokenizer(models.BPE())
    if nfc:
        trainer_tok.normalizer = normalizers.NFC()
    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split_pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    trainer_tok.pre_tokenizer = pre
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_total - len(specials),
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    trainer_tok.train_from_iterator(corpus_lines(), trainer=trainer)
    vocab, merges = trained_vocab_merges(trainer_tok)

    bpe_kwargs = dict(vocab=vocab, merges=merges)
    if ignore_merges:
        bpe_kwargs["ignore_merges"] = True
    tok = Tokenizer(models.BPE(**bpe_kwargs))
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(specials))
    return tok, len(merges)


def build_llama_tokenizer():
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok, n_merges = build_bytelevel_tokenizer(LLAMA3_SPLIT, 600, specials, nfc=False, ignore_merges=True)
    bos = "<|begin_of_text|>"
    bos_id = tok.token_to_id(bos)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{bos}:0 $A:0",
                pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                special_tokens=[(bos, bos_id)],
            ),
        ]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token="<|eot_id|>",
        clean_up_tokenization_spaces=False,
        model_max_length=MAX_POS,
    )
    hf.chat_template = LLAMA3_TEMPLATE
    return hf, n_merges


def build_mistral_tokenizer():
    meta_train = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=True)
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer_tok.pre_tokenizer = meta_train
    specials = ["<unk>", "<s>", "</s>"]
    trainer = trainers.BpeTrainer(
        vocab_size=700 - 256,
        min_frequency=2,
        show_progress=False,
        special_tokens=list(specials),
    )
    trainer_tok.train_from_iterator(corpus_lines(drop_fallback_only=True), trainer=trainer)
    trained_vocab, merges = trained_vocab_merges(trainer_tok)

    # Llama 2 / Mistral layout: <unk>=0, <s>=1, </s>=2, <0x00>..<0xFF>=3..258, then the learned pieces.
    vocab = {t: i for i, t in enumerate(specials)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for t, _ in sorted(trained_vocab.items(), key=lambda kv: kv[1]):
        if t in vocab:
            continue
        vocab[t] = len(vocab)
    for a, b in merges:
        if a not in vocab or b not in vocab or (a + b) not in vocab:
            raise AssertionError(f"merge {a!r} {b!r} refers to unknown tokens")

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("\u2581", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(content=" ", left=1, right=0),
        ]
    )
    tok.add_special_tokens(list(specials))
    if [tok.token_to_id(s) for s in specials] != [0, 1, 2]:
        raise AssertionError("mistral special token ids must be 0, 1, 2")
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", 1)]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
        model_max_length=MAX_POS,
    )
    hf.chat_template = MISTRAL_TEMPLATE
    return hf, len(merges)


def build_qwen2_tokenizer():
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok, n_merges = build_bytelevel_tokenizer(QWEN2_SPLIT, 600, specials, nfc=True, ignore_merges=False)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
        model_max_length=MAX_POS,
    )
    hf.chat_template = CHATML_TEMPLATE
    return hf, n_merges


def save_tokenizer(hf_tok, model_dir):
    """save_pretrained, then make sure tokenizer_config.json itself carries the chat template."""
    hf_tok.save_pretrained(str(model_dir))
    cfg_path = Path(model_dir) / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if cfg.get("chat_template") != hf_tok.chat_template:
        cfg["chat_template"] = hf_tok.chat_template
        cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    # Newer transformers write the template to chat_template.jinja instead; keep one copy (tokenizer_config.json).
    jinja = Path(model_dir) / "chat_template.jinja"
    if jinja.exists():
        jinja.unlink()


def check_tokenizer_roundtrip(model_dir, hf_tok, texts):
    """The reloaded HF tokenizer, the raw tokenizer.json and the in-memory tokenizer must agree exactly."""
    reloaded = PreTrainedTokenizerFast.from_pretrained(str(model_dir))
    raw = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    try:
        auto = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    except Exception as e:  # informative only
        log(f"  note: AutoTokenizer could not load {model_dir}: {type(e).__name__}: {e}")
        auto = None
    if reloaded.chat_template != hf_tok.chat_template:
        raise AssertionError("chat template did not survive save/reload")
    for text in texts:
        for special in (True, False):
            a = ids_of(hf_tok(text, add_special_tokens=special))
            b = ids_of(reloaded(text, add_special_tokens=special))
            c = raw.encode(text, add_special_tokens=special).ids
            if not (a == b == c):
                raise AssertionError(
                    f"tokenizer mismatch for {text!r} (add_special_tokens={special}):\n"
                    f"  in-memory {a}\n  reloaded  {b}\n  raw json  {c}"
                )
            if auto is not None:
                d = ids_of(auto(text, add_special_tokens=special))
                if d != a:
                    log(f"  WARNING: AutoTokenizer gives different ids for {text!r}: {d} vs {a}")
    return reloaded, raw


def fit_prompt(tok, source, target):
    words = source.split(" ")
    for k in range(1, len(words) + 1):
        text = " ".join(words[:k])
        if len(ids_of(tok(text))) >= target:
            return text
    log(f"  WARNING: prompt source too short for {target} tokens ({len(ids_of(tok(source)))} tokens)")
    return source


# ----------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------


def make_config(name, vocab_size, tok, hidden=HIDDEN, head_dim=HEAD_DIM):
    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        head_dim=head_dim,
        max_position_embeddings=MAX_POS,
        hidden_act="silu",
        initializer_range=0.02,
        use_cache=True,
    )
    if name == "llama":
        cls = LlamaConfig
        rope = dict(
            rope_type="llama3",
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=64,
        )
        theta = 10000.0
        extra = dict(
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            attention_bias=False,
            mlp_bias=False,
            bos_token_id=tok.convert_tokens_to_ids("<|begin_of_text|>"),
            eos_token_id=[tok.convert_tokens_to_ids("<|end_of_text|>"), tok.convert_tokens_to_ids("<|eot_id|>")],
        )
    elif name == "mistral":
        cls = MistralConfig
        rope = None
        theta = 1e6
        extra = dict(
            rms_norm_eps=1e-6,
            tie_word_embeddings=False,
            sliding_window=16,
            bos_token_id=1,
            eos_token_id=2,
        )
    elif name == "qwen2":
        cls = Qwen2Config
        rope = None
        theta = 1e6
        extra = dict(
            rms_norm_eps=1e-5,
            tie_word_embeddings=True,
            use_sliding_window=False,
            bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
            eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        )
    else:
        raise ValueError(name)
    kwargs = dict(common, **extra)
    if TF5:
        rp = {"rope_type": "default", "rope_theta": theta}
        if rope is not None:
            rp.update(rope)
            rp["rope_theta"] = theta
        kwargs["rope_parameters"] = rp
    else:
        kwargs["rope_theta"] = theta
        kwargs["rope_scaling"] = rope
    config = cls(**kwargs)
    got_theta, _ = rope_info(config)
    if got_theta != theta:
        raise AssertionError(f"{name}: rope theta {got_theta} != {theta}; config did not take the rope settings")
    return config


def reinit_weights(model, seed, tied):
    """Peaky logits: projections N(0, 1/fan_in), embeddings N(0, 1), norms 1+0.1N, biases 0.1N."""
    g = torch.Generator().manual_seed(seed)
    hidden = model.config.hidden_size
    head_std = LOGIT_STD / math.sqrt(hidden)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied parameters are listed once
            if name.endswith("embed_tokens.weight"):
                std = head_std if tied else 1.0
                p.copy_(torch.randn(p.shape, generator=g) * std)
            elif name.endswith("lm_head.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * head_std)
            elif p.ndim == 1 and "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
            else:
                raise AssertionError(f"unexpected parameter {name} {tuple(p.shape)}")


def generation_config_for(name, tok):
    if name == "llama":
        return GenerationConfig(
            bos_token_id=tok.convert_tokens_to_ids("<|begin_of_text|>"),
            eos_token_id=[tok.convert_tokens_to_ids("<|end_of_text|>"), tok.convert_tokens_to_ids("<|eot_id|>")],
            do_sample=True,
            temperature=0.6,
            top_p=0.9,
        )
    if name == "mistral":
        return GenerationConfig(bos_token_id=1, eos_token_id=2)
    return GenerationConfig(
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=[tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        do_sample=True,
        temperature=0.7,
        top_p=0.8,
        top_k=20,
        repetition_penalty=1.05,
    )


def rewrite_config_v4_form(model_dir):
    """Rewrite config.json into the transformers-4 layout: rope_theta / rope_scaling / torch_dtype."""
    path = Path(model_dir) / "config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    rp = cfg.pop("rope_parameters", None)
    if rp is not None:
        if rp.get("rope_type", "default") != "default":
            raise AssertionError(f"unexpected rope type {rp}")
        cfg["rope_theta"] = rp["rope_theta"]
    if "rope_theta" not in cfg:
        raise AssertionError("config.json has no rope_theta")
    cfg["rope_scaling"] = None
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def config_form(model_dir):
    cfg = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    return {
        "rope": "rope_parameters" if "rope_parameters" in cfg else "rope_theta/rope_scaling",
        "dtype_key": "dtype" if "dtype" in cfg else ("torch_dtype" if "torch_dtype" in cfg else None),
        "dtype": cfg.get("dtype", cfg.get("torch_dtype")),
    }


def build_base_model(name, spec, tok, vocab_size, model_dir, seed):
    """Create, re-initialise and save the model; return it reloaded from disk in float32."""
    config = make_config(name, vocab_size, tok)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    reinit_weights(model, seed, tied=spec["tie"])
    model.generation_config = generation_config_for(name, tok)
    model.eval()
    reference_params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model = model.to(spec["save_dtype"])
    save_kwargs = {}
    if spec.get("max_shard_size"):
        save_kwargs["max_shard_size"] = spec["max_shard_size"]
    model.save_pretrained(str(model_dir), **save_kwargs)
    if not (Path(model_dir) / "generation_config.json").exists():
        model.generation_config.save_pretrained(str(model_dir))
    del model

    if spec.get("legacy_config"):
        before = load_model(model_dir)
        rewrite_config_v4_form(model_dir)
        loaded = load_model(model_dir)
        probe = torch.arange(0, min(vocab_size, 40), dtype=torch.long).unsqueeze(0) % len(tok)
        with torch.inference_mode():
            a = before(input_ids=probe, use_cache=False).logits
            b = loaded(input_ids=probe, use_cache=False).logits
        if not torch.equal(a, b):
            raise AssertionError(f"{name}: model from the rewritten (v4-form) config.json differs from the original")
        del before
    else:
        loaded = load_model(model_dir)

    # Stored numbers: the float32 model must hold exactly the saved-dtype-rounded weights.
    sd = loaded.state_dict()
    for k, v in reference_params.items():
        if k not in sd:
            continue
        want = v.to(spec["save_dtype"]).float()
        if not torch.equal(sd[k], want):
            raise AssertionError(f"{name}: weight {k} does not match its {spec['save_dtype']} rounding")
    if spec["tie"]:
        if not torch.equal(loaded.lm_head.weight, loaded.model.embed_tokens.weight):
            raise AssertionError(f"{name}: lm_head is not tied to embed_tokens after reload")
    return loaded


def check_rope(name, model):
    theta, rope = rope_info(model.config)
    inv = model_inv_freq(model)
    info = {"theta": theta}
    plain = default_inv_freq(theta, HEAD_DIM)
    if name == "llama":
        scaled = llama3_inv_freq(theta, HEAD_DIM, 8.0, 1.0, 4.0, 64)
        if close_lists(plain, scaled):
            raise AssertionError("llama3 rope scaling does not change any frequency at this head_dim")
        expect = scaled
        info.update(type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                    original_max_position_embeddings=64)
    else:
        expect = plain
        info.update(type="default")
    if inv is None:
        log(f"  WARNING: {name}: could not find rotary_emb.inv_freq to check")
    elif not close_lists(inv, expect):
        raise AssertionError(f"{name}: model inv_freq {inv} != expected {expect}")
    info["inv_freq"] = [sig6(x) for x in expect]
    if name == "llama":
        info["inv_freq_unscaled"] = [sig6(x) for x in plain]
    return info


def check_sliding_window(model_dir, model, ids):
    """The window must matter for the long prompt, and follow HF's rule: query i sees keys j with i-j < W."""
    w = model.config.sliding_window
    cfg = AutoConfig.from_pretrained(str(model_dir))
    cfg.sliding_window = None
    full = load_model(model_dir, config=cfg)
    x = torch.tensor([ids])
    with torch.inference_mode():
        a = model(input_ids=x, use_cache=False).logits
        b = full(input_ids=x, use_cache=False).logits
    diff = (a - b).abs().max().item()
    if len(ids) <= w or diff < 1e-3:
        raise AssertionError(f"sliding window has no effect (len {len(ids)}, max logit diff {diff})")
    note = None
    try:
        with torch.inference_mode():
            out = model(input_ids=x, use_cache=False, output_attentions=True)
        att = out.attentions[0][0]  # [heads, q, k]
        q = len(ids) - 1
        outside = att[:, q, : q - w + 1].abs().max().item()
        inside = att[:, q, q - w + 1: q + 1].min().item()
        if outside != 0.0 or inside <= 0.0:
            raise AssertionError(f"unexpected window shape: outside max {outside}, inside min {inside}")
        note = f"query i attends to keys j with 0 <= i - j < {w} (checked on layer-0 attention weights)"
    except AssertionError:
        raise
    except Exception as e:
        log(f"  WARNING: could not inspect attention weights: {type(e).__name__}: {e}")
        note = f"HF rule: query i attends to keys j with 0 <= i - j < {w}"
    return {"sliding_window": w, "semantics": note, "max_logit_diff_vs_full_attention": sig6(diff)}


# ----------------------------------------------------------------------------------------------------------
# Adapters
# ----------------------------------------------------------------------------------------------------------


def lora_config_from_spec(spec):
    return LoraConfig(
        r=spec["r"],
        lora_alpha=spec["lora_alpha"],
        target_modules=list(spec["target_modules"]),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        init_lora_weights=False,
        use_rslora=spec.get("use_rslora", False),
        rank_pattern=dict(spec.get("rank_pattern", {})),
        alpha_pattern=dict(spec.get("alpha_pattern", {})),
    )


def lora_modules(peft_model, adapter):
    """{module name (as in the base model's state dict, without 'base_model.model.'): module}."""
    out = {}
    for mname, mod in peft_model.named_modules():
        lora_a = getattr(mod, "lora_A", None)
        if lora_a is None or not hasattr(lora_a, "keys") or adapter not in lora_a:
            continue
        key = mname
        for prefix in ("base_model.model.",):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = mod
    return out


def randomise_lora(peft_model, adapter, seed):
    """Random A and B; B scaled so that scaling * B @ A has entries of LORA_REL x the base weight's std."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, mod in sorted(lora_modules(peft_model, adapter).items()):
            a = mod.lora_A[adapter].weight
            b = mod.lora_B[adapter].weight
            r, fan_in = a.shape
            s = float(mod.scaling[adapter])
            a.copy_(torch.randn(a.shape, generator=g) / math.sqrt(fan_in))
            b.copy_(torch.randn(b.shape, generator=g) * (LORA_REL / (s * math.sqrt(r))))


def module_summary(peft_model, adapter):
    mods = lora_modules(peft_model, adapter)
    return {
        k: {"r": int(m.r[adapter]), "scaling": sig6(m.scaling[adapter])}
        for k, m in sorted(mods.items())
    }


def check_adapter_modules(spec, summary):
    targets = set(spec["target_modules"])
    got = {k.split(".")[-1] for k in summary}
    if got != targets:
        raise AssertionError(f"{spec['name']}: adapted modules {sorted(got)} != targets {sorted(targets)}")
    if len(summary) != len(targets) * LAYERS:
        raise AssertionError(f"{spec['name']}: expected {len(targets) * LAYERS} adapted modules, got {len(summary)}")
    for key, info in summary.items():
        short = key.split(".")[-1]
        r = spec["r"]
        alpha = spec["lora_alpha"]
        for pat, val in spec.get("rank_pattern", {}).items():
            if key == pat or key.endswith("." + pat):
                r = val
                break
        for pat, val in spec.get("alpha_pattern", {}).items():
            if key == pat or key.endswith("." + pat):
                alpha = val
                break
        scale = alpha / math.sqrt(r) if spec.get("use_rslora") else alpha / r
        if info["r"] != r or abs(info["scaling"] - scale) > 1e-5 * scale:
            raise AssertionError(
                f"{spec['name']}: {key} ({short}) has r={info['r']} scaling={info['scaling']}, expected r={r} scaling={scale}"
            )


def clean_adapter_dir(path):
    for extra in ("README.md",):
        p = Path(path) / extra
        if p.exists():
            p.unlink()
    for required in ("adapter_config.json", "adapter_model.safetensors"):
        if not (Path(path) / required).exists():
            raise AssertionError(f"{path}: PEFT did not write {required}")


def create_adapter(model_dir, spec, out_dir, seed, base_label, check_ids):
    base = load_model(model_dir)
    torch.manual_seed(seed)
    pm = get_peft_model(base, lora_config_from_spec(spec))
    randomise_lora(pm, "default", seed)
    summary = module_summary(pm, "default")
    check_adapter_modules(spec, summary)
    pm.peft_config["default"].base_model_name_or_path = base_label
    pm.eval()
    with torch.inference_mode():
        logits = pm(input_ids=torch.tensor([check_ids]), use_cache=False).logits[0].float().clone()
    pm.save_pretrained(str(out_dir), save_embedding_layers=False)
    clean_adapter_dir(out_dir)
    return summary, logits


def create_foreign_adapter(vocab_size, tok, out_dir, seed):
    """r8 q/v adapter built on a llama-like model with hidden size 96: loading it on the llama fixture must fail."""
    config = make_config("llama", vocab_size, tok, hidden=96, head_dim=24)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    reinit_weights(model, seed, tied=False)
    model.eval()
    spec = dict(ADAPTERS[0])
    pm = get_peft_model(model, lora_config_from_spec(spec))
    randomise_lora(pm, "default", seed + 1)
    pm.peft_config["default"].base_model_name_or_path = "llama-hidden96"
    pm.save_pretrained(str(out_dir), save_embedding_layers=False)
    clean_adapter_dir(out_dir)


def create_merged_adapters(model_dir, adapters_dir, base_label, check_ids):
    """PEFT add_weighted_adapter on r8-qv + r8-qv-b, saved like any other adapter."""
    base = load_model(model_dir)
    pm = PeftModel.from_pretrained(base, str(adapters_dir / MERGE_SOURCES[0]), adapter_name=MERGE_SOURCES[0])
    for src in MERGE_SOURCES[1:]:
        pm.load_adapter(str(adapters_dir / src), adapter_name=src)
    pm.eval()
    made = []
    for m in MERGES:
        ctype = m["combination_type"]
        name = f"merged-{ctype}"
        kwargs = {k: v for k, v in m.items() if k != "combination_type"}
        try:
            pm.add_weighted_adapter(
                adapters=list(MERGE_SOURCES),
                weights=list(MERGE_WEIGHTS),
                adapter_name=name,
                combination_type=ctype,
                **kwargs,
            )
        except Exception as e:
            log(f"  note: add_weighted_adapter combination_type={ctype!r} not available: {type(e).__name__}: {e}")
            continue
        if name not in pm.peft_config:
            log(f"  note: add_weighted_adapter({ctype!r}) did not create an adapter; skipped")
            continue
        pm.peft_config[name].base_model_name_or_path = base_label
        pm.set_adapter(name)
        with torch.inference_mode():
            logits = pm(input_ids=torch.tensor([check_ids]), use_cache=False).logits[0].float().clone()
        summary = module_summary(pm, name)
        tmp = Path(tempfile.mkdtemp(prefix="merge-"))
        try:
            pm.save_pretrained(str(tmp), selected_adapters=[name], save_embedding_layers=False)
            src = tmp / name if (tmp / name / "adapter_config.json").exists() else tmp
            dst = adapters_dir / name
            dst.mkdir(parents=True, exist_ok=True)
            for fname in ("adapter_config.json", "adapter_model.safetensors"):
                shutil.copy2(src / fname, dst / fname)
            clean_adapter_dir(dst)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        record = {
            "name": name,
            "sources": list(MERGE_SOURCES),
            "weights": list(MERGE_WEIGHTS),
            "combination_type": ctype,
            "density": m.get("density"),
            "majority_sign_method": m.get("majority_sign_method"),
            "peft_call": dict(
                adapters=list(MERGE_SOURCES),
                weights=list(MERGE_WEIGHTS),
                adapter_name=name,
                combination_type=ctype,
                **kwargs,
            ),
            "result_r": int(pm.peft_config[name].r),
            "result_lora_alpha": pm.peft_config[name].lora_alpha,
            "modules": summary,
        }
        made.append((name, record, logits))
    return made


# ----------------------------------------------------------------------------------------------------------
# References
# ----------------------------------------------------------------------------------------------------------


def run_case(model, ids):
    """One reference case (fixture_common.reference_case, the whole sequence recomputed at each greedy step), with
    its smallest greedy margin, the raw smallest gap between the top-6 logits after the prompt, and the prompt's logits."""
    logits = logits_of(model, ids)
    case, margin = reference_case(logits, ids, lambda seq: logits_of(model, seq)[-1])
    vals = torch.topk(logits[-1], 6).values.tolist()
    return case, margin, min(vals[i] - vals[i + 1] for i in range(5)), logits


def adapter_effect(base_case, case):
    if base_case["greedy"]["ids"] != case["greedy"]["ids"]:
        return float("inf")
    d = max(
        [abs(a - b) for a, b in zip(base_case["prompt_logprobs"], case["prompt_logprobs"])]
        + [abs(a - b) for a, b in zip(base_case["greedy"]["logprobs"], case["greedy"]["logprobs"])]
        + [0.0]
    )
    if base_case["top5"]["ids"] != case["top5"]["ids"]:
        d = max(d, 1.0)
    return d


# ----------------------------------------------------------------------------------------------------------
# One model
# ----------------------------------------------------------------------------------------------------------

MODEL_SPECS = {
    "llama": dict(build_tok=build_llama_tokenizer, save_dtype=torch.bfloat16, max_shard_size="100KB", tie=False),
    "mistral": dict(build_tok=build_mistral_tokenizer, save_dtype=torch.float16, tie=False),
    "qwen2": dict(build_tok=build_qwen2_tokenizer, save_dtype=torch.float32, tie=True, legacy_config=True),
}


def build_fixtures(name, spec, hf_tok, stage, seed):
    """Everything for one model into `stage` (models/NAME, adapters/NAME, reference/NAME.json)."""
    model_dir = stage / "models" / name
    adapters_dir = stage / "adapters" / name
    model_dir.mkdir(parents=True)
    adapters_dir.mkdir(parents=True)
    (stage / "reference").mkdir(parents=True, exist_ok=True)

    save_tokenizer(hf_tok, model_dir)
    special_literal = {"llama": "<|eot_id|>", "mistral": "</s>", "qwen2": "<|im_end|>"}[name]
    tok_texts = list(TOKENIZATION_TEXTS) + [f"Hi{special_literal} there"]
    prompt_texts = [fit_prompt(hf_tok, src, n) for src, n in zip(PROMPT_SOURCES, PROMPT_TARGETS)]
    tok, raw = check_tokenizer_roundtrip(model_dir, hf_tok, tok_texts + prompt_texts)

    vocab_size = ((len(tok) + 63) // 64) * 64
    base = build_base_model(name, spec, tok, vocab_size, model_dir, seed)
    rope = check_rope(name, base)

    prompts = [{"text": t, "ids": ids_of(tok(t))} for t in prompt_texts]
    long_ids = prompts[-1]["ids"]
    extra = {}
    if name == "mistral":
        extra["sliding_window"] = check_sliding_window(model_dir, base, long_ids)
    if name == "llama":
        index = model_dir / "model.safetensors.index.json"
        shards = glob.glob(str(model_dir / "model-*.safetensors"))
        if not index.exists() or len(shards) < 2:
            raise AssertionError(f"llama weights are not sharded (index {index.exists()}, {len(shards)} shards)")

    # Adapters.
    label = name
    specs = list(ADAPTERS) + ([ADAPTER_QV_B] if name == "llama" else [])
    adapter_meta = {}
    expected_logits = {}
    for k, aspec in enumerate(specs):
        summary, logits = create_adapter(model_dir, aspec, adapters_dir / aspec["name"], seed + 101 * (k + 1), label,
                                         long_ids)
        meta = {key: aspec[key] for key in ("r", "lora_alpha") if key in aspec}
        meta["target_modules"] = sorted(aspec["target_modules"])
        meta["use_rslora"] = bool(aspec.get("use_rslora", False))
        meta["rank_pattern"] = aspec.get("rank_pattern", {})
        meta["alpha_pattern"] = aspec.get("alpha_pattern", {})
        meta["modules"] = summary
        adapter_meta[aspec["name"]] = meta
        expected_logits[aspec["name"]] = logits

    merges = []
    bad_adapters = []
    if name == "llama":
        for mname, record, logits in create_merged_adapters(model_dir, adapters_dir, label, long_ids):
            merges.append(record)
            adapter_meta[mname] = {
                "r": record["result_r"],
                "lora_alpha": record["result_lora_alpha"],
                "merged_from": record["sources"],
                "modules": record["modules"],
            }
            expected_logits[mname] = logits
        wrong = adapters_dir / "wrong-shapes"
        create_foreign_adapter(vocab_size, tok, wrong, seed + 7)
        err = None
        try:
            fresh = load_model(model_dir)
            PeftModel.from_pretrained(fresh, str(wrong), adapter_name="wrong")
        except Exception as e:
            err = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
        if err is None:
            log("  WARNING: PEFT loaded the wrong-shapes adapter onto llama without an error")
        bad_adapters.append({
            "name": "wrong-shapes",
            "reason": "created on a llama-like model with hidden_size 96 (fixture has 64); q/v LoRA shapes differ",
            "peft_load_error": err,
        })

    # References, from PEFT's own loading of the saved files.
    names = list(adapter_meta.keys())
    pm = PeftModel.from_pretrained(base, str(adapters_dir / names[0]), adapter_name=names[0])
    for n in names[1:]:
        pm.load_adapter(str(adapters_dir / n), adapter_name=n)
    pm.eval()

    pristine = load_model(model_dir)
    cases = []
    worst_margin = float("inf")
    worst_gap = float("inf")
    base_cases = {}
    for adapter in [None] + names:
        for pi, p in enumerate(prompts):
            if adapter is None:
                with pm.disable_adapter():
                    res, margin, gap, logits = run_case(pm, p["ids"])
                ref_logits = logits_of(pristine, p["ids"])
                if not torch.allclose(logits, ref_logits, atol=1e-5, rtol=0):
                    raise AssertionError(f"{name}: PEFT with adapters disabled differs from the plain base model")
                base_cases[pi] = res
            else:
                pm.set_adapter(adapter)
                res, margin, gap, logits = run_case(pm, p["ids"])
                if pi == len(prompts) - 1:
                    d = (logits - expected_logits[adapter]).abs().max().item()
                    if d > 1e-4:
                        raise AssertionError(f"{name}/{adapter}: reloaded adapter differs from the in-memory one ({d})")
            worst_margin = min(worst_margin, margin)
            worst_gap = min(worst_gap, gap)
            cases.append(dict({"adapter": adapter, "prompt": pi}, **res))

    effects = {}
    for adapter in names:
        eff = max(adapter_effect(base_cases[c["prompt"]], c) for c in cases if c["adapter"] == adapter)
        effects[adapter] = eff
        if not eff > 0.05:
            raise AssertionError(f"{name}/{adapter}: adapter barely changes the outputs (max logprob shift {eff})")

    tokenization = []
    for t in tok_texts:
        ids = ids_of(tok(t))
        ids_ns = ids_of(tok(t, add_special_tokens=False))
        tokenization.append({
            "text": t,
            "ids": ids,
            "ids_no_special": ids_ns,
            "tokens": tok.convert_ids_to_tokens(ids),
            "decoded": tok.decode(ids),
            "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
            "decoded_no_special": tok.decode(ids_ns),
        })
        raw_dec = raw.decode(ids, skip_special_tokens=False)
        if raw_dec != tokenization[-1]["decoded"]:
            log(f"  WARNING: {name}: HF decode {tokenization[-1]['decoded']!r} != tokenizers decode {raw_dec!r}")

    chats = []
    for c in CHATS:
        text = tok.apply_chat_template(c["messages"], tokenize=False, add_generation_prompt=c["add_generation_prompt"])
        ids = ids_of(tok.apply_chat_template(c["messages"], tokenize=True,
                                             add_generation_prompt=c["add_generation_prompt"]))
        plain = ids_of(tok(text, add_special_tokens=False))
        if ids != plain:
            log(f"  WARNING: {name}: apply_chat_template ids differ from tokenizing its text without specials")
        chats.append({"messages": c["messages"], "add_generation_prompt": c["add_generation_prompt"],
                      "text": text, "ids": ids})

    ref = {
        "model": name,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "torch": torch.__version__,
        "tokenizers": tokenizers.__version__,
        "seed": seed,
        "vocab_size": vocab_size,
        "tokenizer_len": len(tok),
        "stored_dtype": str(spec["save_dtype"]).replace("torch.", ""),
        "config_form": config_form(model_dir),
        "rope": rope,
        **extra,
        "eos_token_id": tok.eos_token_id,
        "bos_token_id": tok.bos_token_id,
        "generation_eos_token_id": base.generation_config.eos_token_id,
        "logprob_notes": "float64 log_softmax of float32 logits; prompt_logprobs[i-1] = log p(ids[i] | ids[:i]); "
                         "greedy = argmax with full recomputation, 16 steps, no stop at eos; min_margin = smallest "
                         "top1-top2 logit gap; top5.min_gap = smallest gap among the top-6 logits",
        "adapters": adapter_meta,
        "merges": merges,
        "bad_adapters": bad_adapters,
        "prompts": prompts,
        "cases": cases,
        "tokenization": tokenization,
        "chat": chats,
    }
    write_json(stage / "reference" / f"{name}.json", ref)
    return worst_margin, worst_gap, effects


def install(stage, out, name):
    pairs = [
        (stage / "models" / name, out / "models" / name),
        (stage / "adapters" / name, out / "adapters" / name),
        (stage / "reference" / f"{name}.json", out / "reference" / f"{name}.json"),
    ]
    for src, dst in pairs:
        if dst.is_dir():
            shutil.rmtree(dst)
        elif dst.exists():
            dst.unlink()
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst) if src.is_dir() else shutil.copy2(src, dst)


def main():
    repo_root = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(repo_root / "test" / "fixtures"), help="output folder (default test/fixtures)")
    ap.add_argument("--models", default="llama,mistral,qwen2", help="comma-separated subset of llama,mistral,qwen2")
    ap.add_argument("--seed", type=int, default=1234, help="first seed tried for weight initialisation")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in wanted:
        if m not in MODEL_SPECS:
            ap.error(f"unknown model {m}")

    log(f"transformers {transformers.__version__}, peft {peft.__version__}, torch {torch.__version__}, "
        f"tokenizers {tokenizers.__version__}; writing to {out}")
    summary = []
    for name in wanted:
        spec = MODEL_SPECS[name]
        hf_tok, n_merges = spec["build_tok"]()
        log(f"[{name}] tokenizer: {len(hf_tok)} tokens, {n_merges} merges")
        best = None
        for attempt in range(MAX_ATTEMPTS):
            seed = args.seed + 1000 * attempt
            stage = Path(tempfile.mkdtemp(prefix=f"fixtures-{name}-"))
            try:
                margin, gap, effects = build_fixtures(name, spec, hf_tok, stage, seed)
            except Exception:
                shutil.rmtree(stage, ignore_errors=True)
                raise
            ok = margin >= MARGIN_MIN and gap >= TOP5_GAP_MIN
            good = margin >= PREFERRED_MARGIN and gap >= PREFERRED_GAP
            verdict = "accepted" if good else ("acceptable, trying for larger margins" if ok else "too small, retrying")
            log(f"[{name}] seed {seed}: min greedy margin {margin:.4g}, min top-5 gap {gap:.4g} -> {verdict}")
            score = min(margin / MARGIN_MIN, gap / TOP5_GAP_MIN)
            if best is None or score > best[0]:
                if best is not None:
                    shutil.rmtree(best[1], ignore_errors=True)
                best = (score, stage, seed, margin, gap, effects)
            else:
                shutil.rmtree(stage, ignore_errors=True)
            if good:
                break
        _, stage, seed, margin, gap, effects = best
        if margin < MARGIN_MIN:
            log(f"WARNING: [{name}] greedy top1-top2 margin {margin:.3g} < {MARGIN_MIN} even for the best seed {seed}")
        if gap < TOP5_GAP_MIN:
            log(f"WARNING: [{name}] top-5 logit gap {gap:.3g} < {TOP5_GAP_MIN} for seed {seed}")
        install(stage, out, name)
        shutil.rmtree(stage, ignore_errors=True)
        summary.append((name, seed, margin, gap, effects))

    log("")
    log("Summary")
    total = 0
    for name, seed, margin, gap, effects in summary:
        parts = [out / "models" / name, out / "adapters" / name, out / "reference" / f"{name}.json"]
        size = sum(dir_bytes(p) if p.is_dir() else p.stat().st_size for p in parts)
        total += size
        n_adapters = len([d for d in (out / "adapters" / name).iterdir() if d.is_dir()])
        eff = ", ".join(f"{k}={'greedy' if v == float('inf') else f'{v:.3g}'}" for k, v in effects.items())
        log(f"  {name}: seed {seed}, {size} bytes, {n_adapters} adapter dirs, min greedy margin {margin:.4g}, "
            f"min top-5 gap {gap:.4g}")
        log(f"    adapter effect vs base: {eff}")
    for name, *_ in summary:
        for p in sorted((out / "models" / name).iterdir()):
            log(f"    {p.relative_to(out)} ({p.stat().st_size} bytes)")
    log(f"  total {total} bytes ({total / 1024 / 1024:.2f} MiB) under {out}")
    if total > SIZE_LIMIT:
        log(f"ERROR: fixtures are larger than {SIZE_LIMIT} bytes")
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        sys.exit(1)
