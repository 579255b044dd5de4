#!/usr/bin/env python3
"""A whole LLaVA-NeXT-Video model in one directory, for model::LlavaModel (tests/model/test_llava_model.cpp).

Writes tests/fixtures/model/llava_next_video/: a tiny LlavaNextVideoForConditionalGeneration (CLIP 28x28 /
patch 7, 3 layers, feature layer -2, "default"; 2x2 average pooling: 16 -> 4 tokens per frame; Mlp2xGelu
projector; a 2-layer LLaMA decoder) saved with save_pretrained in shards (model.safetensors.index.json,
the newer model.language_model.* key layout), and reference.json with a right-padded batch of two
prompts, each with 8 video placeholders for a 2-frame clip, the clips' pixel values, the pooled +
projected video tokens and the logits, plus a greedy generation for the first prompt.

Run:  /opt/refenv/bin/python tools/reference/llava_model_cases.py
"""
import json
import pathlib
import shutil
import sys

sys.path = [p for p in sys.path if pathlib.Path(p or ".").resolve() != pathlib.Path(__file__).resolve().parent]

import peft  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (CLIPVisionConfig, LlamaConfig, LlavaNextVideoConfig,  # noqa: E402
                          LlavaNextVideoForConditionalGeneration)

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "model" / "llava_next_video"
VIDEO_TOKEN, IMAGE_TOKEN = 61, 60


def to_list(t):
    def short(v):
        return [short(x) for x in v] if isinstance(v, list) else float("%.9g" % v)
    return short(t.detach().to(torch.float32).tolist())


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed" in name or "embedding" in name or "newline" in name:
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 if "position" in name or "class" in name else 1.0))
            else:
                fan_in = p.shape[-1] if p.dim() == 2 else p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)


def main():
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                              image_size=28, patch_size=7, projection_dim=32, hidden_act="quick_gelu")
    text = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)
    cfg = LlavaNextVideoConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN,
                               video_token_index=VIDEO_TOKEN, spatial_pool_stride=2, spatial_pool_mode="average",
                               image_grid_pinpoints=[[28, 28]], vision_feature_layer=-2,
                               vision_feature_select_strategy="default")
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = LlavaNextVideoForConditionalGeneration(cfg)
    randomize(model, 301)
    model.eval()
    shutil.rmtree(OUT, ignore_errors=True)
    model.save_pretrained(OUT, safe_serialization=True, max_shard_size="100KB")
    (OUT / "generation_config.json").unlink(missing_ok=True)

    g = torch.Generator().manual_seed(302)
    clips = torch.randn(2, 2, 3, 28, 28, generator=g)  # [batch, frames, C, H, W]
    n_video = 2 * 4
    prompts = [[1, 5, 7] + [VIDEO_TOKEN] * n_video + [9, 11, 20], [1, 6] + [VIDEO_TOKEN] * n_video + [8]]
    length = max(len(p) for p in prompts)
    ids = torch.zeros(2, length, dtype=torch.long)
    mask = torch.zeros(2, length, dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, :len(p)] = torch.tensor(p)
        mask[b, :len(p)] = 1
    with torch.no_grad():
        video_tokens = model.model.get_video_features(pixel_values_videos=clips).pooler_output  # [2, 8, 32]
        logits = model(input_ids=ids, attention_mask=mask, pixel_values_videos=clips).logits
        prompt = ids[:1, :len(prompts[0])]
        gen = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), pixel_values_videos=clips[:1],
                             max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    ref = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "peft": peft.__version__, "safetensors": safetensors.__version__},
           "video_token_id": VIDEO_TOKEN, "pixel_values_videos": to_list(clips), "prompts": prompts,
           "input_ids": ids.tolist(), "attention_mask": mask.tolist(), "video_tokens": to_list(video_tokens),
           "logits": to_list(logits),
           "generate": {"max_new_tokens": 6, "tokens": gen[0, len(prompts[0]):].tolist()}}
    (OUT / "reference.json").write_text(json.dumps(ref))
    print("wrote", OUT, sorted(p.name for p in OUT.iterdir()))


if __name__ == "__main__":
    main()
