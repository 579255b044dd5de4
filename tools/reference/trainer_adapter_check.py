#!/usr/bin/env python3
"""Loads the adapter vidlora's Trainer wrote (tests/fixtures/trainer/adapter/, from
tools/fixtures/write_trainer_adapter.cpp, the tiny run of tests/trainer/tiny_adapter_run.hpp) onto the tiny LLaMA
fixture (tests/fixtures/model/llama) with PEFT and stores PEFT's logits for fixed input ids in
tests/fixtures/trainer/peft_logits.json; the C++ test checks our decoder + adapter against them.

Run (after build/ci/tests/vidlora_write_trainer_adapter tests/fixtures, see that file):
      /opt/refenv/bin/python -P tools/reference/trainer_adapter_check.py
"""
import json
import pathlib

import peft
import safetensors
import torch
import transformers
from peft import PeftModel
from transformers import LlamaForCausalLM

ROOT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures"
IDS = [1, 5, 9, 3, 30, 7, 12, 40]


def main():
    torch.manual_seed(0)
    base = LlamaForCausalLM.from_pretrained(ROOT / "model" / "llama", torch_dtype=torch.float32).eval()
    ids = torch.tensor([IDS])
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits[0]
    model = PeftModel.from_pretrained(base, ROOT / "trainer" / "adapter").eval()
    cfg = model.peft_config["default"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    out = {
        "input_ids": IDS,
        "r": cfg.r,
        "lora_alpha": cfg.lora_alpha,
        "target_modules": sorted(cfg.target_modules),
        "base_logits": [[float("%.9g" % v) for v in row] for row in base_logits.tolist()],
        "logits": [[float("%.9g" % v) for v in row] for row in logits.tolist()],
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__, "safetensors": safetensors.__version__},
    }
    (ROOT / "trainer" / "peft_logits.json").write_text(json.dumps(out) + "\n")
    print("max |peft - base| =", float((logits - base_logits).abs().max()))


if __name__ == "__main__":
    main()
