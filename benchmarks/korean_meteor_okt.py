"""The Python reference's rate for bench_eval_mecab: KoNLPy Okt morphs + nltk meteor_score per caption pair.

    /opt/korenv/bin/python benchmarks/korean_meteor_okt.py [--repetitions 3]
Runs on tests/fixtures/eval/korean_caption_pairs.jsonl (the pairs bench_eval_mecab scores) in one process
(the JVM behind Okt is started and warmed first, as a user's evaluation loop has it), pinned to one core
when taskset is available to the caller. Prints the median over the repetitions of: pairs per second for
Okt on both texts + meteor_score (the users' metric end to end), and for meteor_score alone on ready tokens.
WordNet as in tools/reference/korean_meteor.py.
"""
import argparse
import json
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tools" / "reference"))
import korean_meteor  # noqa: E402  (WordNet loading)
from nltk.translate.meteor_score import meteor_score  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--pairs", default=str(pathlib.Path(__file__).resolve().parents[1] /
                                           "tests/fixtures/eval/korean_caption_pairs.jsonl"))
    a = ap.parse_args()
    rows = [json.loads(l) for l in pathlib.Path(a.pairs).read_text(encoding="utf-8").splitlines() if l]
    wordnet, source = korean_meteor.load_wordnet(str(pathlib.Path(sys.prefix) / "nltk_data"))
    from konlpy.tag import Okt
    okt = Okt()
    for r in rows[:20]:  # warm the JVM's JIT
        okt.morphs(r["caption"])
    full, metric = [], []
    for _ in range(a.repetitions):
        c0 = time.process_time()
        toks = []
        for r in rows:
            c, ref = okt.morphs(r["caption"]), okt.morphs(r["reference"])
            meteor_score([ref], c, wordnet=wordnet)
            toks.append((c, ref))
        full.append(len(rows) / (time.process_time() - c0))
        c0 = time.process_time()
        for c, ref in toks:
            meteor_score([ref], c, wordnet=wordnet)
        metric.append(len(rows) / (time.process_time() - c0))
    print(f"{len(rows)} pairs, {a.repetitions} repetitions, WordNet: {source}")
    print(f"Okt morphs + meteor_score: {statistics.median(full):.0f} pairs/s (process CPU time, median)")
    print(f"meteor_score on ready tokens: {statistics.median(metric):.0f} pairs/s (process CPU time, median)")


if __name__ == "__main__":
    main()
