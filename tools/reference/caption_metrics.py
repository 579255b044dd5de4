"""Reference caption metrics for vidlora::eval from pycocoevalcap and nltk.

BLEU-1..4 (pycocoevalcap Bleu(4), corpus level with the "closest" reference length), CIDEr-D
(pycocoevalcap Cider: clipped tf-idf, Gaussian length penalty sigma=6, x10, document frequency from
the reference set), ROUGE-L (pycocoevalcap Rouge, beta=1.2) and METEOR (nltk meteor_score with the
exact-match stage only: identity stemmer, an empty WordNet; alpha=0.9, beta=3, gamma=0.5). The METEOR 1.5
jar bundled with pycocoevalcap is also run with its exact module and the same parameters
(`-m exact -p "0.9 3.0 0.5 0.5" -lower`) and written as `meteor_jar` for the docs (not asserted).
Diversity (unique-caption ratio, distinct-1/2) is computed here from its definition.

Each case is scored on whitespace tokens and on characters (spaces dropped, every other code point a
token), as vidlora::eval::Tokenization::Whitespace / Characters.
Writes tests/fixtures/eval/caption_metrics.json.
"""
import importlib.metadata
import json
import pathlib
import random
import subprocess

import nltk
import numpy as np
import pycocoevalcap
import pycocoevalcap.meteor.meteor
from nltk.translate.meteor_score import meteor_score
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests/fixtures/eval/caption_metrics.json"
JAR_DIR = pathlib.Path(pycocoevalcap.meteor.meteor.__file__).parent


class IdentityStemmer:
    def stem(self, word):
        return word


class NoWordNet:
    def synsets(self, word):
        return []


# ---- the demo data's Korean template grammar (tools/make_demo_data.sh uses the same words) ----
COLORS = ["빨간", "파란", "초록", "노란", "보라", "검은", "흰", "주황"]
SHAPES = ["원이", "사각형이"]
MOVES = ["왼쪽에서 오른쪽으로 움직인다.", "오른쪽에서 왼쪽으로 움직인다.", "위에서 아래로 움직인다.",
         "아래에서 위로 움직인다.", "제자리에 멈춰 있다."]


def korean_caption(rng):
    bg, fg = rng.sample(COLORS, 2)
    text = f"{bg} 배경에서 {fg} {rng.choice(SHAPES)} {rng.choice(MOVES)}"
    r = rng.random()
    if r < 0.3:
        text += f" 장면이 바뀌어 {rng.choice(COLORS)} 배경이 나타난다."
    elif r < 0.45:
        text += " 잠시 빠르게 흔들린다."
    return text


def perturb(rng, caption):
    """A plausible model output: the caption with a few words dropped, replaced or swapped."""
    words = caption.split()
    for _ in range(rng.randint(0, 3)):
        op = rng.random()
        i = rng.randrange(len(words))
        if op < 0.3 and len(words) > 2:
            del words[i]
        elif op < 0.6:
            words[i] = rng.choice(COLORS + SHAPES + ["배경에서", "움직인다."])
        elif op < 0.8 and len(words) > 1:
            j = rng.randrange(len(words))
            words[i], words[j] = words[j], words[i]
        else:
            words.insert(i, words[i])
    return " ".join(words)


def handmade_cases():
    return [
        ("english coco-like with several references", [
            "a man is riding a horse on the beach",
            "two dogs play with a ball in the park",
            "a plate of food with broccoli and rice",
        ], [
            ["a man rides a horse along the beach", "a person riding a brown horse on sand",
             "man on horseback at the beach near the ocean"],
            ["two dogs are playing with a red ball", "dogs playing in a grassy park"],
            ["a plate with rice and broccoli", "a dinner plate of rice chicken and broccoli",
             "some food on a white plate", "broccoli and rice on a plate on a table"],
        ]),
        ("english candidate identical to its reference", [
            "the cat sat on the mat", "a dog runs across the yard",
        ], [["the cat sat on the mat"], ["a dog runs across the yard"]]),
        ("english reordered words make chunks", [
            "a cat sat on the mat", "mat the on sat cat the",
        ], [["the cat sat on a mat", "there is a cat on the mat"], ["the cat sat on the mat"]]),
        ("english repeated words are clipped", [
            "the the the the the the the", "on on the mat mat",
        ], [["the cat is on the mat"], ["the cat is on the mat", "there is a cat on the mat"]]),
        ("english short candidates take the brevity penalty", [
            "a cat", "dog", "red car parked",
        ], [["a small cat sleeping on a sofa in the sun"], ["a dog chasing a frisbee"],
            ["a red car parked on the side of a street", "red car"]]),
        ("english long candidates", [
            "a very very long caption that describes a cat sitting on a mat in a house with many other words added",
            "a dog and a cat and a bird and a fish are all in the picture together at once",
        ], [["a cat on a mat"], ["animals in a picture", "a dog a cat and a bird"]]),
        ("english mixed case matters for bleu but not meteor", [
            "The Cat sat on The Mat", "A DOG runs",
        ], [["the cat sat on the mat"], ["a dog runs fast", "A dog runs"]]),
        ("english no overlap at all", [
            "completely unrelated words here", "nothing matches",
        ], [["a cat on a mat"], ["the dog barks loudly", "a barking dog"]]),
        ("english one empty candidate", [
            "", "a dog runs on the grass", "a bird",
        ], [["a cat on a mat"], ["a dog running on grass"], ["a bird flies over the lake", "a small bird"]]),
        ("korean demo captions exact and near", [
            "파란 배경에서 흰 원이 왼쪽에서 오른쪽으로 움직인다. 장면이 바뀌어 초록 배경이 나타난다.",
            "빨간 배경에서 노란 사각형이 위에서 아래로 움직인다.",
            "검은 배경에서 흰 원이 제자리에 멈춰 있다. 잠시 빠르게 흔들린다.",
            "초록 배경에서 보라 원이 오른쪽으로 움직인다.",
        ], [
            ["파란 배경에서 흰 원이 왼쪽에서 오른쪽으로 움직인다. 장면이 바뀌어 초록 배경이 나타난다."],
            ["빨간 배경에서 노란 사각형이 아래에서 위로 움직인다.", "빨간 배경 위에서 노란 사각형이 아래로 내려간다."],
            ["검은 배경에서 흰 원이 제자리에 멈춰 있다. 잠시 빠르게 흔들린다.",
             "검은 화면에 흰 원이 가만히 있다가 흔들린다."],
            ["초록 배경에서 보라 원이 왼쪽에서 오른쪽으로 움직인다."],
        ]),
        ("korean and english mixed corpus", [
            "파란 배경에서 흰 원이 움직인다.", "a white circle moves on a blue background",
            "노란 배경에서 빨간 사각형이 위로 움직인다.",
        ], [
            ["파란 배경에서 흰 원이 왼쪽에서 오른쪽으로 움직인다.", "파란 화면에서 흰 원이 이동한다."],
            ["a white circle moves from left to right on a blue background"],
            ["노란 배경에서 빨간 사각형이 아래에서 위로 움직인다."],
        ]),
        ("korean mode collapse one caption for every clip", [
            "파란 배경에서 흰 원이 움직인다.", "파란 배경에서 흰 원이 움직인다.", "파란 배경에서 흰 원이 움직인다.",
            "파란 배경에서 흰 원이 움직인다.", "파란 배경에서 흰 원이 움직인다.",
        ], [
            ["파란 배경에서 흰 원이 왼쪽에서 오른쪽으로 움직인다."],
            ["빨간 배경에서 노란 사각형이 위에서 아래로 움직인다."],
            ["초록 배경에서 검은 원이 제자리에 멈춰 있다."],
            ["파란 배경에서 흰 사각형이 아래에서 위로 움직인다.", "파란 배경에서 흰 네모가 위로 올라간다."],
            ["보라 배경에서 주황 원이 오른쪽에서 왼쪽으로 움직인다. 장면이 바뀌어 흰 배경이 나타난다."],
        ]),
        ("single clip corpus gives cider zero", [
            "파란 배경에서 흰 원이 움직인다.",
        ], [["파란 배경에서 흰 원이 왼쪽에서 오른쪽으로 움직인다."]]),
    ]


def generated_cases():
    cases = []
    for seed, (n, max_refs) in enumerate([(6, 1), (8, 3), (10, 2), (12, 4), (7, 1), (9, 3), (16, 2)]):
        rng = random.Random(1000 + seed)
        cands, refs = [], []
        for _ in range(n):
            base = korean_caption(rng)
            rs = [base] + [perturb(rng, base) for _ in range(rng.randint(0, max_refs - 1))]
            rng.shuffle(rs)
            refs.append(rs)
            r = rng.random()
            cands.append(base if r < 0.2 else perturb(rng, base) if r < 0.8 else korean_caption(rng))
        cases.append((f"korean template grammar corpus seed {1000 + seed}", cands, refs))
    return cases


def to_tokens(text, mode):
    if mode == "whitespace":
        return text.split()
    return [c for c in text if not c.isspace()]


class MeteorJar:
    def __init__(self):
        self.p = subprocess.Popen(["java", "-jar", "-Xmx1G", "meteor-1.5.jar", "-", "-", "-stdio", "-l", "en",
                                   "-lower", "-m", "exact", "-p", "0.9 3.0 0.5 0.5"],
                                  cwd=JAR_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)

    def score(self, hyp, refs):
        line = " ||| ".join(["SCORE"] + refs + [hyp.replace("|||", "")])
        self.p.stdin.write((line + "\n").encode())
        self.p.stdin.flush()
        stats = self.p.stdout.readline().decode().strip()
        self.p.stdin.write(f"EVAL ||| {stats}\n".encode())
        self.p.stdin.flush()
        segment = float(self.p.stdout.readline().strip())
        self.p.stdout.readline()  # EVAL also answers the aggregate over the stats given (the same one here)
        return segment


def score_case(cands, refs, mode, jar):
    toks_c = [to_tokens(c, mode) for c in cands]
    toks_r = [[to_tokens(r, mode) for r in rs] for rs in refs]
    # pycocoevalcap takes pre-tokenised strings joined by single spaces
    res = {i: [" ".join(t)] for i, t in enumerate(toks_c)}
    gts = {i: [" ".join(t) for t in rs] for i, rs in enumerate(toks_r)}
    bleu, bleu_per = Bleu(4).compute_score(gts, res, verbose=0)
    cider, cider_per = Cider().compute_score(gts, res)
    rouge, rouge_per = Rouge().compute_score(gts, res)
    meteor_per = [meteor_score(rs, c, stemmer=IdentityStemmer(), wordnet=NoWordNet()) for c, rs in zip(toks_c, toks_r)]
    jar_per = [jar.score(" ".join(c), [" ".join(r) for r in rs]) for c, rs in zip(toks_c, toks_r)] if jar else None

    joined = [" ".join(t) for t in toks_c]
    uni = [g for t in toks_c for g in t]
    bi = [tuple(t[i:i + 2]) for t in toks_c for i in range(len(t) - 1)]
    return {
        "bleu": [float(b) for b in bleu],
        "bleu4_per_caption": [float(b) for b in bleu_per[3]],
        "cider_d": float(cider),
        "cider_d_per_caption": [float(s) for s in cider_per],
        "rouge_l": float(rouge),
        "rouge_l_per_caption": [float(s) for s in rouge_per],
        "meteor": float(np.mean(meteor_per)),
        "meteor_per_caption": [float(s) for s in meteor_per],
        "meteor_jar_per_caption": jar_per,
        "unique_ratio": len(set(joined)) / len(joined),
        "distinct_1": len(set(uni)) / len(uni) if uni else 0.0,
        "distinct_2": len(set(bi)) / len(bi) if bi else 0.0,
    }


def main():
    try:
        jar = MeteorJar()
        jar.score("a b", ["a b"])
    except Exception as e:  # no Java: the jar column is left out
        print("METEOR jar unavailable:", e)
        jar = None
    cases = []
    for name, cands, refs in handmade_cases() + generated_cases():
        entry = {"name": name, "candidates": cands, "references": refs}
        for mode in ("whitespace", "characters"):
            entry[mode] = score_case(cands, refs, mode, jar)
        cases.append(entry)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    meta = {"pycocoevalcap": importlib.metadata.version("pycocoevalcap"),
            "nltk": nltk.__version__, "numpy": np.__version__,
            "meteor_jar": "meteor-1.5.jar -m exact -p '0.9 3.0 0.5 0.5' -lower" if jar else None}
    OUT.write_text(json.dumps({"versions": meta, "cases": cases}, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(cases)} cases)")


if __name__ == "__main__":
    main()
