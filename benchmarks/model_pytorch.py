#!/usr/bin/env python3
"""The bench_model training step with PyTorch eager + transformers + PEFT on this CPU.

    /opt/refenv/bin/python -P benchmarks/model_pytorch.py [--threads 2] [--iterations 3] [--repetitions 3]

Same model and batch as benchmarks/bench_model.cpp: LLaMA hidden 512, intermediate 1408, 8 layers,
8 heads, vocab 32000, float32, LoRA r=16 alpha=32 dropout 0 on all seven modules, an
Linear(1024, 512) → GELU → Linear(512, 512) projector (trained), batch 4 × (128 visual + 64 text)
tokens, label-smoothed (0.1) next-token loss; optionally gradient checkpointing. Reports the median
over repetitions of the mean step time, and the process's peak RSS growth during the steps.
"""
import argparse
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

BATCH, VISUAL, TEXT, VISION_HIDDEN = 4, 128, 64, 1024


def build(checkpointing):
    cfg = LlamaConfig(vocab_size=32000, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                      num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=256,
                      tie_word_embeddings=False, attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj"]))
    if checkpointing:
        model.base_model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.base_model.model.enable_input_require_grads()
    model.train()
    projector = torch.nn.Sequential(torch.nn.Linear(VISION_HIDDEN, 512), torch.nn.GELU(), torch.nn.Linear(512, 512))
    return model, projector


def step(model, projector, features, ids, labels):
    embeds = model.get_input_embeddings()(ids)
    visual = projector(features).view(BATCH, VISUAL, -1)
    embeds = torch.cat([embeds[:, :2], visual, embeds[:, 2:]], dim=1)
    logits = model(inputs_embeds=embeds).logits
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=-100, label_smoothing=0.1)
    loss.backward()
    return loss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--repetitions", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    features = torch.randn(BATCH * VISUAL, VISION_HIDDEN)
    ids = torch.randint(2, 31000, (BATCH, TEXT))
    labels = torch.full((BATCH, VISUAL + TEXT), -100)
    labels[:, VISUAL + 16:] = ids[:, 16:]
    print(f"torch {torch.__version__}, threads {args.threads}")
    for checkpointing in (False, True):
        model, projector = build(checkpointing)
        step(model, projector, features, ids, labels)  # warm-up
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        means = []
        for _ in range(args.repetitions):
            t0 = time.perf_counter()
            for _ in range(args.iterations):
                model.zero_grad(set_to_none=True)
                projector.zero_grad(set_to_none=True)
                step(model, projector, features, ids, labels)
            means.append((time.perf_counter() - t0) / args.iterations * 1e3)
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"train step checkpointing={checkpointing}: median {statistics.median(means):.1f} ms "
              f"({BATCH * (VISUAL + TEXT) / statistics.median(means) * 1e3:.0f} tokens/s), "
              f"peak RSS {rss1 / 1024:.0f} MB (+{(rss1 - rss0) / 1024:.0f} MB during steps)")
        del model, projector


if __name__ == "__main__":
    main()
