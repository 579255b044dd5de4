#!/usr/bin/env python3
"""Reference values for vidlora::loss from PyTorch.

Writes tests/fixtures/loss/*.json:
  ce_*.json       torch.nn.functional.cross_entropy(logits, targets, ignore_index=-100,
                  label_smoothing=eps, reduction='mean') and d loss / d logits (autograd), float32.
  lm_head.json    the same loss on logits = hidden @ head_weight.T with grads for hidden and head_weight.
Inputs are float32 and are stored as their shortest round-trip decimal, so a C++ reader that parses
the number as double and rounds to float recovers them exactly (checked below).

Run: /opt/refenv/bin/python tools/reference/loss.py
"""
import json
import pathlib
import platform

import numpy as np
import torch
import torch.nn.functional as F

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "loss"
IGNORE = -100


def f32_list(a):
    """float32 array -> nested lists of Python floats that round-trip to the same float32."""
    a = np.asarray(a, dtype=np.float32)
    # shortest decimal that identifies the float32 value (repr of the widened double is far longer)
    flat = [float(np.format_float_positional(np.float32(x), unique=True, trim="-")) if abs(x) >= 1e-4 or x == 0
            else float(np.format_float_scientific(np.float32(x), unique=True, trim="-")) for x in a.reshape(-1)]
    back = np.array(flat, dtype=np.float64).astype(np.float32)
    assert np.array_equal(back.view(np.uint32), a.reshape(-1).view(np.uint32)), "float32 round trip failed"
    return np.array(flat, dtype=object).reshape(a.shape).tolist()


def versions():
    return {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}


def targets_with_ignored(gen, t, v, n_ignored):
    targets = torch.randint(0, v, (t,), generator=gen)
    idx = torch.randperm(t, generator=gen)[:n_ignored]
    targets[idx] = IGNORE
    return targets


def ce_case(name, t, v, eps, n_ignored, seed, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(t, v, generator=gen) * scale).float()
    targets = targets_with_ignored(gen, t, v, n_ignored)
    x = logits.clone().requires_grad_(True)
    loss = F.cross_entropy(x, targets, ignore_index=IGNORE, label_smoothing=eps, reduction="mean")
    loss.backward()
    loss_sum = F.cross_entropy(logits, targets, ignore_index=IGNORE, label_smoothing=eps, reduction="sum")
    return {
        "name": name,
        "label_smoothing": eps,
        "ignore_index": IGNORE,
        "shape": [t, v],
        "logits": f32_list(logits.numpy()),
        "targets": targets.tolist(),
        "valid_tokens": int((targets != IGNORE).sum()),
        "loss": float(loss.item()),
        "loss_sum": float(loss_sum.item()),
        "grad": f32_list(x.grad.numpy()),
    }


def write(fname, payload):
    payload["generator"] = "tools/reference/loss.py"
    payload["versions"] = versions()
    path = OUT / fname
    path.write_text(json.dumps(payload, separators=(",", ":")))
    print(f"{path.relative_to(OUT.parents[2])}: {path.stat().st_size / 1024:.1f} KiB")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    # tiny vocabulary: several cases in one file
    tiny = [ce_case(f"tiny_eps{eps}", 7, 5, eps, 2, seed) for seed, eps in [(1, 0.0), (2, 0.1), (3, 0.3)]]
    tiny.append(ce_case("tiny_no_ignored_eps0.1", 4, 3, 0.1, 0, 4))
    # every target ignored: torch's mean is 0/0 = NaN (vidlora returns 0 and documents it)
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 4, generator=gen)
    all_ignored = F.cross_entropy(logits, torch.full((3,), IGNORE), ignore_index=IGNORE, reduction="mean")
    write("ce_tiny.json", {"cases": tiny, "all_ignored_torch_mean_is_nan": bool(torch.isnan(all_ignored))})
    # V ~ 1000, one file per label smoothing (keeps each fixture < 300 KB)
    write("ce_v1000_eps0.json", {"cases": [ce_case("v1000_eps0", 6, 1000, 0.0, 2, 10)]})
    write("ce_v1000_eps0.1.json", {"cases": [ce_case("v1000_eps0.1", 6, 1000, 0.1, 2, 11)]})

    # Gradient accumulation: three micro-batches normalised by the step's valid-token total, as
    # transformers' fixed_cross_entropy(num_items_in_batch=...) does (it sums, then divides once).
    from transformers.loss.loss_utils import fixed_cross_entropy
    import transformers
    gen = torch.Generator().manual_seed(30)
    v = 11
    rows_and_ignored = [(6, 1), (5, 3), (8, 1)]
    micro = []
    for t, n_ignored in rows_and_ignored:
        logits = (torch.randn(t, v, generator=gen) * 3).float()
        micro.append((logits, targets_with_ignored(gen, t, v, n_ignored)))
    total = sum(int((tg != IGNORE).sum()) for _, tg in micro)
    batches = []
    for logits, targets in micro:
        x = logits.clone().requires_grad_(True)
        loss = fixed_cross_entropy(x, targets, num_items_in_batch=torch.tensor(total), ignore_index=IGNORE)
        loss.backward()
        batches.append({"logits": f32_list(logits.numpy()), "targets": targets.tolist(),
                        "loss": float(loss.item()), "grad": f32_list(x.grad.numpy())})
    all_logits = torch.cat([l for l, _ in micro])
    all_targets = torch.cat([t for _, t in micro])
    big = F.cross_entropy(all_logits, all_targets, ignore_index=IGNORE, reduction="mean")
    mean_of_means = sum(F.cross_entropy(l, t, ignore_index=IGNORE).item() for l, t in micro) / len(micro)
    write("ce_accumulation.json", {"micro_batches": batches, "total_valid_tokens": total,
                                   "big_batch_loss": float(big.item()), "mean_of_means": mean_of_means,
                                   "transformers": transformers.__version__})

    # LM head: logits = hidden @ W^T, grads for hidden and W
    cases = []
    for seed, eps in [(20, 0.0), (21, 0.1)]:
        gen = torch.Generator().manual_seed(seed)
        t, d, v = 6, 8, 37
        hidden = torch.randn(t, d, generator=gen).float()
        weight = (torch.randn(v, d, generator=gen) * 0.5).float()
        targets = targets_with_ignored(gen, t, v, 2)
        h = hidden.clone().requires_grad_(True)
        w = weight.clone().requires_grad_(True)
        loss = F.cross_entropy(h @ w.T, targets, ignore_index=IGNORE, label_smoothing=eps, reduction="mean")
        loss.backward()
        cases.append({
            "name": f"lm_head_eps{eps}", "label_smoothing": eps, "ignore_index": IGNORE, "shape": [t, d, v],
            "hidden": f32_list(hidden.numpy()), "head_weight": f32_list(weight.numpy()),
            "targets": targets.tolist(), "valid_tokens": int((targets != IGNORE).sum()),
            "loss": float(loss.item()), "grad_hidden": f32_list(h.grad.numpy()),
            "grad_head_weight": f32_list(w.grad.numpy()),
        })
    write("lm_head.json", {"cases": cases})


if __name__ == "__main__":
    main()
