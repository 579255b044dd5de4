#!/usr/bin/env python3
"""Do a demo run's frozen vision features carry an attribute of the clip, whatever the decoder learns?

Trains two small classifiers ("probes") per attribute on the features a run cached (OUT/feature_cache, one
safetensors file per clip) against the clips' label metadata (DATA/labels/*.json, tools/make_demo_data.sh),
on the run's training clips, and scores them on its held-out clips (OUT/val_captions.jsonl):
  linear   logistic regression on the clip's mean feature;
  tokens   a two-layer MLP on every token plus a learned per-token embedding, attention-pooled within each
           frame, the frames' pooled vectors concatenated into a two-layer MLP head: about the capacity of
           the demo's projector and decoder together, but trained for this one attribute.
A probe near the majority baseline says the features (or the sampled frames) do not show the attribute to a
learner of that size; a probe far above the captioner says the captioner, not the features, is the limit.
--raw replaces the features by the raw pixels of the same frames (patches of the encoder's size, from
ffmpeg at --image-size): the probe then measures what an encoder that loses nothing would give.

Needs numpy and torch (a reference environment, not the library). Usage:
    tools/feature_probe.py RUN_DIR [--out out] [--attrs shape,shake,motion,colour] [--epochs 60] [--frames 4]
                           [--raw --image-size 48 --patch 8] [--frame-tokens 36]
--frame-tokens N keeps the first frames x N tokens of each clip (the frames' tokens; the change tokens of
--change-pool, which follow them, are dropped); by default every token, which needs a multiple of --frames.
RUN_DIR holds data/ and OUT/ as tools/run-demo.sh leaves them.
"""
import argparse
import glob
import json
import os
import struct
import subprocess

import numpy as np
import torch

VALUES = {
    "shape": ("shape", ["circle", "square"]),
    "motion": ("motion", ["left_to_right", "right_to_left", "top_to_bottom", "bottom_to_top", "still"]),
    "colour": ("shape_color", ["red", "blue", "green", "yellow", "purple", "black", "white", "orange"]),
    "shake": ("event", None),
    "scene_change": ("event", None),
}


def label(attr, meta):
    key, values = VALUES[attr]
    if attr == "shake":
        return int(meta[key] == "shake")
    if attr == "scene_change":
        return int(meta[key] == "scene_change")
    return values.index(meta[key])


def cached_features(run, out):
    feats = {}
    for f in glob.glob(os.path.join(run, out, "feature_cache", "*.safetensors")):
        b = open(f, "rb").read()
        n = struct.unpack("<Q", b[:8])[0]
        header = json.loads(b[8:8 + n])
        video = header["__metadata__"]["key"].split("\n")[0]
        t = header["features"]
        begin, end = t["data_offsets"]
        feats[os.path.basename(video)[:-4]] = np.frombuffer(b[8 + n + begin:8 + n + end], np.float32).reshape(t["shape"])
    return feats


def raw_patches(run, clips, frames, size, patch):
    """The frames' pixels cut into patch x patch x 3 tokens (uniform frames: the first, the last, evenly between)."""
    feats = {}
    grid = size // patch
    for clip in clips:
        raw = subprocess.run(["ffmpeg", "-v", "error", "-i", os.path.join(run, "data", "videos", clip + ".mp4"), "-vf",
                              f"scale={size}:{size}:flags=bicubic", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                             capture_output=True, check=True).stdout
        video = np.frombuffer(raw, np.uint8).reshape(-1, size, size, 3)
        picked = video[np.round(np.linspace(0, len(video) - 1, frames)).astype(int)].astype(np.float32) / 255.0
        feats[clip] = picked.reshape(frames, grid, patch, grid, patch, 3).transpose(0, 1, 3, 2, 4, 5).reshape(
            frames * grid * grid, patch * patch * 3)
    return feats


def probe(kind, xtr, ytr, xte, frames, classes, epochs):
    torch.manual_seed(0)
    mu, sd = xtr.mean((0, 1)), xtr.std((0, 1)) + 1e-6
    tokens, width = xtr.shape[1], 128
    if kind == "linear":
        net = torch.nn.Linear(xtr.shape[2], classes)
        params = list(net.parameters())

        def forward(x):
            return net(((x - mu) / sd).mean(1))
    else:
        per_token = torch.nn.Sequential(torch.nn.Linear(xtr.shape[2], width), torch.nn.GELU(),
                                        torch.nn.Linear(width, width))
        position = torch.nn.Parameter(torch.zeros(tokens, width))
        attend = torch.nn.Linear(width, 1)
        head = torch.nn.Sequential(torch.nn.Linear(width * frames, width), torch.nn.GELU(), torch.nn.Linear(width, classes))
        params = list(per_token.parameters()) + [position] + list(attend.parameters()) + list(head.parameters())

        def forward(x):
            h = (per_token((x - mu) / sd) + position).view(x.shape[0], frames, tokens // frames, width)
            return head((torch.softmax(attend(h), 2) * h).sum(2).flatten(1))
    opt = torch.optim.AdamW(params, 3e-3, weight_decay=0.01)
    for _ in range(epochs):
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(forward(xtr[idx]), ytr[idx]).backward()
            opt.step()
    with torch.no_grad():
        return forward(xte).argmax(1), forward(xtr).argmax(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--out", default="out")
    ap.add_argument("--attrs", default="shape,shake,motion,colour")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--raw", action="store_true")
    ap.add_argument("--image-size", type=int, default=48)
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--frame-tokens", type=int, default=0)
    a = ap.parse_args()
    meta = {}
    for f in glob.glob(os.path.join(a.run, "data", "labels", "*.json")):
        j = json.load(open(f))
        meta[j["clip_id"]] = j["metadata"]
    held_out = set()
    for line in open(os.path.join(a.run, a.out, "val_captions.jsonl")):
        held_out.add(json.loads(line)["id"])
    feats = cached_features(a.run, a.out)
    if a.frame_tokens:
        feats = {c: f[:a.frames * a.frame_tokens] for c, f in feats.items()}
    tokens = next(iter(feats.values())).shape[0]
    if not a.raw and tokens % a.frames:
        ap.error(f"{tokens} tokens per clip is not a multiple of --frames {a.frames}: give --frame-tokens "
                 "(the change tokens of --change-pool follow the frames' tokens)")
    if a.raw:
        feats = raw_patches(a.run, sorted(feats), a.frames, a.image_size, a.patch)
    train = sorted(c for c in feats if c not in held_out)
    test = sorted(c for c in feats if c in held_out)
    print(f"{len(train)} training clips, {len(test)} held-out clips; {'raw pixels' if a.raw else 'cached features'} "
          f"{feats[train[0]].shape}")
    for attr in a.attrs.split(","):
        x = lambda clips: torch.tensor(np.stack([feats[c] for c in clips]))
        y = lambda clips: torch.tensor([label(attr, meta[c]) for c in clips])
        xtr, ytr, xte, yte = x(train), y(train), x(test), y(test)
        classes = int(max(ytr.max(), yte.max())) + 1
        present = [c for c in range(classes) if (yte == c).any()]
        majority = max((yte == c).float().mean().item() for c in present)
        row = [f"{attr}: majority {majority:.2f}"]
        for kind in ("linear", "tokens"):
            pred, fit = probe(kind, xtr, ytr, xte, a.frames, classes, a.epochs)
            acc = (pred == yte).float().mean().item()
            balanced = np.mean([(pred[yte == c] == c).float().mean().item() for c in present])
            row.append(f"{kind} {acc:.2f} (balanced {balanced:.2f}; training clips {(fit == ytr).float().mean().item():.2f})")
        print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
