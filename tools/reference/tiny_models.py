#!/usr/bin/env python3
"""Reference values for vidlora::model from transformers + PEFT (CPU, float32, no hub access).

Builds tiny random models with fixed seeds (configs constructed in code), saves each with
save_pretrained (safetensors) into tests/fixtures/model/<name>/ and records in reference.json:
  - logits of the base model and of the PEFT LoRA model (r=4, alpha=8, dropout 0, all seven target
    modules of the language model, lora_B set to nonzero random values) on a right-padded batch,
  - the label-smoothed (0.1) next-token cross-entropy on that batch (prompt and padding labels -100),
  - the gradient of that loss with respect to every LoRA tensor (and the projector tensors for llava),
  - greedy generations (llama) for the KV-cache test.
The PEFT adapter is saved with save_pretrained too (adapter_model.safetensors).

Models: llama (untied head), qwen2 (q/k/v bias, tied head), qwen3 (q_norm/k_norm, head_dim 16 != hidden/heads),
llava (tiny CLIPVisionModel 28x28 / patch 7 -> 16 tokens, Mlp2xGelu projector, tiny LLaMA).

Run:  /opt/refenv/bin/python -P tools/reference/tiny_models.py
(-P: tools/reference/tokenizers.py would otherwise shadow the `tokenizers` package)
"""
import json
import pathlib

import peft
import safetensors
import torch
import torch.nn.functional as F
import transformers
from peft import LoraConfig, get_peft_model
from transformers import (CLIPVisionConfig, LlamaConfig, LlamaForCausalLM, LlavaConfig,
                          LlavaForConditionalGeneration, Qwen2Config, Qwen2ForCausalLM, Qwen3Config,
                          Qwen3ForCausalLM)

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "model"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK, ALPHA, SMOOTHING = 4, 8, 0.1
VOCAB = 64
IMAGE_TOKEN = 60


def versions():
    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "safetensors": safetensors.__version__}


def to_list(t):
    """float32 values as their shortest 9-significant-digit decimal (exact for float32, keeps files small)."""
    def short(v):
        return [short(x) for x in v] if isinstance(v, list) else float("%.9g" % v)
    return short(t.detach().to(torch.float32).tolist())


def text_kwargs(**extra):
    base = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6, attn_implementation="eager")
    base.update(extra)
    return base


def randomize(model, seed):
    """Larger-than-default random weights so every path carries signal (default init is std 0.02)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):  # RMSNorm / LayerNorm scales near 1
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed" in name or "embedding" in name:
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 if "position" in name or "class" in name else 1.0))
            else:
                fan_in = p.shape[-1] if p.dim() == 2 else p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)


def set_lora_b(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


def lora_grads(model):
    out = {}
    for name, p in model.named_parameters():
        if "lora_" in name:
            key = name.replace("base_model.model.", "", 1).replace(".default", "")
            out[key] = to_list(p.grad)
    return out


def smoothed_loss(logits, labels):
    """Next-token loss: logits[:, :-1] against labels[:, 1:], mean over labels != -100."""
    v = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1), ignore_index=-100,
                           label_smoothing=SMOOTHING)


def text_batch(seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, IMAGE_TOKEN, (2, 10), generator=g)
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 7:] = 0
    ids[1, 7:] = 0  # pad id
    labels = ids.clone()
    labels[:, :3] = -100  # prompt
    labels[mask == 0] = -100
    return ids, mask, labels


def decoder_case(name, model, seed):
    out_dir = OUT / name
    randomize(model, seed)
    model.save_pretrained(out_dir, safe_serialization=True)
    ids, mask, labels = text_batch(seed + 1)
    model.eval()
    with torch.no_grad():
        base_logits = model(input_ids=ids, attention_mask=mask).logits
        base_loss = smoothed_loss(base_logits, labels)
    gen = None
    if name == "llama":
        with torch.no_grad():
            prompt = ids[:1, :5]
            gen = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False,
                                 pad_token_id=0, eos_token_id=None)[0, 5:].tolist()
    cfg = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=TARGETS, bias="none")
    peft_model = get_peft_model(model, cfg)
    set_lora_b(peft_model, seed + 2)
    peft_model.save_pretrained(out_dir / "adapter")
    (out_dir / "adapter" / "README.md").unlink(missing_ok=True)
    logits = peft_model(input_ids=ids, attention_mask=mask).logits
    loss = smoothed_loss(logits, labels)
    loss.backward()
    ref = {
        "versions": versions(), "model": name, "rank": RANK, "alpha": ALPHA, "label_smoothing": SMOOTHING,
        "input_ids": ids.tolist(), "attention_mask": mask.tolist(), "labels": labels.tolist(),
        "base_logits": to_list(base_logits), "base_loss": float(base_loss),
        "logits": to_list(logits), "loss": float(loss), "lora_grads": lora_grads(peft_model),
    }
    if gen is not None:
        ref["generate"] = {"prompt": ids[0, :5].tolist(), "max_new_tokens": 8, "tokens": gen}
    (out_dir / "reference.json").write_text(json.dumps(ref))


def llava_case(seed):
    out_dir = OUT / "llava"
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                              image_size=28, patch_size=7, num_channels=3, projection_dim=32,
                              hidden_act="quick_gelu", layer_norm_eps=1e-5)
    text = LlamaConfig(**text_kwargs())
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN, projector_hidden_act="gelu",
                      vision_feature_layer=-2, vision_feature_select_strategy="default")
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg)
    randomize(model, seed)
    model.save_pretrained(out_dir, safe_serialization=True)

    g = torch.Generator().manual_seed(seed + 1)
    pixels = torch.randn(2, 3, 28, 28, generator=g)
    n_img = 16
    prompts = [[1, 5, 7] + [IMAGE_TOKEN] * n_img + [9, 11], [1, 6] + [IMAGE_TOKEN] * n_img + [8]]
    answers = [[20, 21, 22, 23], [30, 31, 32, 33, 34, 35]]
    seq = [p + a for p, a in zip(prompts, answers)]
    length = max(len(s) for s in seq)
    ids = torch.zeros(2, length, dtype=torch.long)
    mask = torch.zeros(2, length, dtype=torch.long)
    labels = torch.full((2, length), -100, dtype=torch.long)
    for b, (p, a) in enumerate(zip(prompts, answers)):
        ids[b, :len(p) + len(a)] = torch.tensor(p + a)
        mask[b, :len(p) + len(a)] = 1
        labels[b, len(p):len(p) + len(a)] = torch.tensor(a)

    model.eval()
    with torch.no_grad():
        vis = model.model.vision_tower(pixels, output_hidden_states=True)
        features = vis.hidden_states[-2][:, 1:]  # [2, 16, 32]
        pooled = F.avg_pool2d(features.view(2, 4, 4, 32).permute(0, 3, 1, 2), 2).flatten(2).transpose(1, 2)

    targets = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    lcfg = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=targets, bias="none")
    peft_model = get_peft_model(model, lcfg)
    set_lora_b(peft_model, seed + 2)
    for n, p in peft_model.named_parameters():
        if "multi_modal_projector" in n:
            p.requires_grad_(True)
    peft_model.save_pretrained(out_dir / "adapter")
    (out_dir / "adapter" / "README.md").unlink(missing_ok=True)
    logits = peft_model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
    loss = smoothed_loss(logits, labels)
    loss.backward()
    proj = {}
    for n, p in peft_model.named_parameters():
        if "multi_modal_projector" in n:
            proj[n.split("multi_modal_projector.")[1]] = to_list(p.grad)
    grads = {k.split("language_model.")[-1]: v for k, v in lora_grads(peft_model).items()}
    ref = {
        "versions": versions(), "model": "llava", "rank": RANK, "alpha": ALPHA, "label_smoothing": SMOOTHING,
        "image_token_id": IMAGE_TOKEN, "pixel_values": to_list(pixels),
        "prompts": prompts, "answers": answers,
        "input_ids": ids.tolist(), "attention_mask": mask.tolist(), "labels": labels.tolist(),
        "vision_features": to_list(features), "pooled_features": to_list(pooled),
        "logits": to_list(logits), "loss": float(loss), "lora_grads": grads, "projector_grads": proj,
    }
    (out_dir / "reference.json").write_text(json.dumps(ref))


def main():
    torch.manual_seed(0)
    decoder_case("llama", LlamaForCausalLM(LlamaConfig(**text_kwargs(tie_word_embeddings=False, rope_theta=10000.0))),
                 seed=11)
    decoder_case("qwen2", Qwen2ForCausalLM(Qwen2Config(**text_kwargs(tie_word_embeddings=True, rope_theta=1e6))),
                 seed=22)
    decoder_case("qwen3", Qwen3ForCausalLM(Qwen3Config(**text_kwargs(tie_word_embeddings=False, head_dim=16,
                                                                     rope_theta=1e6, rms_norm_eps=1e-5))),
                 seed=33)
    llava_case(seed=44)


if __name__ == "__main__":
    main()
