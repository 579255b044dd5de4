#!/usr/bin/env python3
"""PEFT adapter configurations beyond the plain ones, for tests/lora/test_peft_targets.cpp.

Writes tests/fixtures/lora/peft_targets/:
  base/                 a tiny LlamaForCausalLM (3 layers) saved with save_pretrained
  list_layers_rslora/   adapter r=8, lora_alpha=12, target_modules ["q_proj", "v_proj", "down_proj"],
                        layers_to_transform [0, 2], layers_pattern "layers", use_rslora (scaling 12/√8)
  regex_exclude/        adapter r=16, lora_alpha=24, target_modules a regular expression, exclude_modules a list
  rank12/, rank6_rslora/, rank2/
                        adapters of ranks vidlora does not compile: r=12, lora_alpha=24 on the seven projections;
                        r=6, lora_alpha=10, rsLoRA on q/v/up_proj; r=2, lora_alpha=3 on o_proj
  llava_vision/         adapter of a tiny LLaVA with target_modules ["q_proj", "v_proj"]: PEFT also adapts the
                        CLIP tower's q_proj / v_proj (vidlora must refuse the file, naming those tensors)
  reference.json        versions; per adapter: PEFT's logits on fixed ids (lora_B nonzero) and the modules PEFT
                        adapted; "matching": for LoraConfigs on the tiny LLaVA, every nn.Linear name and the
                        ones PEFT adapted (the resolver's conformance table)

Run:  /opt/refenv/bin/python tools/reference/peft_targets_cases.py
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
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import CLIPVisionConfig, LlamaConfig, LlamaForCausalLM, LlavaConfig, LlavaForConditionalGeneration  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "lora" / "peft_targets"
IDS = [[1, 5, 9, 3, 30, 7, 12, 40], [2, 8, 17, 33, 21, 4, 6, 11]]


def versions():
    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "safetensors": safetensors.__version__}


def to_list(t):
    def short(v):
        return [short(x) for x in v] if isinstance(v, list) else float("%.9g" % v)
    return short(t.detach().to(torch.float32).tolist())


def text_config(layers=3):
    return LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                       tie_word_embeddings=False, attn_implementation="eager")


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[-1] if p.dim() == 2 else p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)


def base_model():
    torch.manual_seed(0)
    model = LlamaForCausalLM(text_config())
    randomize(model, 201)
    return model.eval()


def adapted(model):
    return sorted(n.removeprefix("base_model.model.") for n, m in model.named_modules()
                  if hasattr(m, "lora_A") and "default" in m.lora_A)


def set_factors(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_A" in n or "lora_B" in n:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


def adapter_case(name, config, seed):
    model = get_peft_model(base_model(), config).eval()
    set_factors(model, seed)
    out = OUT / name
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out)
    (out / "README.md").unlink(missing_ok=True)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(IDS)).logits
    return {"logits": to_list(logits), "adapted": adapted(model)}


def tiny_llava():
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=28, patch_size=7, projection_dim=32, hidden_act="quick_gelu")
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text_config(2),
                                                     image_token_id=60)).eval()


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    base = base_model()
    shutil.rmtree(OUT / "base", ignore_errors=True)
    base.save_pretrained(OUT / "base", safe_serialization=True)
    (OUT / "base" / "generation_config.json").unlink(missing_ok=True)
    with torch.no_grad():
        base_logits = base(input_ids=torch.tensor(IDS)).logits
    ref = {"versions": versions(), "input_ids": IDS, "base_logits": to_list(base_logits)}
    ref["list_layers_rslora"] = adapter_case("list_layers_rslora", LoraConfig(
        r=8, lora_alpha=12, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"],
        layers_to_transform=[0, 2], layers_pattern="layers", use_rslora=True), seed=5)
    ref["regex_exclude"] = adapter_case("regex_exclude", LoraConfig(
        r=16, lora_alpha=24, lora_dropout=0.0,
        target_modules=r"model\.layers\.\d+\.(self_attn\.(q|k|o)_proj|mlp\.up_proj)",
        exclude_modules=["layers.1.self_attn.k_proj"]), seed=6)

    # Ranks vidlora does not compile (held zero-padded at the next compiled rank: model/held_adapter.hpp).
    ref["rank12"] = adapter_case("rank12", LoraConfig(
        r=12, lora_alpha=24, lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]), seed=7)
    ref["rank6_rslora"] = adapter_case("rank6_rslora", LoraConfig(
        r=6, lora_alpha=10, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "up_proj"], use_rslora=True),
        seed=8)
    ref["rank2"] = adapter_case("rank2", LoraConfig(r=2, lora_alpha=3, lora_dropout=0.0, target_modules=["o_proj"]),
                                seed=9)
    llava = tiny_llava()
    vision_adapter = get_peft_model(llava, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    shutil.rmtree(OUT / "llava_vision", ignore_errors=True)
    vision_adapter.save_pretrained(OUT / "llava_vision")
    (OUT / "llava_vision" / "README.md").unlink(missing_ok=True)
    ref["llava_vision"] = {"adapted": adapted(vision_adapter)}

    matching = []
    configs = [
        {"target_modules": ["q_proj", "v_proj"]},
        {"target_modules": r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"},
        {"target_modules": ["q_proj", "fc1", "linear_1"], "layers_to_transform": [1], "layers_pattern": "layers"},
        {"target_modules": ["k_proj", "up_proj", "out_proj"], "layers_to_transform": 0},
        {"target_modules": ["q_proj", "down_proj", "fc2"], "exclude_modules": r".*vision_tower.*"},
        {"target_modules": r".*\.(0|1)\.self_attn\.(q|v)_proj", "exclude_modules": ["layers.0.self_attn.v_proj"]},
    ]
    for kwargs in configs:
        model = get_peft_model(tiny_llava(), LoraConfig(r=4, lora_alpha=8, **kwargs))
        linears = sorted(n.removeprefix("base_model.model.") for n, m in model.named_modules()
                         if isinstance(m, torch.nn.Linear) and "lora_" not in n)
        hit = adapted(model)
        matching.append({"config": kwargs, "adapted": hit,
                         "modules": sorted(set(linears) | set(hit))})
    ref["matching"] = matching
    (OUT / "reference.json").write_text(json.dumps(ref))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
