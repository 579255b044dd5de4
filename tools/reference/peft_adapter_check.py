#!/usr/bin/env python3
"""PEFT adapter files for vidlora::lora::save_peft_adapter / load_peft_adapter.

Generate (writes tests/fixtures/io/):
  peft_adapter/          PEFT's save_pretrained of a LoRA (r=4, alpha=8, dropout 0.05, all seven
                         LLaMA projections) on a tiny LlamaForCausalLM, with known nonzero A and B
  peft_adapter.json      the same factors as numbers, PEFT's logits for fixed input ids, versions
  /opt/refenv/bin/python tools/reference/peft_adapter_check.py

Check that an adapter directory vidlora saved for the same factors (save_peft_adapter) loads in PEFT
(PeftModel.from_pretrained on the same tiny base) with identical LoRA weights and identical logits:
  /opt/refenv/bin/python tools/reference/peft_adapter_check.py --check <dir>
"""
import json
import pathlib
import shutil
import sys

# tools/reference/ holds scripts named like packages (tokenizers.py): keep it off the import path.
sys.path = [p for p in sys.path if pathlib.Path(p or ".").resolve() != pathlib.Path(__file__).resolve().parent]

import peft  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "io"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
INPUT_IDS = [[1, 5, 9, 3, 30, 7]]


def versions():
    return {"torch": torch.__version__, "peft": peft.__version__, "transformers": transformers.__version__,
            "safetensors": safetensors.__version__}


def tiny_base():
    torch.manual_seed(11)
    config = transformers.LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    return transformers.LlamaForCausalLM(config).eval()


def rows(t):
    return t.detach().double().tolist()


def lora_layers(model):
    """module path (as in the base model) -> PEFT LoRA layer."""
    out = {}
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            out[name.removeprefix("base_model.model.")] = module
    return out


def logits(model):
    with torch.no_grad():
        return model(torch.tensor(INPUT_IDS)).logits[0]


def generate():
    model = get_peft_model(tiny_base(), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05, target_modules=TARGETS,
                                                   task_type="CAUSAL_LM"))
    model.eval()
    g = torch.Generator().manual_seed(5)
    modules = {}
    with torch.no_grad():  # nonzero B: PEFT's default B = 0 would hide the LoRA path
        for path, layer in sorted(lora_layers(model).items()):
            a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            a.copy_(torch.randn(a.shape, generator=g) * 0.3)
            b.copy_(torch.randn(b.shape, generator=g) * 0.3)
            modules[path] = {"A": rows(a), "B": rows(b)}
    target = OUT / "peft_adapter"
    shutil.rmtree(target, ignore_errors=True)
    model.save_pretrained(target)
    (target / "README.md").unlink(missing_ok=True)
    fixture = {"versions": versions(), "r": 4, "lora_alpha": 8, "lora_dropout": 0.05, "target_modules": TARGETS,
               "input_ids": INPUT_IDS, "logits": rows(logits(model)), "modules": modules}
    (OUT / "peft_adapter.json").write_text(json.dumps(fixture))
    print("wrote", target, "with", len(modules), "modules")


def check(directory):
    directory = pathlib.Path(directory)
    fixture = json.loads((OUT / "peft_adapter.json").read_text())
    model = PeftModel.from_pretrained(tiny_base(), directory).eval()
    layers = lora_layers(model)
    assert sorted(layers) == sorted(fixture["modules"]), (sorted(layers), sorted(fixture["modules"]))
    for path, expected in fixture["modules"].items():
        a = layers[path].lora_A["default"].weight
        b = layers[path].lora_B["default"].weight
        assert torch.equal(a, torch.tensor(expected["A"], dtype=torch.float32)), f"{path}: lora_A differs"
        assert torch.equal(b, torch.tensor(expected["B"], dtype=torch.float32)), f"{path}: lora_B differs"
    config = model.peft_config["default"]
    assert config.r == fixture["r"] and config.lora_alpha == fixture["lora_alpha"], config
    assert abs(config.lora_dropout - fixture["lora_dropout"]) < 1e-12 and set(config.target_modules) == set(TARGETS)
    assert str(config.task_type.value if hasattr(config.task_type, "value") else config.task_type) == "CAUSAL_LM"
    got = logits(model)
    want = torch.tensor(fixture["logits"], dtype=torch.float32)
    assert torch.equal(got, want), f"logits differ by {(got - want).abs().max().item()}"
    ours = json.loads((directory / "adapter_config.json").read_text())
    theirs = json.loads((OUT / "peft_adapter" / "adapter_config.json").read_text())
    assert sorted(ours) == sorted(theirs), set(ours) ^ set(theirs)
    print(f"{directory}: loads in PEFT {peft.__version__}; {len(layers)} modules with identical lora_A/lora_B; "
          f"logits identical; adapter_config.json has PEFT's {len(theirs)} fields")
    return 0


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        return check(sys.argv[2])
    OUT.mkdir(parents=True, exist_ok=True)
    generate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
