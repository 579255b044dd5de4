"""Reference for vidlora::video::rgb_to_hsv8, HsvHistogram and bhattacharyya_distance: OpenCV's
cvtColor(RGB2HSV), calcHist([0, 1], [50, 60], [0, 180, 0, 256]) and compareHist(HISTCMP_BHATTACHARYYA).
Writes tests/fixtures/video/hsv_histogram.json.

Run: /opt/refenv/bin/python tools/reference/hsv_histogram.py
"""
import json
import pathlib

import cv2
import numpy as np

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests/fixtures/video/hsv_histogram.json"


def hist(rgb):
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    h = cv2.calcHist([hsv], [0, 1], None, [50, 60], [0, 180, 0, 256])
    return hsv, h


def main():
    rng = np.random.default_rng(7)
    # Every (r, g, b) on a coarse grid plus the ties (r == g, g == b, grey) and random pixels.
    levels = [0, 1, 2, 17, 64, 100, 127, 128, 200, 254, 255]
    grid = np.array([[r, g, b] for r in levels for g in levels for b in levels], dtype=np.uint8)
    extra = rng.integers(0, 256, size=(2000, 3), dtype=np.uint8)
    pixels = np.concatenate([grid, extra]).reshape(1, -1, 3)
    hsv = cv2.cvtColor(pixels, cv2.COLOR_RGB2HSV).reshape(-1, 3)

    images = []
    for seed, tint in [(1, (1.0, 0.6, 0.3)), (2, (0.9, 0.7, 0.4)), (3, (0.2, 0.5, 1.0))]:
        r = np.random.default_rng(seed)
        img = np.clip(r.integers(0, 256, size=(24, 32, 3)) * np.array(tint), 0, 255).astype(np.uint8)
        images.append(img)
    hists = [hist(i)[1] for i in images]
    pairs = [[0, 1], [0, 2], [1, 2], [0, 0]]
    distances = [float(cv2.compareHist(hists[a], hists[b], cv2.HISTCMP_BHATTACHARYYA)) for a, b in pairs]
    normed = [cv2.normalize(h, None) for h in hists]  # L2-normalised, as scene detectors usually do
    distances_normed = [float(cv2.compareHist(normed[a], normed[b], cv2.HISTCMP_BHATTACHARYYA)) for a, b in pairs]

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "versions": {"opencv": cv2.__version__, "numpy": np.__version__},
        "pixels_rgb": pixels.reshape(-1).tolist(), "pixels_hsv": hsv.reshape(-1).tolist(),
        "images": [{"width": 32, "height": 24, "rgb": i.reshape(-1).tolist()} for i in images],
        "histograms": [{int(k): float(v) for k, v in enumerate(h.reshape(-1)) if v != 0} for h in hists],
        "pairs": pairs, "bhattacharyya": distances, "bhattacharyya_l2_normalised": distances_normed}))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
