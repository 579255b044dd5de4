#!/usr/bin/env python3
"""Reference values for vidlora::lora from PyTorch + PEFT (CPU, float32).

Writes tests/fixtures/lora/peft_linear.json (r=4, alpha=8, scaling alpha/r),
tests/fixtures/lora/peft_linear_rslora.json (same with use_rslora: alpha/sqrt(r)) and
tests/fixtures/lora/peft_init.json (statistics of PEFT's default lora_A initialisation).

Run:  /opt/refenv/bin/python tools/reference/lora.py
"""
import json
import math
import pathlib

import peft
import torch
from peft import LoraConfig, get_peft_model

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "lora"
IN_FEATURES, OUT_FEATURES, TOKENS, RANK, ALPHA = 24, 16, 5, 4, 8


class Wrapper(torch.nn.Module):
    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.proj = torch.nn.Linear(in_features, out_features, bias=bias)

    def forward(self, x):
        return self.proj(x)


def versions():
    return {"torch": torch.__version__, "peft": peft.__version__}


def rows(t):
    return [[float(v) for v in row] for row in t.detach().to(torch.float64).tolist()]


def linear_case(use_rslora, seed):
    g = torch.Generator().manual_seed(seed)
    model = Wrapper(IN_FEATURES, OUT_FEATURES)
    with torch.no_grad():
        model.proj.weight.copy_(torch.randn(OUT_FEATURES, IN_FEATURES, generator=g) * 0.2)
        model.proj.bias.copy_(torch.randn(OUT_FEATURES, generator=g) * 0.1)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=["proj"], use_rslora=use_rslora)
    peft_model = get_peft_model(model, config)
    layer = peft_model.base_model.model.proj
    with torch.no_grad():  # known, nonzero adapters (B = 0 would hide the LoRA path)
        layer.lora_A["default"].weight.copy_(torch.randn(RANK, IN_FEATURES, generator=g) * 0.3)
        layer.lora_B["default"].weight.copy_(torch.randn(OUT_FEATURES, RANK, generator=g) * 0.3)
    x = torch.randn(TOKENS, IN_FEATURES, generator=g, requires_grad=True)
    dy = torch.randn(TOKENS, OUT_FEATURES, generator=g)
    y = peft_model(x)
    y.backward(dy)
    result = {
        "versions": versions(),
        "config": {"in": IN_FEATURES, "out": OUT_FEATURES, "tokens": TOKENS, "r": RANK, "lora_alpha": ALPHA,
                   "lora_dropout": 0.0, "use_rslora": use_rslora, "bias": True},
        "scaling": float(layer.scaling["default"]),
        "W": rows(layer.base_layer.weight),
        "bias": [float(v) for v in layer.base_layer.bias.detach().tolist()],
        "A": rows(layer.lora_A["default"].weight),
        "B": rows(layer.lora_B["default"].weight),
        "x": rows(x),
        "dy": rows(dy),
        "y": rows(y),
        "grad_x": rows(x.grad),
        "grad_A": rows(layer.lora_A["default"].weight.grad),
        "grad_B": rows(layer.lora_B["default"].weight.grad),
    }
    layer.merge()  # W + scaling * B @ A, as PEFT merges
    result["merged_W"] = rows(layer.base_layer.weight)
    return result


def init_case():
    stats = []
    for in_features, r in [(24, 4), (1024, 16), (4096, 8)]:
        torch.manual_seed(1234)
        model = get_peft_model(Wrapper(in_features, 32, bias=False),
                               LoraConfig(r=r, lora_alpha=2 * r, target_modules=["proj"]))
        a = model.base_model.model.proj.lora_A["default"].weight.detach().to(torch.float64)
        b = model.base_model.model.proj.lora_B["default"].weight.detach()
        stats.append({"in": in_features, "r": r, "bound": 1.0 / math.sqrt(in_features),
                      "max_abs": float(a.abs().max()), "mean": float(a.mean()), "std": float(a.std()),
                      "b_max_abs": float(b.abs().max())})
    return {"versions": versions(), "init": "nn.init.kaiming_uniform_(lora_A, a=sqrt(5)); lora_B zeros",
            "cases": stats}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, case in [("peft_linear.json", linear_case(False, 7)),
                       ("peft_linear_rslora.json", linear_case(True, 8)),
                       ("peft_init.json", init_case())]:
        (OUT / name).write_text(json.dumps(case, indent=1) + "\n")
        print("wrote", OUT / name)


if __name__ == "__main__":
    main()
