#!/usr/bin/env python3
"""Whole LLaVA-NeXT-Video directories with their processors, for model::LlavaProcessor + LlavaModel
(tests/model/test_llava_processor.cpp) and the programs' Hugging Face path (tests/programs/hf_model.sh).

Writes two save_pretrained directories under tests/fixtures/model/, each a tiny random
LlavaNextVideoForConditionalGeneration (CLIP 28x28 / patch 7, hidden 16, 2 layers; 2x2 pooling: 4 tokens per
frame; Mlp2xGelu projector; a 2-layer decoder of width 16) saved together with its LlavaNextVideoProcessor
(transformers 5.24 writes the image and video processor settings into processor_config.json):
  * llava_next_video_hf: LLaMA decoder, the SentencePiece tokenizer (tests/fixtures/model/tokenizer.model,
    which has <image> / <video>), llava-hf's LLaVA-NeXT-Video chat template ("USER: <video>\\n… ASSISTANT:"),
    video processor shortest_edge 28, crop 28 (frames 40x30 are resized to 37x28, then cropped).
  * llava_qwen_hf: Qwen2 decoder (tied embeddings, no projector bias), the byte-level BPE tokenizer.json with
    <image> / <video> added, a ChatML template (LLaVA-OneVision's, with Qwen's default system turn), and a
    video processor with size {height, width} 32x32 then crop 28 and its own mean / std / rescale factor.
and reference.json in each: the raw RGB frames (uint8, [frames, H, W, 3]), the prompt that
processor.apply_chat_template renders, the processor's input_ids and pixel_values_videos, the logits of that
input (the last 8 positions), a greedy generation, and the ids of prompt + answer as one training sequence tokenises.

Run:  /opt/refenv/bin/python -P tools/reference/llava_processor_cases.py
"""
import json
import pathlib
import shutil
import sys
import tempfile

sys.path = [p for p in sys.path if pathlib.Path(p or ".").resolve() != pathlib.Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (AutoProcessor, CLIPVisionConfig, LlamaConfig, LlavaNextVideoConfig,  # noqa: E402
                          LlavaNextVideoForConditionalGeneration, LlavaNextVideoProcessor, Qwen2Config)

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "model"

# llava-hf/LLaVA-NeXT-Video-7B-hf's processor chat template.
VICUNA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\\n' }}{% endfor %}{# Render all video then #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\\n' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")

# LLaVA-OneVision's ChatML template with Qwen's default system turn.
CHATML_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{{'<|im_end|>\\n'}}{% endfor %}{% if add_generation_prompt %}{{'<|im_start|>assistant\\n' }}{% endif %}")

QUESTION = "Describe this video."
LOGIT_ROWS = 8  # logits of the last 8 positions (the text after the video tokens) keep the fixture small
ANSWER = "a red circle moves left"


def to_list(t):
    def short(v):
        return [short(x) for x in v] if isinstance(v, list) else float("%.8g" % v)
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


def frames_rgb(seed, count, height, width):
    """Smooth colour fields with noise, so resizing has something to average: uint8 [count, H, W, 3]."""
    g = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    out = []
    for f in range(count):
        base = np.stack([128 + 100 * np.sin(x / 5.0 + f), 128 + 100 * np.cos(y / 4.0 - f), 64 + 3 * (x + y)], axis=-1)
        out.append(np.clip(base + g.normal(0, 20, base.shape), 0, 255).astype(np.uint8))
    return np.stack(out)


def llama_tokenizer():
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(FIXTURES / "tokenizer.model", pathlib.Path(tmp) / "tokenizer.model")
        tok = transformers.LlamaTokenizer.from_pretrained(tmp, add_bos_token=True)
    tok.add_special_tokens({"additional_special_tokens": ["<image>", "<video>"]})
    return tok


def qwen_tokenizer():
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(FIXTURES / "tokenizer.json"),
                                               eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": ["<image>", "<video>"]})
    return tok


def build(name, text_config, tokenizer, template, video_processor_kwargs, projector_bias, seed):
    out = FIXTURES / name
    video_id = tokenizer.convert_tokens_to_ids("<video>")
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                              image_size=28, patch_size=7, projection_dim=16, hidden_act="quick_gelu")
    cfg = LlavaNextVideoConfig(vision_config=vision, text_config=text_config, image_token_index=image_id,
                               video_token_index=video_id, spatial_pool_stride=2, spatial_pool_mode="average",
                               image_grid_pinpoints=[[28, 28]], vision_feature_layer=-2,
                               vision_feature_select_strategy="default", multimodal_projector_bias=projector_bias)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = LlavaNextVideoForConditionalGeneration(cfg)
    randomize(model, seed)
    model.eval()
    video_processor = transformers.LlavaNextVideoVideoProcessor(**video_processor_kwargs)
    image_processor = transformers.LlavaNextImageProcessor(size={"shortest_edge": 28},
                                                           crop_size={"height": 28, "width": 28},
                                                           image_grid_pinpoints=[[28, 28]])
    processor = LlavaNextVideoProcessor(video_processor=video_processor, image_processor=image_processor,
                                        tokenizer=tokenizer, chat_template=template, patch_size=7,
                                        vision_feature_select_strategy="default")
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    (out / "generation_config.json").unlink(missing_ok=True)
    if isinstance(tokenizer, transformers.LlamaTokenizer) or "Llama" in type(tokenizer).__name__:
        shutil.copy(FIXTURES / "tokenizer.model", out / "tokenizer.model")

    # Everything below is read back from the directory, as a user would load it.
    processor = AutoProcessor.from_pretrained(out)
    model = LlavaNextVideoForConditionalGeneration.from_pretrained(out, attn_implementation="eager")
    model.eval()
    video = frames_rgb(seed, 2, 30, 40)
    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    inputs = processor(text=prompt, videos=[video], return_tensors="pt")
    vicuna = "ASSISTANT" in template
    end = "</s>" if vicuna else "<|im_end|>"
    answer = (" " if vicuna else "") + ANSWER
    train_ids = processor.tokenizer(prompt + answer + end)["input_ids"]
    with torch.no_grad():
        logits = model(**inputs).logits
        gen = model.generate(**inputs, max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    n = inputs["input_ids"].shape[1]
    ref = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__},
           "question": QUESTION, "answer": ANSWER, "prompt": prompt, "frames": video.tolist(),
           "input_ids": inputs["input_ids"][0].tolist(), "pixel_values_videos": to_list(inputs["pixel_values_videos"][0]),
           "logits_last": LOGIT_ROWS, "logits": to_list(logits[0, -LOGIT_ROWS:]), "generate": {"max_new_tokens": 6, "tokens": gen[0, n:].tolist()},
           "train_ids": train_ids, "video_token_id": video_id}
    (out / "reference.json").write_text(json.dumps(ref))
    print("wrote", out, sorted(p.name for p in out.iterdir()))


def main():
    llama = llama_tokenizer()
    text = LlamaConfig(vocab_size=len(llama), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                       tie_word_embeddings=False, bos_token_id=llama.bos_token_id, eos_token_id=llama.eos_token_id,
                       pad_token_id=0)
    build("llava_next_video_hf", text, llama, VICUNA_TEMPLATE,
          dict(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}), True, 401)
    qwen = qwen_tokenizer()
    text = Qwen2Config(vocab_size=len(qwen), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                       tie_word_embeddings=True, eos_token_id=qwen.eos_token_id, pad_token_id=qwen.pad_token_id)
    build("llava_qwen_hf", text, qwen, CHATML_TEMPLATE,
          dict(size={"height": 32, "width": 32}, crop_size={"height": 28, "width": 28}, rescale_factor=1 / 250.0,
               image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3]), False, 402)


if __name__ == "__main__":
    main()
