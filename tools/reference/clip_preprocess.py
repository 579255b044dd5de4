"""Reference for vidlora::video::clip_preprocess / resize_bicubic: transformers' CLIPImageProcessorPil
(slow, PIL-based) on small generated RGB images. Writes tests/fixtures/video/clip_preprocess.json.

Run: /opt/refenv/bin/python tools/reference/clip_preprocess.py
"""
import json
import pathlib
import sys

# tools/reference/ holds scripts named like packages (tokenizers.py): never import from this folder.
sys.path = [p for p in sys.path if pathlib.Path(p or ".").resolve() != pathlib.Path(__file__).resolve().parent]

import numpy as np
import PIL
from PIL import Image
import transformers
from transformers import CLIPImageProcessorPil  # the PIL backend of CLIPImageProcessor

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests/fixtures/video/clip_preprocess.json"


def make_image(width, height, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255.0 / max(1, width - 1), y * 255.0 / max(1, height - 1),
                     (x + y) * 255.0 / max(1, width + height - 2)], axis=-1)
    noise = rng.integers(0, 256, size=(height, width, 3))
    mix = np.where(rng.random((height, width, 1)) < 0.3, noise, base)  # smooth areas plus hard edges, clipping
    return np.clip(np.round(mix), 0, 255).astype(np.uint8)


def main():
    small = CLIPImageProcessorPil(size={"shortest_edge": 24}, crop_size={"height": 24, "width": 24})
    cases = []
    for width, height, seed in [(40, 30, 1), (24, 36, 2), (20, 16, 3), (31, 24, 4)]:
        img = make_image(width, height, seed)
        out = small(images=[img], return_tensors="np")["pixel_values"][0]  # [3, 24, 24]
        rw, rh = (int(24 * width / height), 24) if width >= height else (24, int(24 * height / width))
        resized = np.asarray(Image.fromarray(img).resize((rw, rh), resample=Image.BICUBIC))
        cases.append({"width": width, "height": height, "rgb": img.reshape(-1).tolist(),
                      "resized_width": rw, "resized_height": rh, "resized": resized.reshape(-1).tolist(),
                      "pixel_values": [round(float(v), 7) for v in out.reshape(-1)]})

    # The default 336 processor (what CLIP ViT-L/14-336 uses): compare statistics and a strided subset.
    default = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    img = make_image(64, 48, 5)
    out = default(images=[img], return_tensors="np")["pixel_values"][0]
    flat = out.reshape(-1)
    stride = 997
    full = {"width": 64, "height": 48, "rgb": img.reshape(-1).tolist(), "shape": list(out.shape),
            "channel_mean": out.reshape(3, -1).mean(axis=1).astype(float).tolist(),
            "channel_std": out.reshape(3, -1).std(axis=1).astype(float).tolist(),
            "subset_stride": stride, "subset": [round(float(v), 7) for v in flat[::stride]]}

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "versions": {"transformers": transformers.__version__, "pillow": PIL.__version__, "numpy": np.__version__},
        "processor": "CLIPImageProcessorPil(size={'shortest_edge': 24}, crop_size=24x24), PIL bicubic",
        "small": cases, "default_336": full}))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
