#!/usr/bin/env python3
"""Reference trajectories for vidlora::optim::GradScaler (tests/fixtures/optim/grad_scaler.json).

torch.amp.GradScaler("cpu") drives AdamW over two small parameters in the loop vidlora runs:
scale the loss, backward (here: gradients = true gradients x scale, in float32, with inf / NaN injected on
chosen steps), unscale_, clip_grad_norm_ on steps whose gradients are finite, step (skipped on inf/NaN),
update. Every step records the scale before and after, the growth tracker, whether the optimizer stepped
(a counting wrapper around AdamW.step), found_inf, and the gradients before and after unscale_ as float32
bit patterns (uint32: exact, and JSON has no NaN / Inf). Scenarios:

- default_options_growth: torch's defaults (2^16, x2 after 2000 clean steps, x0.5) over 2003 steps, one
  inf at step 2002 (1-based): the scale grows once at step 2000 and backs off at 2002. Each step is only
  [scale_after, growth_tracker, skipped, found_inf] (no tensors recorded).
- small_interval: growth_interval 3, infs on consecutive steps, a NaN, a -inf; a state_dict saved at step 9
  and loaded into a scaler built with other options, which continues the run (the record carries them).
- odd_factors: growth 1.7, backoff 0.3, interval 2, init 777.7: the new scale is float(float scale x double
  factor), which differs from a float x float product on most of these steps.
- growth_to_overflow: init 2^126, interval 1: growth to 2^127, then 2^128 is inf, so the scale stays and
  the tracker resets.
- scale_below_one: init 0.5 and a finite gradient of 3e38 that unscales to inf: found_inf looks at the
  gradients before unscaling, so the step is not skipped (no clip / optimizer: the C++ AdamW refuses inf).

Run: /opt/refenv/bin/python -P tools/reference/grad_scaler.py
"""
import json
import os
import struct

import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "optim")
VERSIONS = {"torch": torch.__version__}
INF, NAN = float("inf"), float("nan")


def bits(t):
    return [struct.unpack("<I", struct.pack("<f", v))[0] for v in t.detach().reshape(-1).tolist()]


def run(name, options, n_steps, inject, *, clip=1.0, lr=1e-2, optimizer=True, tensors=True, save_at=None,
        resume_options=None, raw_grad=None):
    """inject: {step (1-based): (param, flat index, value)}; raw_grad: {step: (param, index, value)} written
    into the scaled gradient as is (a finite value that the unscale makes non-finite)."""
    torch.manual_seed(7)
    shapes = [(2, 3), (1, 4)]
    params = [torch.nn.Parameter(torch.randn(*s) * 0.5) for s in shapes]
    initial = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, foreach=False)
    calls = []
    inner_step = opt.step

    def counting_step(*args, **kwargs):
        calls.append(1)
        return inner_step(*args, **kwargs)

    opt.step = counting_step
    scaler = torch.amp.GradScaler("cpu", **options)
    steps, saved = [], None
    for k in range(1, n_steps + 1):
        true_grads = [torch.randn(*s) * 0.3 for s in shapes]
        loss = torch.tensor(1.5, dtype=torch.float32)
        scaled_loss = scaler.scale(loss)
        scale_before = scaler.get_scale()
        scale_t = torch.tensor(scale_before, dtype=torch.float32)
        for p, g in zip(params, true_grads):
            p.grad = g * scale_t  # float32 x float32: what a backward of the scaled loss gives
        for table, raw in ((inject, False), (raw_grad or {}, True)):
            if k in table:
                pi, idx, value = table[k]
                params[pi].grad.view(-1)[idx] = value
        grads_in = [bits(p.grad) for p in params]
        calls.clear()
        scaler.unscale_(opt)
        state = scaler._per_optimizer_states[id(opt)]
        found_inf = float(sum(v.item() for v in state["found_inf_per_device"].values()))
        grads_out = [bits(p.grad) for p in params]
        norm = None
        if optimizer and clip and found_inf == 0.0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        if optimizer:
            scaler.step(opt)
        else:  # the same decision GradScaler.step makes, without touching the parameters
            if not found_inf:
                calls.append(1)
            state["stage"] = torch.amp.grad_scaler.OptState.STEPPED
        scaler.update()
        rec = {"step": k, "scale_before": scale_before, "scaled_loss": float(scaled_loss),
               "found_inf": found_inf, "skipped": len(calls) == 0, "scale_after": scaler.get_scale(),
               "growth_tracker": scaler._get_growth_tracker()}
        if not tensors:  # compact: [scale_after, growth_tracker, skipped, found_inf]
            rec = [rec["scale_after"], rec["growth_tracker"], int(rec["skipped"]), found_inf]
        else:
            rec["grads_in"] = grads_in
            rec["grads_unscaled"] = grads_out
            rec["grad_norm"] = norm
            if optimizer:
                rec["params"] = [p.detach().reshape(-1).tolist() for p in params]
        steps.append(rec)
        if save_at == k:
            saved = scaler.state_dict()
            scaler = torch.amp.GradScaler("cpu", **(resume_options or {}))
            scaler.load_state_dict(saved)
    out = {"name": name, "options": options, "clip": clip, "lr": lr, "weight_decay": 0.01,
           "optimizer": optimizer, "tensors": tensors, "shapes": shapes,
           "initial": [p.reshape(-1).tolist() for p in initial], "steps": steps,
           "final_state_dict": scaler.state_dict()}
    if save_at is not None:
        out["save_at"] = save_at
        out["saved_state_dict"] = saved
        out["resume_options"] = resume_options or {}
    return out


def main():
    scenarios = [
        run("default_options_growth", {}, 2003, {2002: (0, 1, INF)}, tensors=False),
        run("small_interval", {"growth_interval": 3}, 16,
            {2: (0, 4, INF), 3: (1, 0, INF), 8: (1, 2, NAN), 13: (0, 0, -INF)}, save_at=9,
            resume_options={"init_scale": 4.0, "growth_factor": 4.0, "backoff_factor": 0.25, "growth_interval": 99}),
        run("odd_factors", {"init_scale": 777.7, "growth_factor": 1.7, "backoff_factor": 0.3, "growth_interval": 2},
            12, {3: (0, 2, INF), 4: (0, 2, NAN), 9: (1, 3, -INF)}),
        run("growth_to_overflow", {"init_scale": 2.0 ** 126, "growth_interval": 1}, 4, {}, clip=0.0, optimizer=False),
        run("scale_below_one", {"init_scale": 0.5, "growth_interval": 100}, 3, {}, clip=0.0, optimizer=False,
            raw_grad={2: (1, 1, 3e38)}),
    ]
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "grad_scaler.json")
    with open(path + ".tmp", "w") as f:
        json.dump({"versions": VERSIONS, "source": "torch.amp.GradScaler('cpu')", "scenarios": scenarios}, f)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
