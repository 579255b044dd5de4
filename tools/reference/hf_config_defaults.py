#!/usr/bin/env python3
"""Reference values for config.json files that leave fields out (tests/model/test_hf_config.cpp).

The Hub's checkpoints were mostly saved by transformers 4, which wrote a sub-config's fields only where they differ
from the class defaults: llava-hf's LLaVA / LLaVA-NeXT-Video configs hold no hidden_size, intermediate_size or layer
count in text_config, because LlamaConfig's defaults are LLaMA-7B's. Each case below is such a config.json as a
file would hold it, and what transformers resolves from it (CONFIG_CLASS.from_dict): the decoder's, the vision
tower's and the LLaVA glue's fields vidlora reads, and for the tie cases whether a model built from the config ties
its LM head to the embeddings (a tiny model, same flags).

Writes tests/fixtures/model/hfconfig/defaults.json.
Run:  /opt/refenv/bin/python tools/reference/hf_config_defaults.py   (tools/reference/requirements.txt)
"""
import copy
import json
import pathlib
import sys

sys.path = [p for p in sys.path if pathlib.Path(p or ".").resolve() != pathlib.Path(__file__).resolve().parent]

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (AutoConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaNextVideoConfig,  # noqa: E402
                          LlamaForCausalLM)

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "model" / "hfconfig" / "defaults.json"

# LLaVA-NeXT-Video-7B in the form transformers 4 saved llava-hf's config: the text and vision configs hold only the
# fields that differ from LlamaConfig's / CLIPVisionConfig's defaults (written for this test, modelled on the hub
# checkpoint's layout).
HUB_STYLE_7B = {
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
        "max_position_embeddings": 4096,
        "model_type": "llama",
        "pad_token_id": 0,
        "rms_norm_eps": 1e-05,
        "torch_dtype": "float16",
        "vocab_size": 32064,
    },
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_image_newline_parameter": True,
    "video_token_index": 32000,
    "vision_config": {
        "hidden_size": 1024,
        "image_size": 336,
        "intermediate_size": 4096,
        "model_type": "clip_vision_model",
        "num_attention_heads": 16,
        "num_hidden_layers": 24,
        "patch_size": 14,
        "projection_dim": 768,
        "vocab_size": 32000,
    },
    "vision_feature_layer": -2,
    "vision_feature_select_strategy": "default",
    "vocab_size": 32064,
}

TINY_TEXT = {"model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
             "num_hidden_layers": 1, "num_attention_heads": 4}
TINY_VISION = {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
               "num_attention_heads": 4, "image_size": 28, "patch_size": 7}


def text_fields(t):
    rope = t.rope_parameters or {}
    return {
        "model_type": t.model_type,
        "hidden_size": t.hidden_size,
        "intermediate_size": t.intermediate_size,
        "num_hidden_layers": t.num_hidden_layers,
        "num_attention_heads": t.num_attention_heads,
        "num_key_value_heads": t.num_key_value_heads,
        "head_dim": getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads,
        "rms_norm_eps": t.rms_norm_eps,
        "rope_theta": rope.get("rope_theta"),
        "max_position_embeddings": t.max_position_embeddings,
        "vocab_size": t.vocab_size,
        "sliding_window": window(t),
    }


def window(t):
    """The attention window of the sliding layers, None without any (Mistral: all layers; Qwen: layer_types)."""
    if t.model_type == "mistral":
        return getattr(t, "sliding_window", None)
    types = getattr(t, "layer_types", None) or []
    return t.sliding_window if "sliding_attention" in types else None


def vision_fields(v):
    return {k: getattr(v, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                       "image_size", "patch_size", "num_channels", "layer_norm_eps")}


def llava_fields(c):
    return {
        "image_token_index": c.image_token_index,
        "video_token_index": getattr(c, "video_token_index", None),
        "vision_feature_layer": c.vision_feature_layer,
        "vision_feature_select_strategy": c.vision_feature_select_strategy,
        "spatial_pool_stride": getattr(c, "spatial_pool_stride", None),
        "multimodal_projector_bias": c.multimodal_projector_bias,
    }


def tied(config_json):
    """Whether a model built from this config shares its LM head with the embeddings."""
    torch.manual_seed(0)
    if config_json["model_type"] in ("llava", "llava_next_video"):
        model = LlavaForConditionalGeneration(LlavaConfig.from_dict(copy.deepcopy(config_json)))
        emb = model.model.language_model.embed_tokens.weight
    else:
        model = LlamaForCausalLM(AutoConfig.for_model(**copy.deepcopy(config_json)))
        emb = model.model.embed_tokens.weight
    return model.lm_head.weight.data_ptr() == emb.data_ptr()


def case(name, config_json, tie=False):
    cls = {"llava": LlavaConfig, "llava_next_video": LlavaNextVideoConfig}.get(config_json["model_type"])
    out = {"name": name, "config": config_json}
    if cls:
        c = cls.from_dict(copy.deepcopy(config_json))
        out.update(text=text_fields(c.text_config), vision=vision_fields(c.vision_config), llava=llava_fields(c))
    elif config_json["model_type"] == "clip_vision_model":
        out.update(vision=vision_fields(AutoConfig.for_model(**copy.deepcopy(config_json))))
    else:
        out.update(text=text_fields(AutoConfig.for_model(**copy.deepcopy(config_json))))
    if tie:
        out["tied"] = tied(config_json)
    return out


def main():
    cases = [
        case("llava_next_video_7b_hub_style", HUB_STYLE_7B),
        case("llava_no_sub_configs", {"model_type": "llava"}),
        case("llama_only_type", {"model_type": "llama"}),
        case("qwen2_only_type", {"model_type": "qwen2"}),
        case("qwen3_only_type", {"model_type": "qwen3"}),
        case("mistral_only_type", {"model_type": "mistral"}),
        case("qwen2_sliding_no_window", {"model_type": "qwen2", "num_hidden_layers": 30, "use_sliding_window": True}),
        case("qwen3_sliding_no_window", {"model_type": "qwen3", "num_hidden_layers": 30, "use_sliding_window": True}),
        case("clip_only_type", {"model_type": "clip_vision_model"}),
        case("clip_some_fields", {"model_type": "clip_vision_model", "hidden_size": 1024, "num_attention_heads": 16}),
        case("tie_top_level_only", {"model_type": "llava", "tie_word_embeddings": True,
                                    "text_config": dict(TINY_TEXT), "vision_config": dict(TINY_VISION)}, tie=True),
        case("tie_text_only", {"model_type": "llava", "text_config": dict(TINY_TEXT, tie_word_embeddings=True),
                               "vision_config": dict(TINY_VISION)}, tie=True),
        case("tie_neither", {"model_type": "llava", "text_config": dict(TINY_TEXT),
                             "vision_config": dict(TINY_VISION)}, tie=True),
        case("tie_decoder", dict(TINY_TEXT, tie_word_embeddings=True), tie=True),
    ]
    OUT.write_text(json.dumps({"versions": {"torch": torch.__version__, "transformers": transformers.__version__},
                               "cases": cases}, indent=1) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
