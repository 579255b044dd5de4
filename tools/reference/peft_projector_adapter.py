#!/usr/bin/env python3
"""A PEFT adapter that carries the trained projector (modules_to_save=["multi_modal_projector"]), the way a
two-stage LLaVA fine-tune in Python saves "projector + LoRA", for lora::load_peft_adapter and the programs.

Generate (writes tests/fixtures/model/llava_next_video_adapter/):
  adapter/          get_peft_model on the tiny LLaVA-NeXT-Video fixture (tests/fixtures/model/llava_next_video):
                    LoRA r=8, alpha=16 (the Cpu preset's) on the language model's seven projections (a regular expression, as
                    vidlora writes them) plus modules_to_save=["multi_modal_projector"]; lora_A / lora_B and the
                    projector's trained copy set to seeded random values; save_pretrained
  reference.json    PEFT's logits for that fixture's right-padded batch (its pixel values and input ids), the
                    base model's logits, the adapter file's tensor names, versions
  /work/scratch/refenv/bin/python -P tools/reference/peft_projector_adapter.py

Check that an adapter directory vidlora wrote for the same values (tests/trainer/test_peft_projector.cpp writes one
with VIDLORA_KEEP_PROJECTOR_ADAPTER=<dir>) loads in PEFT (PeftModel.from_pretrained on the same base) and gives
the fixture's logits, with the same tensor names:
  /work/scratch/refenv/bin/python -P tools/reference/peft_projector_adapter.py --check <dir>
"""
import json
import pathlib
import shutil
import sys

import peft
import safetensors
import safetensors.torch
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlavaNextVideoForConditionalGeneration

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "model"
BASE = FIXTURES / "llava_next_video"
OUT = FIXTURES / "llava_next_video_adapter"
TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def to_list(t):
    def short(v):
        return [short(x) for x in v] if isinstance(v, list) else float("%.9g" % v)
    return short(t.detach().to(torch.float32).tolist())


def load_base():
    model = LlavaNextVideoForConditionalGeneration.from_pretrained(BASE, dtype=torch.float32)
    model.config._attn_implementation = "eager"
    return model.eval()


def batch():
    ref = json.loads((BASE / "reference.json").read_text())
    return (torch.tensor(ref["input_ids"]), torch.tensor(ref["attention_mask"]),
            torch.tensor(ref["pixel_values_videos"], dtype=torch.float32))


def logits_of(model):
    ids, mask, pixels = batch()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, pixel_values_videos=pixels).logits


def generate():
    base = load_base()
    base_logits = logits_of(base)
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, bias="none",
                        task_type="CAUSAL_LM", modules_to_save=["multi_modal_projector"])
    model = get_peft_model(base, config).eval()
    g = torch.Generator().manual_seed(515)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_A." in name or ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif "multi_modal_projector.modules_to_save." in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)  # the trained copy moves away from the base's
    logits = logits_of(model)
    shutil.rmtree(OUT, ignore_errors=True)
    model.save_pretrained(OUT / "adapter")
    (OUT / "adapter" / "README.md").unlink(missing_ok=True)  # PEFT's model card: not needed by the tests
    cfg_path = OUT / "adapter" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = "tests/fixtures/model/llava_next_video"  # not this machine's path
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    with safetensors.safe_open(OUT / "adapter" / "adapter_model.safetensors", "pt") as f:
        keys = sorted(f.keys())
    ref = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "peft": peft.__version__, "safetensors": safetensors.__version__},
           "keys": keys, "logits": to_list(logits), "base_logits": to_list(base_logits)}
    (OUT / "reference.json").write_text(json.dumps(ref))
    print("wrote", OUT, "max |logits - base|", float((logits - base_logits).abs().max()))


def check(adapter_dir):
    ref = json.loads((OUT / "reference.json").read_text())
    with safetensors.safe_open(pathlib.Path(adapter_dir) / "adapter_model.safetensors", "pt") as f:
        keys = sorted(f.keys())
    model = PeftModel.from_pretrained(load_base(), adapter_dir).eval()
    cfg = model.peft_config["default"]
    logits = logits_of(model)
    err = float((logits - torch.tensor(ref["logits"])).abs().max())
    moved = float((logits - torch.tensor(ref["base_logits"])).abs().max())
    print("modules_to_save", sorted(cfg.modules_to_save), "target_modules", cfg.target_modules)
    print("same tensor names as PEFT's:", keys == ref["keys"])
    print("max |PEFT logits of this adapter - fixture's| =", err, "(the adapter moves the base's by", moved, ")")
    ok = keys == ref["keys"] and err < 1e-5 and sorted(cfg.modules_to_save) == ["multi_modal_projector"]
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        sys.exit(check(sys.argv[2]))
    generate()
