#!/usr/bin/env python3
"""A LoRA adapter made with PEFT in Python, for the Trainer to continue training from
(TrainerConfig::initial_adapter, train_captioner --init-adapter). On the tiny LLaMA fixture
(tests/fixtures/model/llama): get_peft_model with the Cpu preset's rank (8) and targets (all seven
projections) but lora_alpha 24 (not the preset's 16) and rsLoRA off, A and B set to seeded random values
(B non-zero, so the adapter changes the logits), saved with save_pretrained into
tests/fixtures/trainer/python_adapter/, and PEFT's logits for fixed input ids into
tests/fixtures/trainer/python_adapter_logits.json.

Run:  /opt/refenv/bin/python -P tools/reference/trainer_python_adapter.py
"""
import json
import pathlib
import shutil

import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model
from transformers import LlamaForCausalLM

ROOT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures"
IDS = [1, 5, 9, 3, 30, 7, 12, 40]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main():
    base = LlamaForCausalLM.from_pretrained(ROOT / "model" / "llama", torch_dtype=torch.float32).eval()
    ids = torch.tensor([IDS])
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits[0]
    config = LoraConfig(r=8, lora_alpha=24, lora_dropout=0.0, target_modules=TARGETS, bias="none",
                        task_type="CAUSAL_LM")
    model = get_peft_model(base, config).eval()
    g = torch.Generator().manual_seed(21)
    with torch.no_grad():
        for name, module in model.named_modules():
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
                a.copy_(torch.randn(a.shape, generator=g) * 0.3)
                b.copy_(torch.randn(b.shape, generator=g) * 0.3)
        logits = model(input_ids=ids).logits[0]
    out = ROOT / "trainer" / "python_adapter"
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out)
    (out / "README.md").unlink(missing_ok=True)  # PEFT's model card: not needed by the test
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = "tests/fixtures/model/llama"  # not this machine's absolute path
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    fixture = {
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "input_ids": IDS,
        "r": 8,
        "lora_alpha": 24,
        "logits": logits.tolist(),
        "base_logits": base_logits.tolist(),
    }
    (ROOT / "trainer" / "python_adapter_logits.json").write_text(json.dumps(fixture))
    print("wrote", out, "max |logits - base|", float((logits - base_logits).abs().max()))


if __name__ == "__main__":
    main()
