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
           "model_pieces": base, "vocab_size": len(loaded),
           "ids": {"<vid2>": vid2, "<obj>": obj, "<video>": video},
           "special": {"<vid2>": True, "<obj>": False, "<video>": True},
           "encodes": encodes, "decodes": decodes}
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(ref, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote", OUT, "pieces", base, "vocab", len(loaded), "ids", vid2, obj, video)


if __name__ == "__main__":
    main()
