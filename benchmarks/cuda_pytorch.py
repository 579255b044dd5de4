#!/usr/bin/env python3
"""PyTorch (+ PEFT, + bitsandbytes when importable) on the same GPU and shapes as the bench_cuda_* programs:
the comparison the CUDA backend is held to ("at least as fast"). Prints `name,milliseconds` lines (median of
timed repetitions after warm-up, CUDA events). Run by tools/gpu-check.sh when `import torch` works there."""
import statistics
import sys

import torch


def timed(fn, reps=20, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def report(name, ms):
    print(f"{name},{ms:.4f}", flush=True)


def lora(tokens=8192, features=4096, rank=16):
    dev, dt = "cuda", torch.bfloat16
    base = torch.nn.Linear(features, features, bias=False, device=dev, dtype=dt).requires_grad_(False)
    x = torch.rand(tokens, features, device=dev, dtype=dt).mul_(2).sub_(1).requires_grad_(True)
    dy = torch.rand(tokens, features, device=dev, dtype=dt).mul_(2e-3).sub_(1e-3)

    def frozen():
        x.grad = None
        base(x).backward(dy)

    report("torch_frozen_linear_fwd_bwd_bf16", timed(frozen))
    try:
        import peft
    except ImportError:
        print("# peft not importable: LoRA comparison skipped", file=sys.stderr)
        return
    for dropout in (0.0, 0.05):
        model = torch.nn.Sequential(torch.nn.Linear(features, features, bias=False, device=dev, dtype=dt))
        cfg = peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=dropout, target_modules=["0"])
        m = peft.get_peft_model(model, cfg).to(dev, dt)
        m.train()

        def step():
            x.grad = None
            m(x).backward(dy)

        report(f"peft_lora_fwd_bwd_bf16_dropout{int(dropout * 100)}", timed(step))


def adamw(params=40 << 20, tensors=448):
    each = params // tensors
    ps = [torch.zeros(each if t + 1 < tensors else params - each * (tensors - 1), device="cuda", requires_grad=True)
          for t in range(tensors)]
    for p in ps:
        p.grad = torch.zeros_like(p)
    for fused in (True, False):
        opt = torch.optim.AdamW(ps, lr=1e-4, weight_decay=0.01, fused=fused, foreach=None if fused else True)
        report(f"torch_adamw_{'fused' if fused else 'foreach'}_40Mi", timed(opt.step))
    report("torch_clip_grad_norm_40Mi", timed(lambda: torch.nn.utils.clip_grad_norm_(ps, 1e-30, foreach=True)))
    src, dst = torch.empty(params, device="cuda"), torch.empty(params, device="cuda")
    report("torch_copy_40Mi_f32", timed(lambda: dst.copy_(src)))


def nf4(rows=8192, cols=8192):
    try:
        import bitsandbytes.functional as bnbf
    except ImportError:
        print("# bitsandbytes not importable: NF4 comparison skipped", file=sys.stderr)
        return
    w = torch.randn(rows, cols, device="cuda", dtype=torch.bfloat16)
    q, state = bnbf.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    report("bnb_dequantize_nf4_8192x8192_bf16", timed(lambda: bnbf.dequantize_4bit(q, state)))
    import bitsandbytes as bnb
    xv = torch.randn(1, cols, device="cuda", dtype=torch.bfloat16)
    report("bnb_gemv_4bit_8192x8192_bf16", timed(lambda: bnb.matmul_4bit(xv, q.t(), quant_state=state)))


def qlora(tokens=8192, features=4096, rank=16):
    """PEFT LoRA on bitsandbytes' Linear4bit (NF4, double-quantized absmax, bf16 compute): QLoRA's layer."""
    try:
        import bitsandbytes as bnb
        import peft
    except ImportError as e:
        print(f"# {e}: QLoRA comparison skipped", file=sys.stderr)
        return
    dev, dt = "cuda", torch.bfloat16
    x = torch.rand(tokens, features, device=dev, dtype=dt).mul_(2).sub_(1).requires_grad_(True)
    dy = torch.rand(tokens, features, device=dev, dtype=dt).mul_(2e-3).sub_(1e-3)
    for dropout in (0.0, 0.05):
        base = bnb.nn.Linear4bit(features, features, bias=False, compute_dtype=dt, compress_statistics=True,
                                 quant_type="nf4")
        # bf16 first, so that the quantization (on the move to the GPU) records bf16 as the weight's dtype and the
        # backward dequantizes straight to bf16, as a model loaded in bf16 does
        model = torch.nn.Sequential(base).to(dt).to(dev)
        model.is_loaded_in_4bit = True  # PEFT then wraps the layer in its QLoRA layer (lora.bnb.Linear4bit)
        cfg = peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=dropout, target_modules=["0"])
        m = peft.get_peft_model(model, cfg)
        for name, param in m.named_parameters():
            if "lora_" in name:
                param.data = param.data.to(dt)
        m.train()

        def step():
            x.grad = None
            m(x).backward(dy)

        report(f"peft_qlora_nf4_fwd_bwd_bf16_dropout{int(dropout * 100)}", timed(step))


def sdpa(heads=32, head_dim=128):
    """PyTorch's SDPA, flash backend, causal, bf16, forward + backward: the baseline of issue 14's attention gate
    (benchmarks/bench_cuda_attention.cu runs the same shapes); and the forward alone, the register-tile forward's."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dev, dt = "cuda", torch.bfloat16
    for t in (2432, 4096):
        q, k, v = (torch.rand(1, heads, t, head_dim, device=dev, dtype=dt).mul_(4).sub_(2).requires_grad_(True)
                   for _ in range(3))
        dout = torch.rand(1, heads, t, head_dim, device=dev, dtype=dt).mul_(2e-3).sub_(1e-3)

        def step():
            q.grad = k.grad = v.grad = None
            torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).backward(dout)

        def forward():
            torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

        # The contexts entered outside the timed calls: their Python cost is not the kernels'.
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            report(f"torch_sdpa_flash_fwd_bwd_bf16_T{t}", timed(step))
            with torch.no_grad():
                report(f"torch_sdpa_flash_fwd_bf16_T{t}", timed(forward))


if __name__ == "__main__":
    if not torch.cuda.is_available():
        print("# torch sees no CUDA device", file=sys.stderr)
        sys.exit(77)
    print(f"# torch {torch.__version__} on {torch.cuda.get_device_name(0)}", file=sys.stderr)
    # The comparisons named on the command line (tools/gpu-check.sh runs sdpa, the attention gate's, first), else all.
    every = {f.__name__: f for f in (sdpa, lora, adamw, nf4, qlora)}
    unknown = [n for n in sys.argv[1:] if n not in every]
    if unknown:
        print(f"# unknown comparison(s) {unknown}; known: {list(every)}", file=sys.stderr)
        sys.exit(2)
    for bench in [every[n] for n in sys.argv[1:]] or list(every.values()):
        try:
            bench()
        except Exception as e:  # one failing comparison must not hide the others
            print(f"# {bench.__name__} failed: {type(e).__name__}: {e}", file=sys.stderr)
