#!/usr/bin/env python3
"""Reference ids for a LLaMA tokenizer directory whose added tokens live in tokenizer.json
(tests/model/test_tokenizer_loader.cpp).

A Hugging Face LLaMA directory ships tokenizer.model beside a tokenizer.json; tokens added after training (LLaVA's
<image> / <video> past a 32,000-piece model, ids 32000+) exist only in tokenizer.json's "added_tokens" (and
tokenizer_config.json's "added_tokens_decoder"), which also says which tokens are special (decode with
skip_special_tokens drops them), including pieces the SentencePiece model holds as user-defined.

Builds tests/fixtures/model/tokenizer_added/ from tests/fixtures/model/tokenizer.model with transformers'
LlamaTokenizer (what llava_processor_cases.py uses): two tokens past the model's pieces (<vid2>, special; <obj>, not special), the model's
user-defined <video> marked special; save_pretrained; then reference.json holds, from the directory reloaded by
AutoTokenizer, the ids of a few texts and the decodes of a few id lists with and without skip_special_tokens.

Run: /opt/refenv/bin/python tools/reference/tokenizer_added_tokens.py   (tools/reference/requirements.txt)
"""
import json
import os
import shutil
import sys
import tempfile

sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import tokenizers  # noqa: E402
import transformers  # noqa: E402
from transformers import AddedToken, AutoTokenizer  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures", "model")
OUT = os.path.join(FIXTURES, "tokenizer_added")

TEXTS = [
    "<video>\n눈 덮인 산 위로 해가 뜬다.",
    "A <vid2> then <obj> and <video> again",
    "<obj>바다<vid2>",
    "no added tokens here",
]


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(os.path.join(FIXTURES, "tokenizer.model"), os.path.join(tmp, "tokenizer.model"))
        tok = transformers.LlamaTokenizer.from_pretrained(tmp, add_bos_token=True)
    base = len(tok)
    tok.add_tokens([AddedToken("<vid2>", special=True, normalized=False),
                    AddedToken("<obj>", special=False, normalized=False)])
    tok.add_special_tokens({"additional_special_tokens": ["<video>"]})
    tok.save_pretrained(OUT)
    shutil.copy(os.path.join(FIXTURES, "tokenizer.model"), os.path.join(OUT, "tokenizer.model"))
    loaded = AutoTokenizer.from_pretrained(OUT)
    vid2, obj, video = (loaded.convert_tokens_to_ids(t) for t in ("<vid2>", "<obj>", "<video>"))
    encodes = [{"text": t, "ids": loaded(t)["input_ids"]} for t in TEXTS]
    id_lists = [e["ids"] for e in encodes] + [[video, 300, vid2, 301, obj, 302]]
    decodes = [{"ids": ids, "text": loaded.decode(ids), "skip_special": loaded.decode(ids, skip_special_tokens=True)}
               for ids in id_lists]
    # tokenizer_config.json's `legacy` (a prefix space on every text run, not only the first) and add_bos_token /
    # add_eos_token, as a directory may set them: the same directory with those flags changed.
    flags = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in os.listdir(OUT):
            shutil.copy(os.path.join(OUT, name), tmp)
        for key, variant in (("legacy", {"legacy": True}), ("no_bos_eos", {"add_bos_token": False,
                                                                             "add_eos_token": True})):
            with open(os.path.join(OUT, "tokenizer_config.json")) as f:
                config = json.load(f)
            config.update(variant)
            with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
                json.dump(config, f)
            other = AutoTokenizer.from_pretrained(tmp)
            flags[key] = {"tokenizer_config": variant,
                          "encodes": [{"text": t, "ids": other(t)["input_ids"]} for t in TEXTS]}
    ref = {"versions": {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__},
           "flags": flags,
           "variants": variants(),
           "model_pieces": base, "vocab_size": len(loaded),
           "ids": {"<vid2>": vid2, "<obj>": obj, "<video>": video},
           "special": {"<vid2>": True, "<obj>": False, "<video>": True},
           "encodes": encodes, "decodes": decodes}
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(ref, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote", OUT, "pieces", base, "vocab", len(loaded), "ids", vid2, obj, video)


# Directories made from the one above with tokenizer.json's post-processor changed or tokenizer.json left out, and
# with special tokens listed in tokenizer_config.json only: transformers' ids, vocabulary size and decodes of each.
VARIANT_TEXTS = TEXTS + ["A <zzz> <video> <obj> hi", "<image> <video>", "<pad><yyy> x<zzz>"]


def variants():
    with open(os.path.join(OUT, "tokenizer.json")) as f:
        fast = json.load(f)
    with open(os.path.join(OUT, "tokenizer_config.json")) as f:
        config = json.load(f)
    eos_only = {"type": "TemplateProcessing",
                "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}}
    both = {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]},
                               "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}}
    decoder = {str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in fast["added_tokens"]}
    cases = [
        # tokenizer.json's post-processor decides BOS / EOS; tokenizer_config.json's flags do not.
        ("post_processor_none", {"add_bos_token": True}, {"post_processor": None}),
        ("post_processor_eos", {"add_bos_token": True}, {"post_processor": eos_only}),
        ("post_processor_bos_eos", {}, {"post_processor": both}),
        # A special token listed in tokenizer_config.json only is added after tokenizer.json's tokens.
        ("extra_special_new", {"extra_special_tokens": ["<video>", "<zzz>", "<obj>"]}, {}),
        # ... and one that is a piece of the model tokenizer.json does not add is marked special.
        ("extra_special_piece", {"extra_special_tokens": ["<image>"]},
         {"added_tokens": [t for t in fast["added_tokens"] if t["content"] != "<image>"]}),
        # transformers 4's additional_special_tokens counts only where extra_special_tokens is not a non-empty list.
        ("additional_beside_extra", {"extra_special_tokens": ["<video>"], "additional_special_tokens": ["<zzz>"]}, {}),
        ("additional_alone", {"extra_special_tokens": [], "additional_special_tokens": ["<zzz>"]}, {}),
        # Tokens named by a key (extra_special_tokens as an object, or a top-level "*_token" field) become special,
        # one the directory adds as not special too; a new one is added.
        ("named_object", {"extra_special_tokens": {"object_token": "<obj>"}}, {}),
        ("named_top_level", {"image_token": "<zzz>", "pad_token": "<pad>", "extra_special_tokens": ["<yyy>"]}, {}),
        # No tokenizer.json: tokenizer_config.json's add_bos_token / add_eos_token decide (given as transformers 4
        # wrote them), added_tokens_decoder adds, extra_special_tokens marks and appends.
        ("no_json_bos", {"add_bos_token": True, "added_tokens_decoder": decoder, "extra_special_tokens": []}, None),
        ("no_json_bos_eos", {"add_bos_token": True, "add_eos_token": True, "added_tokens_decoder": decoder,
                             "extra_special_tokens": []}, None),
        ("no_json_extra", {"add_bos_token": False, "extra_special_tokens": ["<video>", "<zzz>"]}, None),
        ("no_json_extra_named", {"add_bos_token": True, "extra_special_tokens": {"image_token": "<zzz>"}}, None),
    ]
    out = {}
    for name, config_update, json_update in cases:
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(os.path.join(OUT, "tokenizer.model"), tmp)
            c = dict(config)
            c.update(config_update)
            with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
                json.dump(c, f)
            if json_update is not None:
                j = dict(fast)
                j.update(json_update)
                with open(os.path.join(tmp, "tokenizer.json"), "w") as f:
                    json.dump(j, f)
            tok = AutoTokenizer.from_pretrained(tmp)
            encodes = []
            for t in VARIANT_TEXTS:
                ids = tok(t)["input_ids"]
                encodes.append({"text": t, "ids": ids, "skip_special": tok.decode(ids, skip_special_tokens=True)})
            out[name] = {"tokenizer_config": config_update, "tokenizer_json": json_update, "vocab_size": len(tok),
                         "encodes": encodes}
    return out


if __name__ == "__main__":
    main()
