#!/usr/bin/env python3
"""Reference tokenizers and ids for vidlora::model tokenizers (tests/fixtures/model/).

No model hub is reachable, so the two reference tokenizers are built here, deterministically, on a
small Korean + English caption corpus (tests/fixtures/model/tokenizer_corpus.txt):

  * tokenizer.model: a LLaMA-style SentencePiece BPE model (python `sentencepiece` trainer;
    byte_fallback, <unk>=0 <s>=1 </s>=2, identity normalisation, dummy prefix, split digits,
    user-defined <image> / <video> placeholders). Reference ids: transformers' LlamaTokenizer
    loaded from that file (adds BOS), cross-checked against the sentencepiece processor.
  * tokenizer.json: a HF `tokenizers` byte-level BPE with exactly Qwen2's normaliser (NFC),
    pre-tokeniser (Split on Qwen2's regex, Isolated, then ByteLevel without prefix space and
    without its own regex), ByteLevel decoder, trained with BpeTrainer (vocab 1000) and Qwen's
    special tokens appended as added tokens. Reference ids: `tokenizers` encode without special
    handling beyond the added tokens (Qwen2 adds no BOS).

Also recorded: decode strings of a few id sequences (including ones that cut a UTF-8 character),
and NFC of decomposed strings (unicodedata), which the C++ NFC must reproduce.

Run: /opt/refenv/bin/python tools/reference/tokenizer_fixtures.py
"""
import io
import json
import os
import random
import sys
import tempfile
import unicodedata

# This file is named like the `tokenizers` package: keep its own folder off the import path.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import sentencepiece as spm
import tokenizers
import transformers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "model")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>"]


def corpus_lines():
    """Background-video style captions (precomposed Hangul) plus mixed ASCII / digits / emoji lines."""
    rng = random.Random(20260417)
    colors = ["파란", "빨간", "초록", "검은", "흰", "노란", "회색", "보라색"]
    shapes = ["원이", "사각형이", "삼각형이", "별이", "선이", "점들이", "구름이", "물결이"]
    moves = ["왼쪽에서 오른쪽으로 움직인다", "오른쪽에서 왼쪽으로 천천히 이동한다", "위에서 아래로 떨어진다",
             "화면 중앙에서 회전한다", "점점 커지다가 사라진다", "깜빡이며 나타난다", "부드럽게 흔들린다"]
    scenes = ["배경에서", "하늘 위에서", "바다 위에서", "도시 야경 위에서", "숲 속에서", "어두운 방에서"]
    lines = []
    for _ in range(260):
        lines.append(f"{rng.choice(colors)} {rng.choice(scenes)} {rng.choice(colors)} {rng.choice(shapes)} "
                     f"{rng.choice(moves)}.")
    english = ["A blue circle moves from left to right.", "The camera slowly zooms in on the city at night.",
               "Waves roll across the screen; it's calm.", "They're walking, we've seen it, I'm sure, you'll see.",
               "Frame 12 of 240 shows 3 stars and 1 moon.", "Colors: RGB(255, 128, 0) -> #FF8000!",
               "Loop duration is 10.5s at 30fps (1920x1080).", "배경 video 4K 60fps, 밝기 80% 😀🎬",
               "Snow falls ❄️ over the 서울 skyline 🌃.", "Text overlay: \"안녕하세요\" fades out..."]
    for i in range(40):
        lines.append(english[i % len(english)] + ("" if i < 10 else f" #{i}"))
    rng.shuffle(lines)
    return lines


SENTENCES = [
    "파란 배경에서 흰 원이 왼쪽에서 오른쪽으로 움직인다.",
    "검은 하늘 위에서 노란 별이 깜빡이며 나타난다.",
    "화면 중앙에서 보라색 사각형이 회전한다",
    "고양이가 창밖을 바라본다",  # syllables that are rare or absent in the corpus
    "뷁 똠방각하 햏햏",
    "A blue circle moves from left to right.",
    "배경 video 4K 60fps, 밝기 80% 😀🎬",
    "Snow falls ❄️ over the 서울 skyline 🌃.",
    "They're here, it's 'quoted', WE'LL GO, I'M OK, you'd know, it'S",
    "Numbers 1234567890 and ١٢٣ and ⅷ and ²³",
    "  leading spaces and trailing   ",
    "tabs\tand\t\tmore\ttabs",
    "line one\nline two\n\n\nline three\r\nend\n",
    "spaces before newline   \n  after",
    "punctuation!!! ??? ... (brackets) [x] {y} <z>",
    "mixed한글English숫자123섞임",
    "email: user@example.com, url: https://example.org/a?b=c",
    "\u1100\u1161\u11a8 decomposed jamo \u1112\u1161\u11ab\u1100\u1173\u11af",  # NFC composes to 각 / 한글
    "cafe\u0301 and re\u0301sume\u0301",  # NFC composes é
    "<|im_start|>user\n이 영상을 설명해 주세요.<|im_end|>\n<|im_start|>assistant\n",
    "<|vision_start|><|video_pad|><|video_pad|><|vision_end|>영상 설명",
    "text<|endoftext|>more text<|im_end|>",
    "USER: <video>\n영상을 한 문장으로 설명하세요. ASSISTANT:",
    "<image> 이미지와 <video> 비디오",
    "Ünïcödé ñ ß ẞ Ω ω Σσς",
    "日本語のテキストと中文文本",
    "non\u00a0breaking\u3000ideographic\u2003em space",
    "",
    " ",
    "a",
    "'s's 'S ''t",
    "emoji 👍🏽 👨‍👩‍👧 🇰🇷 done",
    # \s is the White_Space property (U+3000, U+0085, U+2028 yes; U+001C, U+180E, U+200B no); (?i) folds ſ to s.
    "a\u3000\u3000b x\x85\x85y p\x1c\x1cq tab\x0b\x0cff m\u2028\u2028n z\u200b\u200bz a\u180e\u180eb",
    "it'ſa x'ſtx it'LLa q\x85\nr Ⅻ ⅷ ½ ٣ '\u212aa",
]


def random_strings(count=60, seed=7):
    """Strings drawn from the characters the regex and NFC treat differently: the pre-tokeniser's corner cases."""
    rng = random.Random(seed)
    atoms = [" ", "  ", "\n", "\r\n", "\t", "\u3000", "\u00a0", "\x85", "'", "'s", "'LL", "'re", "s", "t", "ve",
             "a", "Z", "é", "e\u0301", "\u1100\u1161", "한", "글", "영상", "7", "42", "٣", "½", "!", "?!", "...", "(",
             "-", "_", "#", "😀", "👍🏽", "❄️", "中", "ー", "\u200b", "<|im_end|>", "<|video_pad|>", "<video>", "</s>"]
    return ["".join(rng.choice(atoms) for _ in range(rng.randint(1, 14))) for _ in range(count)]


def train_sentencepiece(corpus_path):
    model = io.BytesIO()  # no model_prefix: it would be recorded in the trainer spec
    spm.SentencePieceTrainer.train(
        input=corpus_path, model_writer=model, model_type="bpe", vocab_size=800,
        character_coverage=1.0, byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        normalization_rule_name="identity", add_dummy_prefix=True, remove_extra_whitespaces=False,
        split_digits=True, allow_whitespace_only_pieces=True, user_defined_symbols=["<image>", "<video>"],
        num_threads=1, seed_sentencepiece_size=100000, minloglevel=2)
    return model.getvalue()


def train_qwen_like(corpus_path):
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=1000, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train([corpus_path], trainer)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in QWEN_SPECIALS])
    return tok


def main():
    os.makedirs(OUT, exist_ok=True)
    lines = corpus_lines()
    corpus_path = os.path.join(OUT, "tokenizer_corpus.txt")
    with open(corpus_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        model_bytes = train_sentencepiece(corpus_path)
        for folder in (tmp, OUT):
            with open(os.path.join(folder, "tokenizer.model"), "wb") as f:
                f.write(model_bytes)
        sp = spm.SentencePieceProcessor(model_file=os.path.join(OUT, "tokenizer.model"))
        # transformers converts tokenizer.model into its own BPE + Metaspace pipeline; legacy=False is its default.
        llama = transformers.LlamaTokenizer.from_pretrained(tmp, add_bos_token=True)
        llama_legacy = transformers.LlamaTokenizer.from_pretrained(tmp, add_bos_token=True, legacy=True)

    qwen = train_qwen_like(corpus_path)
    qwen.save(os.path.join(OUT, "tokenizer.json"))
    qwen = Tokenizer.from_file(os.path.join(OUT, "tokenizer.json"))

    sp_cases, qwen_cases = [], []
    sp_disagree = []
    for s in SENTENCES + random_strings():
        hf_ids = llama.encode(s)  # BOS + pieces, added tokens split out first
        sp_ids = sp.encode(s)
        if hf_ids[1:] != sp_ids:
            sp_disagree.append(s)
        sp_cases.append({"text": s, "ids": hf_ids, "ids_legacy": llama_legacy.encode(s), "sentencepiece_ids": sp_ids,
                         "decoded": llama.decode(hf_ids[1:]), "decoded_with_bos": llama.decode(hf_ids),
                         "decoded_skip_special": llama.decode(hf_ids, skip_special_tokens=True)})
        enc = qwen.encode(s)
        qwen_cases.append({"text": s, "ids": enc.ids, "tokens": enc.tokens,
                           "decoded": qwen.decode(enc.ids, skip_special_tokens=False)})

    # Added tokens that overlap (leftmost-longest), match after NFC (normalized=True), or strip whitespace.
    extra = [AddedToken("<|im", normalized=False), AddedToken("caf\u00e9", normalized=True),
             AddedToken("<mask>", lstrip=True, rstrip=True, normalized=False)]
    qwen_extra = Tokenizer.from_file(os.path.join(OUT, "tokenizer.json"))
    qwen_extra.add_tokens(extra)
    extra_json = json.loads(qwen_extra.to_str())["added_tokens"][-len(extra):]
    added_cases = [{"text": s, "ids": qwen_extra.encode(s).ids} for s in
                   ["<|im_start|>x<|im y", "a cafe\u0301 b café", "one  <mask>  two", "x<mask>\ny",
                    "\u3000<mask>\u3000z", "<mask><mask> <|im_end|><|im"]]

    # Decoding id sequences that cut a multi-byte character in half (lossy UTF-8, U+FFFD).
    han = qwen.encode("한").ids + qwen.encode("뷁").ids
    decode_cases = [
        {"ids": han, "text": qwen.decode(han)},
        {"ids": han[:1], "text": qwen.decode(han[:1])},
        {"ids": han[1:], "text": qwen.decode(han[1:])},
        {"ids": [qwen.token_to_id("<|im_start|>")] + qwen.encode("hi").ids,
         "text": qwen.decode([qwen.token_to_id("<|im_start|>")] + qwen.encode("hi").ids, skip_special_tokens=False),
         "text_skip_special": qwen.decode([qwen.token_to_id("<|im_start|>")] + qwen.encode("hi").ids,
                                          skip_special_tokens=True)},
    ]

    nfc_inputs = ["\u1100\u1161", "\u1100\u1161\u11a8", "\uac00\u11a8", "\u1112\u1161\u11ab\u1100\u1173\u11af",
                  "e\u0301", "a\u0323\u0302", "a\u0302\u0323", "\u1e9b\u0323", "\u212b", "\u2126", "\u0344",
                  "\u00c5\u0301", "q\u0307\u0323", "\u0958", "\u1f80\u0301", "\uac01\u11a8", "\u1100\u1100\u1161",
                  "\ud7a3", "\u03d3", "x\u0301\u0300\u0327y"]
    nfc_cases = [{"input": s, "nfc": unicodedata.normalize("NFC", s)} for s in nfc_inputs]

    fixture = {
        "versions": {"sentencepiece": spm.__version__, "tokenizers": tokenizers.__version__,
                     "transformers": transformers.__version__, "python": sys.version.split()[0],
                     "unicodedata": unicodedata.unidata_version},
        "sentencepiece": {"vocab_size": sp.get_piece_size(), "bos_id": sp.bos_id(), "eos_id": sp.eos_id(),
                          "unk_id": sp.unk_id(), "pad_id": sp.pad_id(),
                          "hf_differs_from_sentencepiece": sp_disagree, "cases": sp_cases,
                          "decode_cases": [{"ids": ids, "text": llama.decode(ids)} for ids in
                                           ([645, 240, 188], [240, 188, 134], [645, 241, 157, 134, 241, 136],
                                            [2, 645, 383, 3, 15])]},
        "byte_level_bpe": {"vocab_size": qwen.get_vocab_size(with_added_tokens=True),
                           "special_ids": {s: qwen.token_to_id(s) for s in QWEN_SPECIALS},
                           "cases": qwen_cases, "decode_cases": decode_cases,
                           "extra_added_tokens": extra_json, "extra_added_cases": added_cases},
        "nfc": nfc_cases,
    }
    with open(os.path.join(OUT, "tokenizer_ids.json"), "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, indent=1)
    print("sentencepiece vs transformers disagreements:", len(sp_disagree), "of", len(sp_cases))


if __name__ == "__main__":
    main()
