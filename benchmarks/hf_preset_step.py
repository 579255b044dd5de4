#!/usr/bin/env python3
"""What users run today, on each GPU preset's stage-2 step: the baseline of issue 14's speed gate.

transformers' LlavaNextVideoForConditionalGeneration with the LLaVA-NeXT-Video-7B decoder, its seven decoder linears
per layer in bitsandbytes NF4 with double-quantized absmax (what `BitsAndBytesConfig(load_in_4bit=True,
bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)` loads), `peft.prepare_model_for_kbit_training`, PEFT LoRA
on the preset's target modules (r, alpha, dropout), SDPA attention, gradient checkpointing as the preset says, compute
in the preset's 16-bit type, and the label-smoothed cross-entropy of transformers' Trainer (LabelSmoother) on the
logits. One forward + backward over the preset's batch x (num_frames x 144 + 128) input embeddings (features cached,
as in vidlora: the vision tower is not run, and is built with one layer so that its weights do not count), under the
preset card's memory cap (torch.cuda.set_per_process_memory_fraction, set once the model is quantized: building it
in 16 bits first takes 13.5 GB). Times and peaks are of the forward + backward only, as bench_cuda_preset_step's.

The settings come from the preset types themselves: `presets_table --json` (examples/presets_table.cpp) prints them,
and benchmarks/bench_cuda_preset_step.cu runs the same steps in vidlora; tools/gpu-check.sh runs both and prints the
ratios. Random weights: a step's cost does not depend on the values.

    presets_table --json > presets.json
    python3 benchmarks/hf_preset_step.py presets.json            # every GPU preset, JSON lines on stdout
    python3 benchmarks/hf_preset_step.py presets.json --only T4 --iterations 5
    python3 benchmarks/hf_preset_step.py presets.json --tiny --device cpu --no-4bit   # a smoke run without a GPU

Output, one JSON object per preset: name, tokens, step_s (the mean of the timed steps), tokens_per_s, peak_allocated_gib,
peak_reserved_gib, cap_gib, versions; or name and error (an out-of-memory step under the cap is "OOM: ...").
"""

import argparse
import gc
import json
import statistics
import sys
import time


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("presets", help="presets_table --json output ('-' for standard input)")
    p.add_argument("--only", default="", help="comma-separated preset names (default: every GPU preset)")
    p.add_argument("--iterations", type=int, default=3, help="timed steps after one warm-up step (default 3)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true",
                   help="a small model of the same structure (hidden 64, 2 layers, vocab 256, 8 tokens per frame)")
    p.add_argument("--no-4bit", action="store_true", help="dense 16-bit base instead of NF4 (no bitsandbytes)")
    p.add_argument("--no-cap", action="store_true", help="do not limit the process to the preset card's memory")
    return p.parse_args(argv)


def load_presets(path):
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    doc = json.loads(text)
    for key in ("model", "presets"):
        if key not in doc:
            raise SystemExit(f"hf_preset_step: {path} has no '{key}' (is it `presets_table --json` output?)")
    return doc


def shape_of(doc, tiny):
    m = dict(doc["model"])
    if tiny:
        m.update(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=4, head_dim=16, vocab=256,
                 tokens_per_frame=8, text_tokens=8)
    return m


def build_model(torch, m, preset, dtype, device, use_4bit):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration

    seq_len = preset["num_frames"] * m["tokens_per_frame"] + m["text_tokens"]
    text = LlamaConfig(hidden_size=m["hidden"], intermediate_size=m["intermediate"], num_hidden_layers=m["layers"],
                       num_attention_heads=m["heads"], num_key_value_heads=m["kv_heads"], head_dim=m["head_dim"],
                       vocab_size=m["vocab"], max_position_embeddings=max(4096, seq_len), rms_norm_eps=1e-5,
                       tie_word_embeddings=False)
    # One small CLIP layer: never run (the embeddings are given), only there because the model class needs one.
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=1024, num_hidden_layers=1, num_attention_heads=8,
                              image_size=336, patch_size=14, projection_dim=768)
    config = LlavaNextVideoConfig(vision_config=vision, text_config=text, vocab_size=m["vocab"])
    config._attn_implementation = "sdpa"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlavaNextVideoForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.requires_grad_(False)
    if use_4bit:
        quantize_decoder_linears(torch, model, dtype, device)
    return model, seq_len


def decoder_layers(model):
    # the decoder's LlamaModel: before transformers 4.52 model.language_model is a LlamaForCausalLM, from 4.52 a
    # LlamaModel under model.model; get_decoder() gives the LlamaModel in both
    return model.get_decoder().layers


def quantize_decoder_linears(torch, model, dtype, device):
    """Every decoder layer's seven linears as bnb Linear4bit, NF4, blocksize 64, double-quantized absmax."""
    import bitsandbytes as bnb

    for layer in decoder_layers(model):
        for parent, names in ((layer.self_attn, ("q_proj", "k_proj", "v_proj", "o_proj")),
                              (layer.mlp, ("gate_proj", "up_proj", "down_proj"))):
            for name in names:
                dense = getattr(parent, name)
                q = bnb.nn.Linear4bit(dense.in_features, dense.out_features, bias=dense.bias is not None,
                                      compute_dtype=dtype, compress_statistics=True, quant_type="nf4",
                                      device="meta")
                q.weight = bnb.nn.Params4bit(dense.weight.data, requires_grad=False, quant_type="nf4",
                                             compress_statistics=True, blocksize=64).to(device)
                if dense.bias is not None:
                    q.bias = torch.nn.Parameter(dense.bias.data, requires_grad=False)
                setattr(parent, name, q)
                del dense
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def add_lora(model, preset, use_checkpointing, quantized):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantized:  # casts every parameter that is not NF4 to fp32, as the QLoRA recipe does
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        # what from_pretrained(quantization_config=...) marks, and PEFT reads to wrap each bnb Linear4bit in its
        # QLoRA layer (peft.tuners.lora.bnb.Linear4bit) rather than the plain lora.Linear
        model.is_loaded_in_4bit = True
    # prepare_model_for_kbit_training turns checkpointing on only for a model from_pretrained marked is_loaded_in_4bit;
    # this one was quantized in place, so it is turned on here, the same way.
    if use_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if not model.is_gradient_checkpointing:
            raise RuntimeError("gradient checkpointing did not turn on")
    # The decoder's modules only (CLIP's attention has q_proj / k_proj / v_proj too).
    targets = "|".join(preset["target_modules"])
    lora = LoraConfig(r=preset["lora_r"], lora_alpha=preset["lora_alpha"], lora_dropout=preset["lora_dropout"],
                      target_modules=rf".*language_model.*\.({targets})", bias="none")
    return get_peft_model(model, lora)


def label_smoothed_loss(torch, logits, labels, epsilon):
    """transformers.trainer_pt_utils.LabelSmoother on the shifted logits (what the Trainer runs with
    label_smoothing_factor; epsilon 0 is the model's own cross-entropy)."""
    logits = logits[:, :-1, :]
    labels = labels[:, 1:]
    log_probs = -torch.nn.functional.log_softmax(logits.float(), dim=-1)
    labels = labels.unsqueeze(-1)
    padding = labels.eq(-100)
    nll = log_probs.gather(dim=-1, index=labels.clamp(min=0))
    smoothed = log_probs.sum(dim=-1, keepdim=True, dtype=torch.float32)
    nll.masked_fill_(padding, 0.0)
    smoothed.masked_fill_(padding, 0.0)
    active = padding.numel() - padding.long().sum()
    nll = nll.sum() / active
    smoothed = smoothed.sum() / (active * log_probs.shape[-1])
    return (1 - epsilon) * nll + epsilon * smoothed


def run_preset(torch, doc, preset, args):
    m = shape_of(doc, args.tiny)
    device = args.device
    on_cuda = device.startswith("cuda")
    dtype = torch.float16 if preset["fp16"] else torch.bfloat16
    use_4bit = preset["load_in_4bit"] and not args.no_4bit
    cap_gib = preset["memory_cap_gib"]
    result = {"name": preset["name"], "cap_gib": cap_gib, "dtype": str(dtype).replace("torch.", ""),
              "nf4": use_4bit, "gradient_checkpointing": preset["gradient_checkpointing"]}
    if on_cuda:  # building the 16-bit model before quantizing it takes more than a T4's cap: no cap until then
        torch.cuda.set_per_process_memory_fraction(1.0, device)
    model = None
    try:
        torch.manual_seed(0)
        model, seq_len = build_model(torch, m, preset, dtype, device, use_4bit)
        if on_cuda and not args.no_cap:  # the step runs under the preset card's cap, as vidlora's does
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gib * 2**30 / total), device)
        model = add_lora(model, preset, preset["gradient_checkpointing"], use_4bit)
        model.train()
        batch = preset["batch_size"]
        g = torch.Generator(device="cpu").manual_seed(1)
        embeds = (torch.rand(batch, seq_len, m["hidden"], generator=g) * 0.1 - 0.05).to(device=device, dtype=dtype)
        # stage 2 trains the projector, so its input gradient is computed, as vidlora's step returns d loss / d embeds
        embeds.requires_grad_(True)
        labels = torch.full((batch, seq_len), -100, dtype=torch.long)
        labels[:, seq_len - m["text_tokens"]:] = torch.randint(0, m["vocab"], (batch, m["text_tokens"]), generator=g)
        labels = labels.to(device)
        mask = torch.ones(batch, seq_len, dtype=torch.long, device=device)
        result["tokens"] = batch * seq_len
        if use_4bit:  # every decoder linear quantized, nothing else
            import bitsandbytes as bnb
            result["nf4_linears"] = sum(isinstance(mod, bnb.nn.Linear4bit) for mod in model.modules())
            if result["nf4_linears"] != 7 * m["layers"]:
                raise RuntimeError(f"{result['nf4_linears']} NF4 linears, expected {7 * m['layers']}")
        result["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)

        def step():
            model.zero_grad(set_to_none=True)
            with torch.autocast(device_type="cuda" if on_cuda else "cpu", dtype=dtype):
                out = model(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
                loss = label_smoothed_loss(torch, out.logits, labels, preset["label_smoothing"])
            loss.backward()
            return float(loss.detach())

        if on_cuda:  # the 16-bit originals that quantization and the fp32 casts freed are not the step's memory
            torch.cuda.empty_cache()
        step()  # warm-up
        if on_cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(args.iterations):
            if on_cuda:
                start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                result["loss"] = step()
                stop.record()
                stop.synchronize()
                times.append(start.elapsed_time(stop) / 1e3)
            else:
                t0 = time.perf_counter()
                result["loss"] = step()
                times.append(time.perf_counter() - t0)
        result["step_s"] = statistics.mean(times)  # as Google Benchmark's real_time over vidlora's steps
        result["tokens_per_s"] = result["tokens"] / result["step_s"]
        if on_cuda:
            result["peak_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            result["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
    except torch.cuda.OutOfMemoryError as e:
        result["error"] = "OOM: " + str(e).split("\n")[0][:200]
    except Exception as e:  # a failed preset is reported and the next one runs
        result["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    finally:
        del model
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()
    return result


def main(argv):
    args = parse_args(argv)
    doc = load_presets(args.presets)
    import torch
    import transformers
    import peft

    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
    try:
        import bitsandbytes
        versions["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        if not args.no_4bit:
            raise SystemExit("hf_preset_step: bitsandbytes is missing (docs/cuda.md: carry it in .whl/site), "
                             "or pass --no-4bit")
    if args.device == "cuda":  # with its index: torch.cuda's memory calls refuse a device without one
        args.device = f"cuda:{torch.cuda.current_device()}"
    if args.device.startswith("cuda"):
        versions["gpu"] = torch.cuda.get_device_name(args.device)
    only = {n for n in args.only.split(",") if n}
    # the presets, then the steps with checkpointing that the A100 / H100 presets run without ("fallbacks": the
    # configuration transformers + PEFT can fit there), each paired by name with bench_cuda_preset_step's row
    steps = doc["presets"] + doc.get("fallbacks", [])
    known = {p["name"] for p in steps}
    unknown = only - known
    if unknown:
        raise SystemExit(f"hf_preset_step: unknown preset(s) {sorted(unknown)}; known: {sorted(known)}")
    for preset in steps:
        if only and preset["name"] not in only:
            continue
        r = run_preset(torch, doc, preset, args)
        r["versions"] = versions
        print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
