#!/usr/bin/env python3
"""Reference values for the config.json fields that change the math (tests/model/test_hf_config.cpp).

Tiny random models with fixed seeds, saved with save_pretrained into tests/fixtures/model/hfconfig/<case>/
(config.json + model.safetensors) with reference.json holding versions, inputs, logits and (where asked)
RoPE inverse frequencies and greedy generations, all from transformers (CPU, float32, eager attention):

  rope_linear     LLaMA, rope_parameters {linear, factor 2}
  rope_dynamic    LLaMA, {dynamic, factor 2}, max_position_embeddings 8: a 10-token forward (frequencies
                  grow), then a 6-token forward (back to the original ones), then greedy generation with
                  the KV cache from 5 to 12 positions (grows at every step past 8)
  rope_yarn       LLaMA, {yarn, factor 4, original_max_position_embeddings 16} (attention factor inferred)
  rope_yarn_qwen3 Qwen3, {yarn, factor 3, mscale 1, mscale_all_dim 0.5, beta_fast 16, beta_slow 2, truncate false}
  rope_llama3     LLaMA, {llama3, factor 8, low 1, high 4, original 64}: all three frequency bands
  biases          LLaMA with attention_bias and mlp_bias
  llava_layers    LLaVA with vision_feature_layer [1, -2], select strategy "full", multimodal_projector_bias false

Run:  /opt/refenv/bin/python tools/reference/hf_config_cases.py
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
from transformers import (CLIPVisionConfig, LlamaConfig, LlamaForCausalLM, LlavaConfig,  # noqa: E402
                          LlavaForConditionalGeneration, Qwen3Config, Qwen3ForCausalLM)

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "model" / "hfconfig"
VOCAB = 64
IMAGE_TOKEN = 60


def versions():
    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "safetensors": safetensors.__version__}


def to_list(t):
    def short(v):
        return [short(x) for x in v] if isinstance(v, list) else float("%.9g" % v)
    return short(t.detach().to(torch.float32).tolist())


def text_kwargs(**extra):
    base = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6, attn_implementation="eager",
                tie_word_embeddings=False)
    base.update(extra)
    return base


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed" in name or "embedding" in name:
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 if "position" in name or "class" in name else 1.0))
            else:
                fan_in = p.shape[-1] if p.dim() == 2 else p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)


def batch(seed, length):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, IMAGE_TOKEN, (2, length), generator=g)
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, length - 3:] = 0
    ids[1, length - 3:] = 0
    return ids, mask


def save(name, model, ref):
    out = OUT / name
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").unlink(missing_ok=True)
    ref["versions"] = versions()
    ref["case"] = name
    (out / "reference.json").write_text(json.dumps(ref))
    print("wrote", out)


def decoder_case(name, model, seed, length=10):
    randomize(model, seed)
    model.eval()
    ids, mask = batch(seed + 1, length)
    rotary = model.model.rotary_emb
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    ref = {"input_ids": ids.tolist(), "attention_mask": mask.tolist(), "logits": to_list(logits),
           "inv_freq": to_list(rotary.inv_freq), "attention_scaling": float(rotary.attention_scaling)}
    save(name, model, ref)


def dynamic_case(seed):
    cfg = LlamaConfig(**text_kwargs(max_position_embeddings=8,
                                    rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}))
    model = LlamaForCausalLM(cfg)
    randomize(model, seed)
    model.eval()
    rotary = model.model.rotary_emb
    ids, mask = batch(seed + 1, 10)
    short, short_mask = batch(seed + 2, 6)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        grown = rotary.inv_freq.clone()
        short_logits = model(input_ids=short, attention_mask=short_mask).logits
        reset = rotary.inv_freq.clone()
        prompt = ids[:1, :5]
        gen = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=7, do_sample=False,
                             pad_token_id=0, eos_token_id=None)[0, 5:].tolist()
    ref = {"input_ids": ids.tolist(), "attention_mask": mask.tolist(), "logits": to_list(logits),
           "grown_inv_freq": to_list(grown),
           "short_input_ids": short.tolist(), "short_attention_mask": short_mask.tolist(),
           "short_logits": to_list(short_logits), "reset_inv_freq": to_list(reset),
           "generate": {"prompt": prompt[0].tolist(), "max_new_tokens": 7, "tokens": gen}}
    save("rope_dynamic", model, ref)


def llava_case(seed):
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                              image_size=28, patch_size=7, num_channels=3, projection_dim=32,
                              hidden_act="quick_gelu", layer_norm_eps=1e-5)
    text = LlamaConfig(**text_kwargs())
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN, projector_hidden_act="gelu",
                      vision_feature_layer=[1, -2], vision_feature_select_strategy="full",
                      multimodal_projector_bias=False)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg)
    randomize(model, seed)
    model.eval()
    g = torch.Generator().manual_seed(seed + 1)
    pixels = torch.randn(2, 3, 28, 28, generator=g)
    n_img = 17  # 16 patches + CLS ("full")
    prompts = [[1, 5, 7] + [IMAGE_TOKEN] * n_img + [9, 11, 20, 21], [1, 6] + [IMAGE_TOKEN] * n_img + [8, 30, 31]]
    length = max(len(p) for p in prompts)
    ids = torch.zeros(2, length, dtype=torch.long)
    mask = torch.zeros(2, length, dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, :len(p)] = torch.tensor(p)
        mask[b, :len(p)] = 1
    with torch.no_grad():
        vis = model.model.vision_tower(pixels, output_hidden_states=True)
        features = torch.cat([vis.hidden_states[1], vis.hidden_states[-2]], dim=-1)  # [2, 17, 64]
        projected = model.model.multi_modal_projector(features)
        logits = model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
    ref = {"image_token_id": IMAGE_TOKEN, "pixel_values": to_list(pixels), "prompts": prompts,
           "input_ids": ids.tolist(), "attention_mask": mask.tolist(), "vision_features": to_list(features),
           "projected": to_list(projected), "logits": to_list(logits)}
    save("llava_layers", model, ref)


def main():
    torch.manual_seed(0)
    decoder_case("rope_linear", LlamaForCausalLM(LlamaConfig(**text_kwargs(
        rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}))), seed=101)
    dynamic_case(seed=102)
    decoder_case("rope_yarn", LlamaForCausalLM(LlamaConfig(**text_kwargs(
        rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                         "rope_theta": 10000.0}))), seed=103)
    decoder_case("rope_yarn_qwen3", Qwen3ForCausalLM(Qwen3Config(**text_kwargs(
        head_dim=16, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "yarn", "factor": 3.0, "original_max_position_embeddings": 16,
                         "mscale": 1.0, "mscale_all_dim": 0.5, "beta_fast": 16.0, "beta_slow": 2.0,
                         "truncate": False, "rope_theta": 1e6}))), seed=104)
    decoder_case("rope_llama3", LlamaForCausalLM(LlamaConfig(**text_kwargs(
        max_position_embeddings=512,
        rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64, "rope_theta": 10000.0}))), seed=105)
    decoder_case("biases", LlamaForCausalLM(LlamaConfig(**text_kwargs(attention_bias=True, mlp_bias=True))), seed=106)
    llava_case(seed=107)


if __name__ == "__main__":
    main()
