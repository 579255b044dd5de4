#!/usr/bin/env python3
"""The bench_lora shapes with PyTorch + PEFT on this CPU, printing the same table.

    /opt/refenv/bin/python benchmarks/lora_pytorch.py [--threads 2] [--iterations 2] [--repetitions 3]

Rows: the frozen GEMMs alone (x·Wᵀ forward, dy·W backward), then a PEFT LoRA linear layer
(float32, lora_dropout 0) for r in {8, 16, 32, 64} with alpha = 2r, forward + backward
(grad_x, grad_A, grad_B; W frozen), in = out = 4096, tokens = 2048; then the frozen forward and
the r = 16 forward alone (no_grad). Reports the median over
repetitions of the mean time per iteration, as Google Benchmark's aggregates do, and the minimum
(the least-disturbed repetition on a shared machine).
"""
import argparse
import statistics
import time

import peft
import torch
from peft import LoraConfig, get_peft_model

IN, OUT, TOKENS = 4096, 4096, 2048


class Wrapper(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(IN, OUT, bias=False)

    def forward(self, x):
        return self.proj(x)


def timed(fn, iterations, repetitions):
    fn()  # warm-up
    times = []
    for _ in range(repetitions):
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        times.append((time.perf_counter() - start) / iterations)
    return statistics.median(times), min(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    w = torch.rand(OUT, IN) * 0.04 - 0.02
    x = torch.rand(TOKENS, IN) * 2 - 1
    dy = torch.rand(TOKENS, OUT) * 2 - 1
    gemm = 2.0 * TOKENS * IN * OUT

    def frozen():
        y = x @ w.t()
        dx = dy @ w
        return y, dx

    rows = [("frozen_forward_backward/torch", timed(frozen, args.iterations, args.repetitions), 2 * gemm)]
    forward_rows = [("frozen_forward/torch", timed(lambda: x @ w.t(), args.iterations, args.repetitions), gemm)]

    for r in (8, 16, 32, 64):
        model = Wrapper()
        with torch.no_grad():
            model.proj.weight.copy_(w)
        model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=["proj"]))
        with torch.no_grad():
            model.base_model.model.proj.lora_B["default"].weight.uniform_(-0.01, 0.01)
        model.train()
        xr = x.clone().requires_grad_(True)

        def step():
            y = model(xr)
            y.backward(dy)
            xr.grad = None
            model.zero_grad(set_to_none=True)

        flops = 2 * gemm + 6 * 2.0 * TOKENS * IN * r
        rows.append((f"lora_forward_backward/peft r={r} alpha={2 * r}", timed(step, args.iterations, args.repetitions),
                     flops))
        if r == 16:
            def forward_only():
                with torch.no_grad():
                    return model(x)

            forward_rows.append((f"lora_forward/peft r={r} alpha={2 * r}",
                                 timed(forward_only, args.iterations, args.repetitions),
                                 gemm + 2 * 2.0 * TOKENS * IN * r))

    print(f"torch {torch.__version__}, peft {peft.__version__}, threads {torch.get_num_threads()}, "
          f"in={IN} out={OUT} tokens={TOKENS}, median of {args.repetitions} x {args.iterations} iterations")
    print(f"{'benchmark':<48} {'median ms':>10} {'min ms':>10} {'GFLOP/s':>10} {'vs frozen':>10} {'min vs':>8}")
    for table in (rows, forward_rows):
        base, base_min = table[0][1]
        for name, (seconds, fastest), flops in table:
            print(f"{name:<48} {seconds * 1e3:10.1f} {fastest * 1e3:10.1f} {flops / seconds * 1e-9:10.1f} "
                  f"{seconds / base:10.3f}x {fastest / base_min:7.3f}x")


if __name__ == "__main__":
    main()
