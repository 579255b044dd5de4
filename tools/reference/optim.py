#!/usr/bin/env python3
"""Reference values for vidlora::optim (tests/fixtures/optim/*.json).

- adamw.json: torch.optim.AdamW, two param groups (weight decay 0.1 and 0 with a 2x lr multiplier),
  20 steps with random gradients and the lr of transformers' cosine schedule (warmup 3, total 20),
  parameters after every step.
- clip.json: torch.nn.utils.clip_grad_norm_ with the norm above and below max_norm, and with a NaN.
- decay_names.json: transformers Trainer.get_decay_parameter_names on a module tree with the names
  vidlora's models use.
Float32 values are written as the exact doubles of the float32 numbers.

Run: /opt/refenv/bin/python tools/reference/optim.py
"""
import json
import math
import os
import sys

# Sibling scripts (e.g. tools/reference/tokenizers.py) must not shadow the packages imported below.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import torch
import transformers
from transformers import Trainer, get_cosine_schedule_with_warmup

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "optim")
VERSIONS = {"torch": torch.__version__, "transformers": transformers.__version__}

SHAPES = {  # name -> shape, group
    "layers.0.q_proj.lora_A.weight": ([4, 8], "decay"),
    "layers.0.q_proj.lora_B.weight": ([8, 4], "decay"),
    "projector.linear_1.weight": ([8, 12], "decay"),
    "projector.linear_1.bias": ([1, 8], "no_decay"),
    "layers.0.input_layernorm.weight": ([1, 37], "no_decay"),
}


def adamw_fixture():
    torch.manual_seed(1234)
    params = {n: torch.nn.Parameter(torch.randn(*s) * 0.5) for n, (s, _) in SHAPES.items()}
    initial = {n: p.detach().clone() for n, p in params.items()}
    groups = [
        {"name": "decay", "params": [params[n] for n, (_, g) in SHAPES.items() if g == "decay"], "weight_decay": 0.1,
         "lr_scale": 1.0},
        {"name": "no_decay", "params": [params[n] for n, (_, g) in SHAPES.items() if g == "no_decay"],
         "weight_decay": 0.0, "lr_scale": 2.0},
    ]
    opt = torch.optim.AdamW([{"params": g["params"], "weight_decay": g["weight_decay"]} for g in groups], lr=1e-3,
                            betas=(0.9, 0.999), eps=1e-8, foreach=False)
    sched_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = get_cosine_schedule_with_warmup(sched_opt, num_warmup_steps=3, num_training_steps=20)
    steps = []
    for k in range(20):
        lr = sched_opt.param_groups[0]["lr"]
        grads = {}
        for n, p in params.items():
            g = torch.randn_like(p) * (0.01 if k % 7 == 3 else 1.0)  # some small-gradient steps
            p.grad = g.clone()
            grads[n] = g.tolist()
        for group, spec in zip(opt.param_groups, groups):
            group["lr"] = lr * spec["lr_scale"]
        opt.step()
        sched_opt.step()
        sched.step()
        steps.append({"lr": lr, "grads": grads, "params": {n: p.detach().tolist() for n, p in params.items()}})
    state = {n: {"exp_avg": opt.state[p]["exp_avg"].tolist(), "exp_avg_sq": opt.state[p]["exp_avg_sq"].tolist(),
                 "step": int(opt.state[p]["step"])} for n, p in params.items()}
    return {"versions": VERSIONS, "betas": [0.9, 0.999], "eps": 1e-8,
            "groups": [{"name": g["name"], "weight_decay": g["weight_decay"], "lr_scale": g["lr_scale"],
                        "params": [n for n, (_, gg) in SHAPES.items() if gg == g["name"]]} for g in groups],
            "initial": {n: v.tolist() for n, v in initial.items()}, "steps": steps, "final_state": state}


def finite_or_str(x):
    """JSON has no NaN/Inf: write them as the strings "nan", "inf", "-inf"."""
    if isinstance(x, list):
        return [finite_or_str(v) for v in x]
    return x if math.isfinite(x) else str(x)


def clip_fixture():
    torch.manual_seed(99)
    cases = []
    for label, scale, max_norm, poison in (("above", 2.0, 1.0, None), ("below", 0.05, 1.0, None),
                                           ("equal_ish", 1.0, 3.0, None), ("nan", 1.0, 1.0, float("nan")),
                                           ("inf", 1.0, 1.0, float("inf"))):
        grads = {"a": torch.randn(3, 5) * scale, "b": torch.randn(1, 7) * scale, "c": torch.randn(6, 6) * scale}
        if poison is not None:
            grads["b"][0, 4] = poison
        ps = []
        for n, g in grads.items():
            p = torch.nn.Parameter(torch.zeros_like(g))
            p.grad = g.clone()
            ps.append(p)
        norm = torch.nn.utils.clip_grad_norm_(ps, max_norm)
        cases.append({"label": label, "max_norm": max_norm,
                      "grads": {n: finite_or_str(g.tolist()) for n, g in grads.items()},
                      "norm": finite_or_str(float(norm)),
                      "clipped": {n: finite_or_str(p.grad.tolist()) for n, p in zip(grads, ps)}})
    return {"versions": VERSIONS, "cases": cases}


def decay_names_fixture():
    names = [
        "model.layers.0.self_attn.q_proj.base_layer.weight", "model.layers.0.self_attn.q_proj.lora_A.default.weight",
        "model.layers.0.self_attn.q_proj.lora_B.default.weight", "model.layers.0.self_attn.q_proj.bias",
        "model.layers.0.self_attn.q_norm.weight", "model.layers.0.input_layernorm.weight",
        "model.layers.0.post_attention_layernorm.weight", "model.norm.weight", "model.embed_tokens.weight",
        "lm_head.weight", "multi_modal_projector.linear_1.weight", "multi_modal_projector.linear_1.bias",
        "vision_tower.encoder.layers.0.layer_norm1.weight", "vision_tower.post_layernorm.bias",
        "model.layers.0.mlp.gate_proj.lora_B.default.weight", "model.enorm.weight", "model.normal.weight",
        "model.RMSNorm.weight", "model.final_norm.weight", "model.norm_f.weight",
    ]
    root = torch.nn.Module()
    for name in names:
        *path, leaf = name.split(".")
        m = root
        for part in path:
            if not hasattr(m, part):
                m.add_module(part, torch.nn.Module())
            m = getattr(m, part)
        m.register_parameter(leaf, torch.nn.Parameter(torch.zeros(1)))
    decay = set(Trainer.get_decay_parameter_names(None, root))
    return {"versions": VERSIONS, "source": "transformers.Trainer.get_decay_parameter_names",
            "names": [[n, n in decay] for n in names]}


def main():
    os.makedirs(OUT, exist_ok=True)
    for fname, data in (("adamw.json", adamw_fixture()), ("clip.json", clip_fixture()),
                        ("decay_names.json", decay_names_fixture())):
        with open(os.path.join(OUT, fname), "w") as f:
            json.dump(data, f)


if __name__ == "__main__":
    main()
