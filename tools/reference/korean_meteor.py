#!/usr/bin/env python3
"""Korean METEOR as users report it, next to vidlora's morpheme METEOR, on any val_captions.jsonl.

The users' metric: nltk's meteor_score (defaults: Porter stemmer, WordNet, alpha 0.9, beta 3, gamma 0.5)
over KoNLPy Okt morphemes, `meteor_score([okt.morphs(reference)], okt.morphs(caption))`, averaged over
the captions. vidlora's: the same formula over MeCab + mecab-ko-dic tokens (MecabKoTokenizer,
include/vidlora/eval/mecab_tokenizer.hpp) in its two granularities, Okt units and raw morphemes. The MeCab
tokens here come from Debian's `mecab` program (the library vidlora links) and are grouped into Okt units
by this script's own code, so the C++ tokenizer is checked against an independent implementation.

    /opt/korenv/bin/python tools/reference/korean_meteor.py VAL_CAPTIONS.jsonl [--worst 10]
    /opt/korenv/bin/python tools/reference/korean_meteor.py tests/fixtures/eval/korean_caption_pairs.jsonl \
        --fixture tests/fixtures/eval/korean_meteor.json --markdown

Each line of the jsonl needs "caption" and "reference" (a string, or "references": a list); vidlora's
val_captions.jsonl has both. Prints the corpus METEOR of each tokenisation, the token agreement with Okt,
the worst pairs and the Python reference's rate (Okt tokenising + meteor_score, pairs per second on one core).

Set-up (Java is needed by KoNLPy; WordNet comes from Debian's wordnet-base when nltk's own data is absent):
    apt-get install default-jre-headless mecab wordnet-base wordnet-sense-index   # + tools/install-deps.sh for mecab-ko-dic
    python3 -m venv /opt/korenv && /opt/korenv/bin/pip install konlpy==0.6.0 nltk==3.10.4
"""
import argparse
import collections
import gzip
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import time

import warnings

import nltk
from nltk.translate.meteor_score import meteor_score

DEFAULT_DIC = os.environ.get("VIDLORA_MECAB_KO_DIC", "/usr/local/lib/mecab/dic/mecab-ko-dic")


# ---- WordNet for nltk's meteor_score -------------------------------------------------------------------------
def load_wordnet(data_dir):
    """nltk's WordNet 3.0: nltk's own data when installed, else built from Debian's wordnet-base (the same
    WordNet 3.0 database files; nltk also needs `lexnames`, which wordnet-base documents in its lexnames(5WN)
    man page, so it is written from there). Returns (wordnet, where it came from)."""
    from nltk.corpus import wordnet
    try:
        wordnet.ensure_loaded()
        root = pathlib.Path(str(wordnet.root))
        marker = root / "VIDLORA_SOURCE"
        return wordnet, (marker.read_text().strip() if marker.exists() else f"nltk_data wordnet ({root})")
    except LookupError:
        pass
    debian = pathlib.Path("/usr/share/wordnet")
    if not (debian / "data.noun").exists() or not (debian / "index.sense").exists():
        sys.exit("korean_meteor.py: no WordNet: install Debian's wordnet-base and wordnet-sense-index")
    root = pathlib.Path(data_dir) / "corpora" / "wordnet"
    if not (root / "lexnames").exists():
        root.mkdir(parents=True, exist_ok=True)
        for f in debian.iterdir():
            if f.is_file():  # the database files; Debian's `wordnet` package adds bin/, wnres/... beside them
                shutil.copy(f, root / f.name)
        man = gzip.open("/usr/share/man/man5/lexnames.5WN.gz", "rt").read()
        category = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
        rows = re.findall(r"^(\d\d)\t(\w+\.\w+)", man, flags=re.M)
        assert len(rows) == 45, f"lexnames(5WN): expected 45 lexicographer files, found {len(rows)}"
        (root / "VIDLORA_SOURCE").write_text("Debian wordnet-base 3.0 (/usr/share/wordnet) in " + str(root) + "\n")
        (root / "lexnames").write_text("".join(f"{n}\t{name}\t{category[name.split('.')[0]]}\n" for n, name in rows))
    nltk.data.path.insert(0, str(data_dir))
    from nltk.corpus.reader.wordnet import WordNetCorpusReader
    with warnings.catch_warnings():  # "multilingual functions are not available": only English is used
        warnings.simplefilter("ignore")
        wn = WordNetCorpusReader(str(root), None)
    return wn, "Debian wordnet-base 3.0 (/usr/share/wordnet)"


class IdentityStemmer:
    def stem(self, word):
        return word


class NoWordNet:
    def synsets(self, *args, **kwargs):
        return []


# ---- MeCab tokens ---------------------------------------------------------------------------------------------
def mecab_analyse(texts, dic):
    """[(surface, first tag, last tag, whitespace before)] per text, from Debian's mecab program."""
    fmt = r"%m\t%H\t%pS\n"
    out = subprocess.run(["mecab", "-r", "/dev/null", "-d", dic, "-F", fmt, "-U", fmt, "-E", r"EOS\n"],
                         input="".join(t + "\n" for t in texts), capture_output=True, text=True, check=True).stdout
    result, current = [], []
    for line in out.split("\n"):
        if line == "EOS":
            result.append(current)
            current = []
        elif line:
            surface, feature, space = line.split("\t")
            tags = feature.split(",")[0].split("+")
            current.append((surface, tags[0], tags[-1], space != ""))
    assert len(result) == len(texts), (len(result), len(texts))
    return result


PREDICATES = {"VV", "VA", "VX", "VCP", "VCN", "XSV", "XSA"}


def okt_units(morphemes):
    """Groups MeCab morphemes the way Okt's morphs() does (see mecab_tokenizer.hpp): predicate + its endings,
    XR + XSA, and a run of particles are one token each, inside one word."""
    tokens, open_predicate, last = [], False, ""
    for surface, first, last_tag, space in morphemes:
        same_word = not space and tokens
        joins = bool(same_word) and ((open_predicate and first.startswith("E")) or
                                     (last.startswith("J") and first.startswith("J")) or
                                     (last == "XR" and first == "XSA"))
        if joins:
            tokens[-1] += surface
        else:
            tokens.append(surface)
        open_predicate = first in PREDICATES or (joins and open_predicate)
        last = last_tag
    return tokens


# ---- data -----------------------------------------------------------------------------------------------------
def load_pairs(path):
    rows = []
    for n, line in enumerate(pathlib.Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            sys.exit(f"{path}:{n}: not JSON: {e}")
        refs = r.get("references", [r["reference"]] if "reference" in r else None)
        if "caption" not in r or not refs:
            sys.exit(f"{path}:{n}: needs \"caption\" and \"reference\" (or \"references\")")
        clean = lambda s: " ".join(s.split())  # one line per text for the mecab program
        rows.append({"id": r.get("id", str(n)), "caption": clean(r["caption"]), "references": [clean(x) for x in refs]})
    if not rows:
        sys.exit(f"{path}: no captions")
    return rows


def score(rows, tok, wordnet, stemmer):
    return [max(meteor_score([tok[r["id"], k]], tok[r["id"], "c"], wordnet=wordnet, stemmer=stemmer)
                for k in range(len(r["references"]))) for r in rows]


def agreement(rows, a, b):
    """Share of Okt tokens matched by the other tokenisation (multiset overlap / max length), over all texts."""
    same = total = identical = texts = 0
    for r in rows:
        for key in ["c"] + list(range(len(r["references"]))):
            x, y = a[r["id"], key], b[r["id"], key]
            same += sum((collections.Counter(x) & collections.Counter(y)).values())
            total += max(len(x), len(y))
            identical += x == y
            texts += 1
    return same / total, identical / texts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("jsonl")
    ap.add_argument("--dic", default=DEFAULT_DIC)
    ap.add_argument("--worst", type=int, default=10)
    ap.add_argument("--fixture", help="write the per-pair tokens and scores here (tests/fixtures/eval/...)")
    ap.add_argument("--markdown", action="store_true", help="print the worst pairs as a markdown table")
    ap.add_argument("--nltk-data", default=str(pathlib.Path(sys.prefix) / "nltk_data"))
    a = ap.parse_args()
    if not (pathlib.Path(a.dic) / "sys.dic").exists():
        sys.exit(f"korean_meteor.py: no mecab-ko-dic in {a.dic} (tools/install-deps.sh installs it)")

    rows = load_pairs(a.jsonl)
    wordnet, wordnet_source = load_wordnet(a.nltk_data)
    from konlpy.tag import Okt
    import konlpy
    okt = Okt()
    texts = {}
    for r in rows:
        texts[r["id"], "c"] = r["caption"]
        for k, ref in enumerate(r["references"]):
            texts[r["id"], k] = ref
    keys = list(texts)
    okt.morphs("워밍업 문장입니다.")  # start the JVM before timing

    # The users' metric, timed as they run it: Okt morphs of both texts + meteor_score, per pair.
    t0, c0 = time.perf_counter(), time.process_time()
    okt_tok = {k: okt.morphs(texts[k]) for k in keys}
    users = score(rows, okt_tok, wordnet, nltk.stem.porter.PorterStemmer())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0

    analysed = dict(zip(keys, mecab_analyse([texts[k] for k in keys], a.dic)))
    morph_tok = {k: [m[0] for m in v] for k, v in analysed.items()}
    unit_tok = {k: okt_units(v) for k, v in analysed.items()}
    stem = nltk.stem.porter.PorterStemmer()
    res = {
        "okt": users,
        "mecab_okt_units": score(rows, unit_tok, wordnet, stem),
        "mecab_morphemes": score(rows, morph_tok, wordnet, stem),
    }
    exact = {  # exact matching only: what vidlora's METEOR computes (no stems, no synonyms)
        "okt": score(rows, okt_tok, NoWordNet(), IdentityStemmer()),
        "mecab_okt_units": score(rows, unit_tok, NoWordNet(), IdentityStemmer()),
        "mecab_morphemes": score(rows, morph_tok, NoWordNet(), IdentityStemmer()),
    }
    corpus = {k: statistics.fmean(v) for k, v in res.items()}

    print(f"{len(rows)} captions from {a.jsonl}; WordNet: {wordnet_source}; dictionary: {a.dic}")
    print(f"METEOR (nltk meteor_score {nltk.__version__}), corpus mean:")
    print(f"  Okt morphs (KoNLPy {konlpy.__version__}), the users' metric : {corpus['okt']:.4f}")
    print(f"  MeCab mecab-ko-dic, Okt units (vidlora)          : {corpus['mecab_okt_units']:.4f}"
          f"   difference {corpus['mecab_okt_units'] - corpus['okt']:+.4f}")
    print(f"  MeCab mecab-ko-dic, morphemes (vidlora)          : {corpus['mecab_morphemes']:.4f}"
          f"   difference {corpus['mecab_morphemes'] - corpus['okt']:+.4f}")
    for k in res:
        d = max(abs(x - y) for x, y in zip(res[k], exact[k]))
        print(f"  largest effect of the stem + WordNet stages on {k}: {d:.3g}")
    for name, tok in (("Okt units", unit_tok), ("morphemes", morph_tok)):
        share, same = agreement(rows, okt_tok, tok)
        diff = [abs(x - y) for x, y in zip(res["mecab_" + ("okt_units" if name == "Okt units" else "morphemes")], users)]
        print(f"  tokens, MeCab {name} vs Okt: {100 * share:.1f}% agree, {100 * same:.1f}% of texts identical; "
              f"per-pair |difference| mean {statistics.fmean(diff):.4f}, median {statistics.median(diff):.4f}, "
              f"max {max(diff):.4f}")
    print(f"Python reference rate: {len(rows) / wall:.0f} pairs/s wall, {len(rows) / cpu:.0f} pairs/s CPU "
          f"(Okt morphs + meteor_score, {len(rows)} pairs, one process)")

    order = sorted(range(len(rows)), key=lambda i: -abs(res["mecab_okt_units"][i] - users[i]))[:a.worst]
    if a.markdown:
        print("\n| pair | Okt | MeCab Okt units | difference | where the tokens differ (Okt / MeCab) |\n|---|---|---|---|---|")
    for i in order:
        r = rows[i]
        d = []
        for key in ["c", 0]:
            o, m = collections.Counter(okt_tok[r["id"], key]), collections.Counter(unit_tok[r["id"], key])
            d.append(" ".join(sorted((o - m).elements())) + " / " + " ".join(sorted((m - o).elements())))
        if a.markdown:
            print(f"| {r['id']} | {users[i]:.4f} | {res['mecab_okt_units'][i]:.4f} | "
                  f"{res['mecab_okt_units'][i] - users[i]:+.4f} | caption: {d[0]}; reference: {d[1]} |")
        else:
            print(f"  {r['id']}: Okt {users[i]:.4f} MeCab {res['mecab_okt_units'][i]:.4f}\n    caption {r['caption']}\n"
                  f"    Okt   {okt_tok[r['id'], 'c']}\n    MeCab {unit_tok[r['id'], 'c']}")

    if a.fixture:
        out = {
            "generator": "tools/reference/korean_meteor.py " + " ".join(sys.argv[1:]),
            "versions": {"nltk": nltk.__version__, "konlpy": konlpy.__version__,
                         "mecab": subprocess.run(["mecab", "-v"], capture_output=True, text=True).stdout.strip(),
                         "dictionary": (pathlib.Path(a.dic) / "SOURCE").read_text().strip()
                         if (pathlib.Path(a.dic) / "SOURCE").exists() else a.dic,
                         "wordnet": wordnet_source},
            "corpus": corpus,
            "corpus_exact": {k: statistics.fmean(v) for k, v in exact.items()},
            "pairs": [{
                "id": r["id"], "caption": r["caption"], "references": r["references"],
                "okt": {"caption": okt_tok[r["id"], "c"], "references": [okt_tok[r["id"], k] for k in range(len(r["references"]))]},
                "mecab_okt_units": {"caption": unit_tok[r["id"], "c"],
                                    "references": [unit_tok[r["id"], k] for k in range(len(r["references"]))]},
                "mecab_morphemes": {"caption": morph_tok[r["id"], "c"],
                                    "references": [morph_tok[r["id"], k] for k in range(len(r["references"]))]},
                "meteor": {k: res[k][i] for k in res},
                "meteor_exact": {k: exact[k][i] for k in exact},
            } for i, r in enumerate(rows)],
        }
        pairs = out.pop("pairs")  # one pair per line: compact, and diffs stay readable
        text = json.dumps(out, ensure_ascii=False, indent=1)[:-2] + ',\n "pairs": [\n'
        text += ",\n".join(json.dumps(p, ensure_ascii=False) for p in pairs) + "\n ]\n}\n"
        json.loads(text)
        pathlib.Path(a.fixture).write_text(text, encoding="utf-8")
        print(f"wrote {a.fixture}")


if __name__ == "__main__":
    main()
