#!/usr/bin/env python3
"""Ten optimizer steps of the two-stage recipe on a tiny LLaVA-NeXT-Video in transformers + PEFT, the
reference for tests/trainer/test_trajectory.cpp, which runs vidlora's Trainer on the same model, data and
settings and checks the loss at every step.

The recipe as the people this toolkit serves run it, written out as a plain loop:
  stage 1: projector only (LLM frozen), 2 epochs; stage 2: projector + LoRA (r 8, alpha 16, dropout 0, the
  seven target modules of the language model), 8 epochs; each stage its own torch.optim.AdamW (betas 0.9 /
  0.999, eps 1e-8, weight decay 0.01 on weights, none on biases, as transformers' Trainer groups them) and
  transformers.get_cosine_schedule_with_warmup (warmup = ceil(ratio x steps), as TrainingArguments does);
  4 clips, batch 2 x gradient accumulation 2 (one optimizer step per epoch), the step's loss the
  label-smoothed (0.1) cross-entropy summed over both micro-batches and divided by the step's supervised
  token count, torch.nn.utils.clip_grad_norm_(max_norm=1.0).
The model runs whole: pixel_values_videos through the CLIP tower, LLaVA-NeXT-Video's 2x2 average pooling,
the projector and the video-token splice of LlavaNextVideoForConditionalGeneration.forward. The features
the projector receives (captured with a forward hook) are stored per clip: vidlora's Trainer caches
exactly that input, so the test feeds it and compares everything from the projector on.

Writes tests/fixtures/trainer/trajectory/: model.safetensors + config.json (save_pretrained),
lora_A.safetensors (PEFT's initial A, which the test loads; B starts at zero on both sides),
features.safetensors (clip<i>: [frames x 4, 32]) and reference.json (prompt, captions, settings, the ten
losses, the final projector and LoRA tensors' norms).

Run:  /opt/refenv/bin/python -P tools/reference/trainer_trajectory.py
"""
import json
import math
import pathlib

import peft
import safetensors
import safetensors.torch
import torch
import torch.nn.functional as F
import transformers
from peft import LoraConfig, get_peft_model
from transformers import (CLIPVisionConfig, LlamaConfig, LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration,
                          get_cosine_schedule_with_warmup)

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "trainer" / "trajectory"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
VOCAB, IMAGE_TOKEN, VIDEO_TOKEN, EOS, PAD = 64, 60, 61, 2, 0
RANK, ALPHA, SMOOTHING, DECAY, MAX_NORM = 8, 16, 0.1, 0.01, 1.0
BATCH, ACCUM, FRAMES = 2, 2, 2
STAGES = [  # name, train LoRA, epochs, lr, warmup ratio
    ("stage1-projector", False, 2, 5e-3, 0.1),
    ("stage2-projector+lora", True, 8, 5e-3, 0.03),
]
PROMPT = [1, VIDEO_TOKEN, 9, 11]  # BOS, the video placeholder, two prompt tokens
CAPTIONS = [[20, 21, 22, 23], [30, 31, 32, 33, 34, 35], [20, 25, 26], [40, 41, 42, 43, 44]]


def versions():
    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "safetensors": safetensors.__version__}


def build_model(seed):
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=28, patch_size=7, num_channels=3, projection_dim=32,
                              hidden_act="quick_gelu", layer_norm_eps=1e-5)
    text = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6,
                       tie_word_embeddings=False, bos_token_id=1, eos_token_id=EOS, pad_token_id=PAD)
    cfg = LlavaNextVideoConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN,
                               video_token_index=VIDEO_TOKEN, projector_hidden_act="gelu", vision_feature_layer=-2,
                               vision_feature_select_strategy="default", spatial_pool_mode="average",
                               spatial_pool_stride=2, image_grid_pinpoints=[[28, 28]])
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = LlavaNextVideoForConditionalGeneration(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # larger-than-default weights so that every path carries signal
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    model = build_model(seed=71)
    model.save_pretrained(OUT, safe_serialization=True)
    for extra in ("generation_config.json",):
        (OUT / extra).unlink(missing_ok=True)

    g = torch.Generator().manual_seed(72)
    videos = [torch.randn(1, FRAMES, 3, 28, 28, generator=g) for _ in CAPTIONS]
    tokens_per_frame = (28 // 7 // 2) ** 2
    n_visual = FRAMES * tokens_per_frame

    # what the projector receives, per clip (the Trainer's feature cache holds exactly this)
    captured = []
    hook = model.model.multi_modal_projector.register_forward_hook(lambda m, args, out: captured.append(args[0]))
    features = {}
    with torch.no_grad():
        for i, v in enumerate(videos):
            captured.clear()
            ids = torch.tensor([[1] + [VIDEO_TOKEN] * n_visual + [9, 11]])
            model(input_ids=ids, pixel_values_videos=v)
            features[f"clip{i}"] = captured[0].reshape(-1, captured[0].shape[-1]).contiguous()
    hook.remove()
    assert features["clip0"].shape == (n_visual, 32), features["clip0"].shape
    safetensors.torch.save_file(features, OUT / "features.safetensors", metadata={"format": "pt"})

    lcfg = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, bias="none",
                      target_modules=r".*language_model.*\.(" + "|".join(TARGETS) + ")")
    torch.manual_seed(73)
    pm = get_peft_model(model, lcfg)
    lora_a = {}
    for name, p in pm.named_parameters():
        if "lora_A" in name:
            key = name.split("language_model.")[1].replace(".default", "")  # layers.N.self_attn.q_proj.lora_A.weight
            lora_a[key] = p.detach().clone().contiguous()
    safetensors.torch.save_file(lora_a, OUT / "lora_A.safetensors", metadata={"format": "pt"})

    projector = [p for n, p in pm.named_parameters() if "multi_modal_projector" in n]
    lora = [p for n, p in pm.named_parameters() if "lora_" in n]
    named = {n: p for n, p in pm.named_parameters()}

    def groups(params):
        names = {id(p): n for n, p in named.items()}
        decay = [p for p in params if not names[id(p)].endswith("bias")]
        no_decay = [p for p in params if names[id(p)].endswith("bias")]
        return [{"params": decay, "weight_decay": DECAY}, {"params": no_decay, "weight_decay": 0.0}]

    def micro_batch(clips):
        seqs = [PROMPT[:1] + [VIDEO_TOKEN] * n_visual + PROMPT[2:] + CAPTIONS[c] + [EOS] for c in clips]
        length = max(len(s) for s in seqs)
        ids = torch.full((len(clips), length), PAD, dtype=torch.long)
        mask = torch.zeros(len(clips), length, dtype=torch.long)
        labels = torch.full((len(clips), length), -100, dtype=torch.long)
        for b, (c, s) in enumerate(zip(clips, seqs)):
            ids[b, :len(s)] = torch.tensor(s)
            mask[b, :len(s)] = 1
            answer = CAPTIONS[c] + [EOS]
            labels[b, len(s) - len(answer):len(s)] = torch.tensor(answer)
        return ids, mask, labels, torch.cat([videos[c] for c in clips])

    pm.train()  # dropout is 0 everywhere: train mode changes nothing but is what a training run uses
    losses, lrs = [], []
    for name, train_lora, epochs, lr, warmup_ratio in STAGES:
        for p in pm.parameters():
            p.requires_grad_(False)
        params = projector + (lora if train_lora else [])
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(groups(params), lr=lr, betas=(0.9, 0.999), eps=1e-8)
        steps_per_epoch = math.ceil(len(CAPTIONS) / (BATCH * ACCUM))
        total = epochs * steps_per_epoch
        sched = get_cosine_schedule_with_warmup(opt, math.ceil(warmup_ratio * total), total)
        for _ in range(total):
            opt.zero_grad()
            valid = sum(len(c) + 1 for c in CAPTIONS)
            step_loss = 0.0
            for mb in range(0, len(CAPTIONS), BATCH):
                ids, mask, labels, pixels = micro_batch(list(range(mb, mb + BATCH)))
                logits = pm(input_ids=ids, attention_mask=mask, pixel_values_videos=pixels).logits
                loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1),
                                       ignore_index=-100, label_smoothing=SMOOTHING, reduction="sum") / valid
                loss.backward()
                step_loss += float(loss)
            torch.nn.utils.clip_grad_norm_(params, MAX_NORM)
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
            losses.append(step_loss)

    final = {}
    for n, p in pm.named_parameters():
        if "multi_modal_projector" in n or "lora_B" in n:
            key = n.split("multi_modal_projector.")[-1] if "multi_modal_projector" in n else \
                n.split("language_model.")[1].replace(".default", "")
            final[key] = p.detach().clone().contiguous()
    safetensors.torch.save_file(final, OUT / "final.safetensors", metadata={"format": "pt"})
    ref = {"versions": versions(), "prompt": PROMPT, "video_token": VIDEO_TOKEN, "eos": EOS, "pad": PAD,
           "captions": CAPTIONS, "rank": RANK, "alpha": ALPHA, "label_smoothing": SMOOTHING, "weight_decay": DECAY,
           "max_grad_norm": MAX_NORM, "batch": BATCH, "accumulation": ACCUM,
           "stages": [{"name": s[0], "train_lora": s[1], "epochs": s[2], "lr": s[3], "warmup_ratio": s[4]}
                      for s in STAGES],
           "losses": losses, "lrs": lrs}
    (OUT / "reference.json").write_text(json.dumps(ref, indent=1))
    print("losses:", " ".join(f"{x:.6f}" for x in losses))


if __name__ == "__main__":
    main()
