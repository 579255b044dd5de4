#!/usr/bin/env python3
"""Writes a LLaVA-NeXT-Video-7B-shaped save_pretrained directory with random bf16 weights.

The shapes, tensor names (the hub layout: language_model.model.*, language_model.lm_head.weight,
vision_tower.vision_model.*, multi_modal_projector.*, image_newline) and config.json are modelled on
llava-hf/LLaVA-NeXT-Video-7B-hf (config.json written from memory of it, with the LLaMA-7B sizes spelled
out in text_config): a CLIP ViT-L/14-336 tower (24 layers, 1024 wide, MLP 4096), a
1024 -> 4096 -> 4096 projector and a LLaMA-7B decoder (32 layers, hidden 4096, MLP 11008, 32 heads,
vocabulary 32064). The weights are N(0, 0.02^2) rounded to bf16: only the shapes and the bytes on disk
matter (load_checkpoint_memory measures how much host memory loading them takes). Shards are cut at
--shard-bytes (5 GB, as save_pretrained's default max_shard_size) and listed in
model.safetensors.index.json. Every file is written under a temporary name and renamed when complete.

Needs only numpy (e.g. /opt/korenv/bin/python); the safetensors format is written directly.

  /opt/korenv/bin/python -P tools/make_7b_checkpoint.py --out /work/big7b          # ~14.1 GB, 3 shards
  /opt/korenv/bin/python -P tools/make_7b_checkpoint.py --out /tmp/small --text-layers 2 --vision-layers 2
"""

import argparse
import json
import os
import struct
import sys
import time

import numpy as np

CHUNK = 1 << 24  # elements generated at a time (64 MiB of float32)


def tensor_list(text_layers, vision_layers):
    """(name, shape) in the order the tensors are written."""
    d, inter, vocab = 4096, 11008, 32064
    dv, inter_v, patch, image, channels = 1024, 4096, 14, 336, 3
    positions = (image // patch) ** 2 + 1
    out = [("image_newline", [d])]
    out.append(("language_model.model.embed_tokens.weight", [vocab, d]))
    for layer in range(text_layers):
        p = f"language_model.model.layers.{layer}."
        out += [
            (p + "input_layernorm.weight", [d]),
            (p + "self_attn.q_proj.weight", [d, d]),
            (p + "self_attn.k_proj.weight", [d, d]),
            (p + "self_attn.v_proj.weight", [d, d]),
            (p + "self_attn.o_proj.weight", [d, d]),
            (p + "post_attention_layernorm.weight", [d]),
            (p + "mlp.gate_proj.weight", [inter, d]),
            (p + "mlp.up_proj.weight", [inter, d]),
            (p + "mlp.down_proj.weight", [d, inter]),
        ]
    out.append(("language_model.model.norm.weight", [d]))
    out.append(("language_model.lm_head.weight", [vocab, d]))
    out += [
        ("multi_modal_projector.linear_1.weight", [d, dv]),
        ("multi_modal_projector.linear_1.bias", [d]),
        ("multi_modal_projector.linear_2.weight", [d, d]),
        ("multi_modal_projector.linear_2.bias", [d]),
    ]
    v = "vision_tower.vision_model."
    out += [
        (v + "embeddings.class_embedding", [dv]),
        (v + "embeddings.patch_embedding.weight", [dv, channels, patch, patch]),
        (v + "embeddings.position_embedding.weight", [positions, dv]),
        (v + "pre_layrnorm.weight", [dv]),
        (v + "pre_layrnorm.bias", [dv]),
    ]
    for layer in range(vision_layers):
        p = f"{v}encoder.layers.{layer}."
        for norm in ("layer_norm1", "layer_norm2"):
            out += [(p + norm + ".weight", [dv]), (p + norm + ".bias", [dv])]
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out += [(p + "self_attn." + proj + ".weight", [dv, dv]), (p + "self_attn." + proj + ".bias", [dv])]
        out += [
            (p + "mlp.fc1.weight", [inter_v, dv]),
            (p + "mlp.fc1.bias", [inter_v]),
            (p + "mlp.fc2.weight", [dv, inter_v]),
            (p + "mlp.fc2.bias", [dv]),
        ]
    out += [(v + "post_layernorm.weight", [dv]), (v + "post_layernorm.bias", [dv])]
    return out


def config(text_layers, vision_layers):
    return {
        "architectures": ["LlavaNextVideoForConditionalGeneration"],
        "ignore_index": -100,
        "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
        "image_token_index": 32001,
        "model_type": "llava_next_video",
        "projector_hidden_act": "gelu",
        "spatial_pool_mode": "average",
        "spatial_pool_stride": 2,
        "text_config": {
            "_name_or_path": "lmsys/vicuna-7b-v1.5",
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "max_position_embeddings": 4096,
            "model_type": "llama",
            "num_attention_heads": 32,
            "num_hidden_layers": text_layers,
            "num_key_value_heads": 32,
            "pad_token_id": 0,
            "rms_norm_eps": 1e-05,
            "rope_theta": 10000.0,
            "torch_dtype": "float16",
            "vocab_size": 32064,
        },
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.42.0.dev0",
        "use_image_newline_parameter": True,
        "video_token_index": 32000,
        "vision_config": {
            "hidden_size": 1024,
            "image_size": 336,
            "intermediate_size": 4096,
            "model_type": "clip_vision_model",
            "num_attention_heads": 16,
            "num_hidden_layers": vision_layers,
            "patch_size": 14,
            "projection_dim": 768,
            "vocab_size": 32000,
        },
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "vocab_size": 32064,
    }


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def shard_plan(tensors, shard_bytes):
    """Consecutive tensors grouped into shards of at most shard_bytes (a bigger tensor gets its own)."""
    shards, current, size = [], [], 0
    for name, shape in tensors:
        nbytes = 2 * numel(shape)
        if current and size + nbytes > shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append((name, shape))
        size += nbytes
    if current:
        shards.append(current)
    return shards


def bf16_random(rng, n):
    """n values of N(0, 0.02^2) as bf16 bit patterns (round to nearest even, as torch's cast)."""
    f = rng.standard_normal(n, dtype=np.float32)
    f *= np.float32(0.02)
    u = f.view(np.uint32)
    return ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype("<u2")


def write_shard(path, tensors, rng):
    header, offset = {}, 0
    for name, shape in tensors:
        nbytes = 2 * numel(shape)
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data area starts 8-byte aligned, as the safetensors crate writes it
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, shape in tensors:
            left = numel(shape)
            while left:
                n = min(left, CHUNK)
                bf16_random(rng, n).tofile(f)
                left -= n
    os.replace(tmp, path)
    return offset


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="directory to write (created)")
    ap.add_argument("--shard-bytes", type=int, default=5_000_000_000, help="largest shard (default 5 GB)")
    ap.add_argument("--text-layers", type=int, default=32)
    ap.add_argument("--vision-layers", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    tensors = tensor_list(args.text_layers, args.vision_layers)
    shards = shard_plan(tensors, args.shard_bytes)
    start = time.time()
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        total += write_shard(os.path.join(args.out, file), shard, rng)
        for name, _ in shard:
            weight_map[name] = file
        print(f"{file}: {len(shard)} tensors, {os.path.getsize(os.path.join(args.out, file)) / 1e9:.2f} GB "
              f"({time.time() - start:.0f} s)", file=sys.stderr)
    write_json(os.path.join(args.out, "model.safetensors.index.json"),
               {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})
    write_json(os.path.join(args.out, "config.json"), config(args.text_layers, args.vision_layers))
    params = sum(numel(s) for _, s in tensors)
    print(f"{args.out}: {params / 1e9:.2f} B parameters, {total / 1e9:.2f} GB in {len(shards)} shards, "
          f"{time.time() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
