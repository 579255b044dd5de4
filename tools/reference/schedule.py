#!/usr/bin/env python3
"""Reference learning rates for vidlora::schedule (tests/fixtures/schedule/*.json).

transformers' get_*_schedule_with_warmup (LambdaLR: base_lr x multiplier) and PyTorch's
CosineAnnealingWarmRestarts, stepped exactly as a training loop steps them: the value recorded for
step k is the optimizer's lr after k calls of scheduler.step() (0-based optimizer step k).
Also transformers' TrainingArguments.get_warmup_steps for several (ratio, total).

Run: /opt/refenv/bin/python tools/reference/schedule.py
"""
import json
import math
import os
import sys

# Sibling scripts (e.g. tools/reference/tokenizers.py) must not shadow the packages imported below.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
import warnings

import torch
import transformers
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts, LambdaLR, SequentialLR
from transformers import (TrainingArguments, get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                          get_cosine_with_hard_restarts_schedule_with_warmup, get_linear_schedule_with_warmup)

warnings.simplefilter("ignore")  # the epoch argument of step() is deprecated but is PyTorch's closed form
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "schedule")
VERSIONS = {"torch": torch.__version__, "transformers": transformers.__version__}


def optimizer(lr):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def steps_to_record(total, warmup):
    """Every step for small totals (0 .. total+5); otherwise the edges plus a spread."""
    if total <= 200:
        return list(range(0, total + 6))
    picks = {0, 1, 2, warmup - 1, warmup, warmup + 1, total // 4, total // 2, total - 1, total, total + 1, total + 50}
    picks |= set(range(0, total + 51, max(1, total // 97)))
    return sorted(s for s in picks if s >= 0)


def run_lambda(make, base_lr, total, warmup):
    opt = optimizer(base_lr)
    sched = make(opt)
    record = set(steps_to_record(total, warmup))
    out = []
    for k in range(max(record) + 1):
        if k in record:
            out.append([k, opt.param_groups[0]["lr"]])
        opt.step()
        sched.step()
    return out


def transformers_cases():
    cases = []
    grid = [(3e-4, 10, 0), (3e-4, 10, 3), (1e-4, 37, 2), (2e-4, 100, 4), (2e-4, 100, 100), (1e-4, 1, 0),
            (1e-4, 1, 1), (5e-5, 5000, 150)]
    for base_lr, total, warmup in grid:
        cases.append(dict(policy="Constant", base_lr=base_lr, total_steps=total, warmup_steps=warmup,
                          source="transformers.get_constant_schedule_with_warmup",
                          lr=run_lambda(lambda o: get_constant_schedule_with_warmup(o, warmup), base_lr, total, warmup)))
        cases.append(dict(policy="Linear", base_lr=base_lr, total_steps=total, warmup_steps=warmup,
                          source="transformers.get_linear_schedule_with_warmup",
                          lr=run_lambda(lambda o: get_linear_schedule_with_warmup(o, warmup, total), base_lr, total,
                                        warmup)))
        for cycles in (None, 1.0, 2.5):
            kw = {} if cycles is None else {"num_cycles": cycles}
            cases.append(dict(policy="Cosine", base_lr=base_lr, total_steps=total, warmup_steps=warmup,
                              num_cycles=cycles, source="transformers.get_cosine_schedule_with_warmup",
                              lr=run_lambda(lambda o: get_cosine_schedule_with_warmup(o, warmup, total, **kw), base_lr,
                                            total, warmup)))
        for cycles in (None, 3, 2.5):
            kw = {} if cycles is None else {"num_cycles": cycles}
            cases.append(dict(policy="CosineRestarts", base_lr=base_lr, total_steps=total, warmup_steps=warmup,
                              num_cycles=cycles,
                              source="transformers.get_cosine_with_hard_restarts_schedule_with_warmup",
                              lr=run_lambda(lambda o: get_cosine_with_hard_restarts_schedule_with_warmup(
                                  o, warmup, total, **kw), base_lr, total, warmup)))
    return cases


def warm_restarts_closed_form(base_lr, t0, t_mult, eta_min, epoch):
    opt = optimizer(base_lr)
    sched = CosineAnnealingWarmRestarts(opt, T_0=t0, T_mult=t_mult, eta_min=eta_min)
    sched.step(epoch)
    return opt.param_groups[0]["lr"]


def warm_restarts_cases():
    cases = []
    grid = [(1e-3, 10, 1, 0.0, 0, 60), (1e-3, 10, 1, 1e-5, 5, 60), (2e-4, 3, 2, 1e-5, 0, 80),
            (2e-4, 3, 2, 1e-5, 5, 80), (2e-4, 4, 3, 0.0, 2, 150), (1e-4, 1, 3, 0.0, 0, 200), (1e-4, 2, 2, 0.0, 0, 5000)]
    for base_lr, t0, t_mult, eta_min, warmup, total in grid:
        record = steps_to_record(total, warmup)
        lr = []
        for k in record:
            if k < warmup:  # the warmup every policy shares (transformers' multiplier x base_lr)
                lr.append([k, base_lr * (float(k) / float(max(1, warmup)))])
            else:           # SGDR at epoch k - warmup, PyTorch's closed form step(epoch)
                lr.append([k, warm_restarts_closed_form(base_lr, t0, t_mult, eta_min, k - warmup)])
        # Cross-check against PyTorch stepping sequentially: SequentialLR(LambdaLR warmup, CAWR).
        opt = optimizer(base_lr)
        if warmup > 0:
            sched = SequentialLR(opt, [LambdaLR(opt, lambda k: k / max(1, warmup)),
                                       CosineAnnealingWarmRestarts(opt, T_0=t0, T_mult=t_mult, eta_min=eta_min)],
                                 milestones=[warmup])
        else:
            sched = CosineAnnealingWarmRestarts(opt, T_0=t0, T_mult=t_mult, eta_min=eta_min)
        sequential = {}
        for k in range(record[-1] + 1):
            sequential[k] = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
        disagree = [k for k, v in lr if abs(sequential[k] - v) > 1e-12 * max(abs(v), 1e-300)]
        cases.append(dict(policy="WarmRestarts", base_lr=base_lr, total_steps=total, warmup_steps=warmup, t0=t0,
                          t_mult=t_mult, eta_min=eta_min,
                          source="torch.optim.lr_scheduler.CosineAnnealingWarmRestarts.step(epoch) after linear warmup",
                          sequential_disagrees_at=disagree, lr=lr))
    return cases


def warmup_cases():
    out = []
    for ratio in (0.0, 0.01, 0.03, 0.05, 0.07, 0.1, 0.3, 0.5, 0.999):
        for total in (0, 1, 7, 33, 100, 1000, 1234, 100000):
            args = TrainingArguments(output_dir="/tmp/vidlora_ref", warmup_steps=ratio, report_to=[])
            out.append([ratio, total, args.get_warmup_steps(total)])
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "transformers_schedules.json"), "w") as f:
        json.dump({"versions": VERSIONS, "cases": transformers_cases()}, f)
    with open(os.path.join(OUT, "warm_restarts.json"), "w") as f:
        json.dump({"versions": VERSIONS, "cases": warm_restarts_cases()}, f)
    with open(os.path.join(OUT, "warmup_steps.json"), "w") as f:
        json.dump({"versions": VERSIONS, "note": "[ratio, total_steps, TrainingArguments(warmup_steps=ratio)"
                   ".get_warmup_steps(total_steps)]", "values": warmup_cases()}, f)


if __name__ == "__main__":
    main()
