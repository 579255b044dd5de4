#!/usr/bin/env python3
"""SceneChange vs Uniform on the demo clips that end in a short second scene.

For each held-out clip whose label says a scene change happens (metadata.event == "scene_change"),
checks whether a run's caption mentions the change and names the second background correctly
("장면이 바뀌어 <색> 배경이 나타난다"). Usage:
    tools/scene_ablation.py DATA_DIR RUN_DIR [RUN_DIR ...]   (RUN_DIR holds val_captions.jsonl)
"""
import json
import pathlib
import re
import sys

data = pathlib.Path(sys.argv[1])
labels = {}
for f in sorted((data / "labels").glob("*.json")):
    j = json.loads(f.read_text(encoding="utf-8"))
    labels[j["clip_id"]] = j
second = re.compile(r"장면이 바뀌어 (\S+) 배경")
for run in sys.argv[2:]:
    rows = [json.loads(l) for l in pathlib.Path(run, "val_captions.jsonl").read_text(encoding="utf-8").splitlines() if l]
    cut = [r for r in rows if labels[r["id"]]["metadata"].get("event") == "scene_change"]
    short = [r for r in cut if labels[r["id"]]["metadata"].get("second_scene_s", 99) <= 1.2]
    def score(subset):
        mentioned = sum(1 for r in subset if second.search(r["caption"]))
        named = sum(1 for r in subset
                    if (m := second.search(r["caption"])) and m.group(1) == second.search(r["reference"]).group(1))
        return mentioned, named, len(subset)
    no_cut = [r for r in rows if labels[r["id"]]["metadata"].get("event") != "scene_change"]
    false_cut = sum(1 for r in no_cut if second.search(r["caption"]))
    m, n, t = score(cut)
    ms, ns, ts = score(short)
    print(f"{run}: cut clips {t}: change mentioned {m}, second background right {n}; "
          f"second scene <= 1.2 s: {ts} clips, mentioned {ms}, right {ns}; "
          f"clips without a cut: {len(no_cut)}, change claimed {false_cut}")
