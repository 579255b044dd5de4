#!/usr/bin/env python3
"""Encode throughput of the reference libraries on the tokenizer corpus, for comparison with
benchmarks/bench_model_tokenizer.cpp (same corpus, one caption per call, CPU time, single thread).

Run: /opt/refenv/bin/python tools/reference/tokenizer_speed.py
"""
import os
import sys
import time

# tools/reference/tokenizers.py shadows the `tokenizers` package: keep this folder off the import path.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import sentencepiece as spm  # noqa: E402
import tokenizers  # noqa: E402

HERE = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "model")


def measure(name, encode, lines, repeats=5, min_seconds=1.0):
    nbytes = sum(len(line.encode("utf-8")) for line in lines)
    best = None
    for _ in range(repeats):
        start, rounds = time.process_time(), 0
        while True:
            for line in lines:
                encode(line)
            rounds += 1
            elapsed = time.process_time() - start
            if elapsed >= min_seconds / repeats:
                break
        rate = rounds * nbytes / elapsed / 2**20
        best = rate if best is None else max(best, rate)
    print(f"{name:45s} {best:8.2f} MiB/s (best of {repeats}, CPU time)")


def main():
    with open(os.path.join(HERE, "tokenizer_corpus.txt"), encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    bpe = tokenizers.Tokenizer.from_file(os.path.join(HERE, "tokenizer.json"))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(HERE, "tokenizer.model"))
    print(f"tokenizers {tokenizers.__version__}, sentencepiece {spm.__version__}, {len(lines)} lines")
    measure("python tokenizers ByteLevel BPE encode", lambda s: bpe.encode(s).ids, lines)
    measure("python sentencepiece encode", sp.encode, lines)


if __name__ == "__main__":
    main()
