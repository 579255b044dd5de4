"""PySceneDetect on the clip bench_video makes: ContentDetector and AdaptiveDetector, time and cut F1.

Run bench_video first (it writes /tmp/vidlora-bench/cuts_1080p_21s.mp4 and the known cuts beside it), then
    /opt/refenv/bin/python benchmarks/video_scenedetect.py [clip.mp4] [--repetitions 3]
Prints one line per detector: median wall and process-CPU seconds over the repetitions, the cuts found and F1
(a detection within one frame of a known cut is a hit), to compare with BM_DetectSceneChanges.
"""
import argparse
import json
import pathlib
import statistics
import sys
import time

import cv2
import scenedetect
from scenedetect import AdaptiveDetector, ContentDetector, detect


def f1(found, known, tolerance=1):
    used = [False] * len(known)
    hits = 0
    for c in found:
        for i, k in enumerate(known):
            if not used[i] and abs(c - k) <= tolerance:
                used[i] = True
                hits += 1
                break
    if not found or not hits:
        return 0.0
    precision, recall = hits / len(found), hits / len(known)
    return 2 * precision * recall / (precision + recall)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("clip", nargs="?", default="/tmp/vidlora-bench/cuts_1080p_21s.mp4")
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    clip = pathlib.Path(args.clip)
    truth = json.loads(clip.with_suffix(".json").read_text())
    known = truth["cuts"]
    print(f"scenedetect {scenedetect.__version__}, opencv {cv2.__version__}, python {sys.version.split()[0]}")
    print(f"clip {clip} ({truth['frames']} frames), known cuts {known}")
    for name, make in [("ContentDetector", ContentDetector), ("AdaptiveDetector", AdaptiveDetector)]:
        times, cpu, cuts = [], [], []
        for _ in range(args.repetitions):
            start, start_cpu = time.perf_counter(), time.process_time()
            scenes = detect(str(clip), make())
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)  # all threads of this process (OpenCV's decoder too)
            cuts = [s[0].frame_num for s in scenes[1:]]  # first frame of every scene after the first
        print(f"{name}: median {statistics.median(times):.3f} s wall, {statistics.median(cpu):.3f} s CPU "
              f"over {args.repetitions} runs (min wall {min(times):.3f}), cuts {cuts}, F1 {f1(cuts, known):.3f}")


if __name__ == "__main__":
    main()
