#!/usr/bin/env python3
"""Decode references: what transformers' tokenizer.decode() gives for every prefix of many id sequences.

Usage (from the repository root):

    python3 scripts/make-decode-fixtures.py --tokenizers-only          # plain Python, no dependencies
    python3 scripts/make-decode-fixtures.py --out DIR                  # needs transformers + tokenizers

--tokenizers-only (re)writes the tokenizer-only fixtures under test/fixtures/tokenizers/, derived from the
committed model fixtures by editing their tokenizer.json as JSON (no library involved, so the result is
deterministic and reviewable):
    byte-fallback-special/  the mistral tokenizer with <0x00>..<0xFF> listed as added *special* tokens
                            (same ids as test/fixtures/models/mistral, so its weights fit)
    bytelevel-cleanup/      the llama tokenizer with clean_up_tokenization_spaces=True (forced for BPE) and extra added
                            tokens (non-special ones containing spaces, Latin-1 letters and a "Ġ")
    metaspace/              the mistral vocabulary behind a plain Metaspace decoder (prepend_scheme
                            "always", no byte fallback in the decoder) and no clean_up key in the config
    wordpiece/              a BERT-style WordPiece tokenizer ("##" continuation, decoder cleanup,
                            clean_up_tokenization_spaces=True, lower-casing normalizer)

Without --tokenizers-only it loads every fixture tokenizer with transformers (AutoTokenizer, offline),
builds a few hundred id sequences per tokenizer (random ids, ids of texts with punctuation after spaces,
contractions, CJK and emoji, byte tokens, special and added tokens), and writes DIR/NAME.json with
decode() of every prefix, with skip_special_tokens True and False, as the tokenizer's own settings
(clean_up_tokenization_spaces included) give it. Prefix texts are stored as edits of the previous prefix
([keep, add]: text_k = text_{k-1}[:keep] + add, in Python code points) to keep the files small.
Copy DIR/*.json to test/fixtures/decode/.
"""

import argparse
import copy
import json
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "test" / "fixtures" / "models"
TOKENIZERS = ROOT / "test" / "fixtures" / "tokenizers"

MODEL_FIXTURES = ["llama", "mistral", "qwen2"]
TOKENIZER_FIXTURES = ["byte-fallback-special", "bytelevel-cleanup", "metaspace", "wordpiece"]


# ----------------------------------------------------------------------------------------------------------
# Tokenizer-only fixtures (plain JSON edits)
# ----------------------------------------------------------------------------------------------------------


def load_json(p):
    with open(p, encoding="utf-8") as f:
        return json.load(f)


def write_json(p, obj):
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def added(id_, content, special, normalized=False):
    return {
        "id": id_,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": normalized,
        "special": special,
    }


def config_without_template(cfg):
    cfg = dict(cfg)
    cfg.pop("chat_template", None)
    return cfg


def make_byte_fallback_special():
    tj = load_json(MODELS / "mistral" / "tokenizer.json")
    cfg = load_json(MODELS / "mistral" / "tokenizer_config.json")
    vocab = tj["model"]["vocab"]
    have = {a["id"] for a in tj["added_tokens"]}
    for b in range(256):
        tok = f"<0x{b:02X}>"
        if vocab[tok] not in have:
            tj["added_tokens"].append(added(vocab[tok], tok, True))
    tj["added_tokens"].sort(key=lambda a: a["id"])
    return tj, cfg


def make_bytelevel_cleanup():
    tj = load_json(MODELS / "llama" / "tokenizer.json")
    cfg = config_without_template(load_json(MODELS / "llama" / "tokenizer_config.json"))
    cfg["clean_up_tokenization_spaces"] = True
    # Recent transformers 5.x ignore clean-up for BPE models unless this is set too (older ones always clean up).
    cfg["clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output"] = True
    next_id = max(a["id"] for a in tj["added_tokens"]) + 1
    # Non-special added tokens whose text is not byte-level-encoded: Rust's ByteLevel decoder maps a token
    # through the byte table only when every character is in it ("café": é is the byte 0xE9), else takes its
    # UTF-8 bytes (" spaced"); "Ġword" is all table characters, so it decodes to " word".
    for content, special in [("<|tool|>", False), (" spaced", False), ("café", False), ("Ġword", False), ("<|pad|>", True)]:
        tj["added_tokens"].append(added(next_id, content, special))
        next_id += 1
    return tj, cfg


def make_metaspace():
    tj = load_json(MODELS / "mistral" / "tokenizer.json")
    cfg = config_without_template(load_json(MODELS / "mistral" / "tokenizer_config.json"))
    cfg.pop("clean_up_tokenization_spaces", None)  # the library's default applies
    tj["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}
    tj["decoder"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}
    return tj, cfg


WORDPIECE_WORDS = (
    "the a an and or not do don can it is was i you we they he she me my your his her hello world json "
    "value name id true false null ok yes no play game good bad new old one two three say said go went "
    "s t m re ve ll d n"
).split()
WORDPIECE_SUFFIXES = "s ed ing er est ly n t 's".split()


def make_wordpiece():
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789") + list(".,!?'\";:-()[]{}/\\@#$%&*+=<>_~`|^")
    chars += ["日", "本", "語", "中", "文", "😀", "é", "ü", "ß"]
    vocab = []
    for t in specials + chars + ["##" + c for c in chars if c.isalnum()] + WORDPIECE_WORDS + ["##" + s for s in WORDPIECE_SUFFIXES]:
        if t not in vocab:
            vocab.append(t)
    vocab = {t: i for i, t in enumerate(vocab)}
    tj = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added(vocab[s], s, True) for s in specials] + [added(len(vocab), "<extra>", False)],
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True, "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [
                {"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 1}},
            ],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [vocab["[CLS]"]], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [vocab["[SEP]"]], "tokens": ["[SEP]"]},
            },
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": vocab},
    }
    cfg = {
        "backend": "tokenizers",
        "clean_up_tokenization_spaces": True,
        "do_lower_case": True,
        "model_max_length": 512,
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "mask_token": "[MASK]",
        "tokenizer_class": "TokenizersBackend",
    }
    return tj, cfg


def write_tokenizer_fixtures():
    makers = {
        "byte-fallback-special": make_byte_fallback_special,
        "bytelevel-cleanup": make_bytelevel_cleanup,
        "metaspace": make_metaspace,
        "wordpiece": make_wordpiece,
    }
    for name, make in makers.items():
        tj, cfg = make()
        write_json(TOKENIZERS / name / "tokenizer.json", tj)
        write_json(TOKENIZERS / name / "tokenizer_config.json", cfg)
        print(f"wrote {TOKENIZERS / name}")


# ----------------------------------------------------------------------------------------------------------
# Decode references (transformers)
# ----------------------------------------------------------------------------------------------------------

TEXTS = [
    "Hello , world ! How are you ? I 'm fine , it 's ok .",
    "She said : ' yes ' and left . They 're here ; we 've been there , don 't worry .",
    "I can n't believe it ! Can 't you ? do not , do n't .",
    '[\n 9210 ,\n -2429 ,\n 7 ]',
    '{"a" : 1 , "b" : [ 2 , 3 ] , "c" : "Non ?" , "d" : "x !"}',
    "日本語のテキスト , 中文 ! 😀 🎉 ok ?",
    "  leading spaces , double  spaces .  trailing  ",
    "tab\tand\nnewline , \n ,\n\n .",
    "café , naïve ! Straße ? ü",
    "a ' b ' c ' s ' ' m 're 've 'll",
    "The quick brown fox jumps over the lazy dog . 123 , 4567 !",
    "emoji 👩‍💻 and 🇯🇵 , flags !",
]


def edits(texts):
    """[keep, add] pairs: texts[k] == texts[k-1][:keep] + add (texts[-1] is '')."""
    out = []
    prev = ""
    for t in texts:
        keep = 0
        while keep < len(prev) and keep < len(t) and prev[keep] == t[keep]:
            keep += 1
        out.append([keep, t[keep:]])
        prev = t
    return out


def single_ids(tok, pieces):
    """Ids of token strings (or texts that encode to one id) that exist in this tokenizer."""
    ids = []
    for p in pieces:
        i = tok.convert_tokens_to_ids(p)
        if isinstance(i, int) and i != tok.unk_token_id and tok.convert_ids_to_tokens(i) == p:
            ids.append(i)
            continue
        enc = tok.encode(p, add_special_tokens=False)
        if len(enc) == 1:
            ids.append(enc[0])
    return sorted(set(ids))


TRICKY_PIECES = (
    [" ", ",", ".", "!", "?", "'", "s", "n", "t", "m", "ve", "re", "ll", "d", "do", "not", "n't", "'s", "'m",
     "Ġ", "Ġ,", "Ġ.", "Ġ!", "Ġ?", "Ġ'", "Ġn", "Ċ", "ĠĠ", "▁", "▁,", "▁.", "▁!", "▁?", "▁'", "▁▁", "▁n", "▁do",
     "##s", "##t", "##n", "##'s", "\u00e6", "\u0097", "\u00a5", "ð", "Ł", "ĺ", "Ģ", "ÿ", "Ãĥ", "a", "x", "9"]
    + [f"<0x{b:02X}>" for b in (0x20, 0x27, 0x2C, 0x41, 0xE6, 0x97, 0xA5, 0xF0, 0x9F, 0x98, 0x80, 0xFF, 0xC3, 0xA9, 0xED, 0xA0, 0x80)]
)


def sequences(tok, rng, n_random, n_text, n_tricky):
    vocab_n = len(tok)
    special = sorted(set(tok.all_special_ids))
    added_ids = sorted(tok.added_tokens_decoder.keys()) if hasattr(tok, "added_tokens_decoder") else []
    tricky = single_ids(tok, TRICKY_PIECES)
    extra = sorted(set(special + added_ids))
    seqs = []
    for _ in range(n_random):
        n = rng.randint(1, 28)
        seqs.append([rng.randrange(vocab_n) for _ in range(n)])
    for k in range(n_text):
        text = TEXTS[k % len(TEXTS)]
        ids = tok.encode(text, add_special_tokens=False)
        if len(ids) > 30:
            start = rng.randrange(0, len(ids) - 30 + 1)
            ids = ids[start:start + 30]
        if k >= len(TEXTS):  # variants: splice in special / added / random ids
            for _ in range(rng.randint(1, 3)):
                pos = rng.randint(0, len(ids))
                pool = extra if (extra and rng.random() < 0.6) else list(range(vocab_n))
                ids.insert(pos, rng.choice(pool))
        seqs.append(ids)
    for _ in range(n_tricky):
        n = rng.randint(2, 24)
        pool = tricky + extra
        seqs.append([rng.choice(pool) if rng.random() < 0.9 else rng.randrange(vocab_n) for _ in range(n)])
    return seqs, tricky


def reference_for(name, path, rng, args):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    seqs, tricky = sequences(tok, rng, args.random, args.texts, args.tricky)
    cases = []
    for ids in seqs:
        case = {"ids": ids}
        for skip in (True, False):
            prefixes = [tok.decode(ids[:k], skip_special_tokens=skip) for k in range(1, len(ids) + 1)]
            case["skip" if skip else "keep"] = edits(prefixes)
        cases.append(case)
    tokenization = []
    for text in TEXTS:
        tokenization.append({
            "text": text,
            "ids": tok.encode(text, add_special_tokens=True),
            "ids_no_special": tok.encode(text, add_special_tokens=False),
        })
    import tokenizers
    import transformers

    return {
        "tokenizer": name,
        "dir": str(path.relative_to(ROOT)),
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "class": type(tok).__name__,
        "clean_up_tokenization_spaces": bool(getattr(tok, "clean_up_tokenization_spaces", False)),
        "all_special_ids": sorted(set(tok.all_special_ids)),
        "vocab_size": len(tok),
        "tricky_ids": tricky,
        "tokenization": tokenization,
        "cases": cases,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizers-only", action="store_true", help="only (re)write test/fixtures/tokenizers/*")
    ap.add_argument("--out", default=str(ROOT / "test" / "fixtures" / "decode"))
    ap.add_argument("--random", type=int, default=70, help="sequences of uniformly random ids per tokenizer")
    ap.add_argument("--texts", type=int, default=60, help="sequences from encoded texts (with spliced ids)")
    ap.add_argument("--tricky", type=int, default=80, help="sequences over punctuation/space/byte/special ids")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    if args.tokenizers_only:
        write_tokenizer_fixtures()
        return
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dirs = [(n, MODELS / n) for n in MODEL_FIXTURES] + [(n, TOKENIZERS / n) for n in TOKENIZER_FIXTURES]
    failed = []
    for i, (name, path) in enumerate(dirs):
        rng = random.Random(args.seed * 1000 + i)
        try:
            ref = reference_for(name, path, rng, args)
        except Exception as e:  # keep going: the other tokenizers' references are still useful
            import traceback

            traceback.print_exc()
            failed.append(name)
            continue
        with open(out / f"{name}.json", "w", encoding="utf-8") as f:
            json.dump(ref, f, ensure_ascii=False, separators=(",", ":"))
            f.write("\n")
        size = (out / f"{name}.json").stat().st_size
        print(f"{name}: {len(ref['cases'])} sequences, {size} bytes, class {ref['class']}, cleanup {ref['clean_up_tokenization_spaces']}", flush=True)
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
