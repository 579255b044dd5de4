#!/usr/bin/env python3
"""Which motions a demo run's held-out captions name, against their references.

Prints, per run, the 5x5 confusion matrix of the motion phrase (rows: the reference's motion, columns:
the caption's; "?" when the caption has no motion phrase of the grammar) and how often the caption at
least gets the axis right (horizontal, vertical or still). A run whose axis count is near a third of the
clips ignores where the shape is; one with the axis right but the direction wrong ignores the frames'
order. Usage:
    tools/motion_confusion.py RUN_DIR [RUN_DIR ...]   (RUN_DIR holds val_captions.jsonl)
"""
import collections
import json
import pathlib
import sys

PHRASES = [("left_to_right", "왼쪽에서 오른쪽으로"), ("right_to_left", "오른쪽에서 왼쪽으로"),
           ("top_to_bottom", "위에서 아래로"), ("bottom_to_top", "아래에서 위로"), ("still", "제자리에")]
AXIS = {"left_to_right": "horizontal", "right_to_left": "horizontal", "top_to_bottom": "vertical",
        "bottom_to_top": "vertical", "still": "still", "?": "?"}


def motion(caption):
    for name, phrase in PHRASES:
        if phrase in caption:
            return name
    return "?"


if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
    print(__doc__)
    sys.exit(0 if len(sys.argv) > 1 else 2)
for run in sys.argv[1:]:
    path = pathlib.Path(run, "val_captions.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    pairs = collections.Counter((motion(r["reference"]), motion(r["caption"])) for r in rows)
    names = [n for n, _ in PHRASES]
    print(f"{run}: {len(rows)} clips; rows: reference motion, columns: caption motion")
    print(f"  {'':>14} " + " ".join(f"{n[:8]:>8}" for n in names + ["?"]))
    for ref in names:
        print(f"  {ref:>14} " + " ".join(f"{pairs[(ref, gen)]:>8}" for gen in names + ["?"]))
    right = sum(c for (ref, gen), c in pairs.items() if ref == gen)
    axis = sum(c for (ref, gen), c in pairs.items() if AXIS[ref] == AXIS[gen])
    print(f"  motion right {right} of {len(rows)}, axis right {axis} of {len(rows)}")
