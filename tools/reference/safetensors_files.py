#!/usr/bin/env python3
"""Reference files for vidlora::io from the Python `safetensors` library, torch and transformers.

Writes into tests/fixtures/io/:
  dtype_conversion.json    torch's float32 -> bf16 / fp16 casts (tricky values listed, plus FNV-1a
                           hashes over ~1.2 million float patterns and all 65536 bf16/fp16 patterns)
  mixed.safetensors        F32/F16/BF16/I64/scalar/empty tensors + {"format": "pt"} metadata
  escaped_names.safetensors  names that JSON must escape (newline, quote, control char, UTF-8)
  mixed.json               what mixed.safetensors holds (dtype, shape, values as float64 / ints)
  llama_single/            tiny LlamaForCausalLM, save_pretrained (one model.safetensors, float32)
  llama_sharded/           the same model in bfloat16, sharded (model.safetensors.index.json)
  llama.json               names, shapes and float32 values of the tiny model's tensors
  llava_legacy/            tiny LLaVA (CLIP + LLaMA) under the older hub key names
                           (language_model.model.*, vision_tower.vision_model.*, multi_modal_projector.*)
  llava_current/           the same model under the newer names (model.language_model.*, model.vision_tower.*,
                           model.multi_modal_projector.*, lm_head.weight), as the model's state_dict has them
  llava_next_video/        tiny LLaVA-NeXT-Video as transformers' save_pretrained writes it, sharded
  clip/                    tiny CLIPModel, save_pretrained (vision_model.* beside text_model.*)
  vlm.json                 each model's tensors under vidlora's canonical names, read from the submodules
                           (decoder: LlamaForCausalLM names; vision: CLIP vision transformer names without
                           "vision_model."; projector: multi_modal_projector.*, image_newline)

  matrices_by_torch.safetensors  a 2x3 float32 matrix with its torch bf16 and fp16 casts and a float32
                           vector, as safetensors.torch.save_file writes them (the C++ writer must produce
                           these bytes from the same matrices)

Check that a file written by vidlora loads in Python (bf16/f16 tensors equal torch's casts of the f32 one):
  /opt/refenv/bin/python tools/reference/safetensors_files.py --check <file.safetensors>

Run:  /opt/refenv/bin/python tools/reference/safetensors_files.py
"""
import json
import math
import pathlib
import shutil
import struct
import sys

# tools/reference/ holds scripts named like packages (tokenizers.py): keep it off the import path.
sys.path = [p for p in sys.path if pathlib.Path(p or ".").resolve() != pathlib.Path(__file__).resolve().parent]

import safetensors
import torch
import transformers
from safetensors.torch import load_file, save_file

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "io"
FNV_OFFSET, FNV_PRIME, MASK = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1


def versions():
    return {"torch": torch.__version__, "safetensors": safetensors.__version__,
            "transformers": transformers.__version__}


def fnv1a(words):
    """FNV-1a over 64-bit-widened words (the C++ test hashes the same way)."""
    h = FNV_OFFSET
    for w in words:
        h = ((h ^ w) * FNV_PRIME) & MASK
    return h


def float_patterns():
    """Float32 bit patterns: a stride over all 2^32, every bf16 tie and every fp16 midpoint."""
    patterns = list(range(0, 1 << 32, 4099))
    patterns += [(k << 16) | 0x8000 for k in range(1 << 16)]  # exactly half-way between two bf16
    halves = torch.arange(0, 1 << 15, dtype=torch.int32).to(torch.int16).view(torch.float16).float()
    finite = halves[torch.isfinite(halves)].double()
    mids = ((finite[:-1] + finite[1:]) / 2).float()  # exact in float32: fp16 has 11 significant bits
    mid_bits = mids.view(torch.int32).tolist()
    patterns += [b & 0xFFFFFFFF for b in mid_bits] + [(b & 0xFFFFFFFF) | 0x80000000 for b in mid_bits]
    return patterns


def dtype_fixture():
    patterns = float_patterns()
    as_float = torch.tensor([p if p < (1 << 31) else p - (1 << 32) for p in patterns], dtype=torch.int32).view(torch.float32)
    bf16 = (as_float.to(torch.bfloat16).view(torch.int16).to(torch.int32) & 0xFFFF).tolist()
    fp16 = (as_float.half().view(torch.int16).to(torch.int32) & 0xFFFF).tolist()
    all16 = torch.arange(0, 1 << 16, dtype=torch.int32).to(torch.int16)
    bf16_widened = (all16.view(torch.bfloat16).float().view(torch.int32).to(torch.int64) & 0xFFFFFFFF).tolist()
    fp16_widened = (all16.view(torch.float16).float().view(torch.int32).to(torch.int64) & 0xFFFFFFFF).tolist()

    tricky = [0.0, -0.0, 1.0, -1.0, 1.00390625, 1.01171875, 3.140625, 65504.0, 65519.99609375, 65520.0, 65536.0,
              -65520.0, 1e-45, 2.0 ** -24, 2.0 ** -25, 2.0 ** -25 * 1.0000001, 3 * 2.0 ** -26, 6.0e-8, 6.1e-5,
              2.0 ** -14, 2.0 ** -14 - 2.0 ** -25, 1.1754942e-38, 1e-40, 3.4028235e38, 3.3961776e38, 3.3961775e38,
              math.inf, -math.inf, math.nan, -math.nan, 0.1, 1 / 3, 1e10, -7.5e-6]
    t = torch.tensor(tricky, dtype=torch.float32)
    rows = []
    for value, bits, b, h in zip(t.tolist(), t.view(torch.int32).tolist(),
                                 (t.to(torch.bfloat16).view(torch.int16).to(torch.int32) & 0xFFFF).tolist(),
                                 (t.half().view(torch.int16).to(torch.int32) & 0xFFFF).tolist()):
        rows.append({"float_bits": bits & 0xFFFFFFFF, "bf16_bits": b, "fp16_bits": h, "value": repr(value)})
    return {
        "versions": versions(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "tricky": rows,
        "patterns": {"stride": 4099, "count": len(patterns),
                     "rule": "range(0, 2^32, 4099); (k<<16)|0x8000 for k<2^16; fp16 midpoints (positive, then negated)"},
        "hash_float_to_bf16": fnv1a(bf16),
        "hash_float_to_fp16": fnv1a(fp16),
        "hash_bf16_to_float": fnv1a(bf16_widened),
        "hash_fp16_to_float": fnv1a(fp16_widened),
    }


def mixed_tensors():
    g = torch.Generator().manual_seed(7)
    return {
        "weight": torch.randn(3, 4, generator=g),
        "half": torch.tensor([1.0, -2.5, 65504.0, 6.0e-8, 0.1], dtype=torch.float16),
        "brain": (torch.randn(2, 3, generator=g) * 100).to(torch.bfloat16),
        "scalar": torch.tensor(1.5),
        "empty": torch.zeros(0, 3),
        "ids": torch.tensor([-1, 0, 1 << 40], dtype=torch.int64),
        "a.bias": torch.randn(4, generator=g),
    }


def describe(tensors):
    out = {}
    for name, t in tensors.items():
        entry = {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape)}
        if t.dtype.is_floating_point:
            entry["values"] = t.double().flatten().tolist()
        else:
            entry["values"] = t.flatten().tolist()
        out[name] = entry
    return out


def tiny_llama():
    torch.manual_seed(3)
    config = transformers.LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    return transformers.LlamaForCausalLM(config).eval()


def write_llama():
    model = tiny_llama()
    single = OUT / "llama_single"
    sharded = OUT / "llama_sharded"
    for d in (single, sharded):
        shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(single)
    model.to(torch.bfloat16).save_pretrained(sharded, max_shard_size="2KB")
    for d in (single, sharded):
        for extra in ("generation_config.json",):
            (d / extra).unlink(missing_ok=True)
    state = load_file(single / "model.safetensors")
    expected = {"versions": versions(), "tensors": describe(state)}
    (OUT / "llama.json").write_text(json.dumps(expected))


def tiny_vision_config():
    return transformers.CLIPVisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, image_size=8, patch_size=4, projection_dim=8)


def tiny_text_config():
    return transformers.LlamaConfig(vocab_size=40, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)


def canonical(model):
    """A LLaVA-family model's tensors under vidlora's canonical names, taken from its submodules."""
    inner = model.model
    parts = {"decoder": {}, "vision": {}, "projector": {}}
    for k, v in inner.language_model.state_dict().items():
        parts["decoder"]["model." + k] = v
    parts["decoder"]["lm_head.weight"] = model.lm_head.weight
    for k, v in inner.vision_tower.state_dict().items():
        parts["vision"][k.removeprefix("vision_model.")] = v
    for k, v in inner.multi_modal_projector.state_dict().items():
        parts["projector"]["multi_modal_projector." + k] = v
    if getattr(inner, "image_newline", None) is not None:
        parts["projector"]["image_newline"] = inner.image_newline
    return parts


def describe_parts(parts):
    return {part: describe(tensors) for part, tensors in parts.items()}


def save_renamed(directory, parts, prefixes, config):
    """Writes one model.safetensors with each part's canonical names rewritten by `prefixes`."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    tensors = {}
    for part, named in parts.items():
        for name, t in named.items():
            tensors[prefixes[part](name)] = t.detach().clone().contiguous()
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    config.to_json_file(directory / "config.json")


def write_vlm():
    torch.manual_seed(21)
    llava = transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(
        vision_config=tiny_vision_config(), text_config=tiny_text_config(), image_token_index=39)).eval()
    parts = canonical(llava)
    legacy = {"decoder": lambda n: "language_model." + n,
              "vision": lambda n: "vision_tower.vision_model." + n,
              "projector": lambda n: n}
    save_renamed(OUT / "llava_legacy", parts, legacy, llava.config)
    current_dir = OUT / "llava_current"
    shutil.rmtree(current_dir, ignore_errors=True)
    current_dir.mkdir(parents=True)
    state = {k: v.detach().clone().contiguous() for k, v in llava.state_dict().items()}
    assert any(k.startswith("model.language_model.") for k in state), sorted(state)[:5]
    save_file(state, current_dir / "model.safetensors", metadata={"format": "pt"})
    llava.config.to_json_file(current_dir / "config.json")

    torch.manual_seed(22)
    video = transformers.LlavaNextVideoForConditionalGeneration(transformers.LlavaNextVideoConfig(
        vision_config=tiny_vision_config(), text_config=tiny_text_config(), image_token_index=39,
        video_token_index=38, image_grid_pinpoints=[[8, 8]])).eval()
    video_dir = OUT / "llava_next_video"
    shutil.rmtree(video_dir, ignore_errors=True)
    video.save_pretrained(video_dir, max_shard_size="6KB")
    (video_dir / "generation_config.json").unlink(missing_ok=True)

    torch.manual_seed(23)
    clip = transformers.CLIPModel(transformers.CLIPConfig(
        vision_config=tiny_vision_config().to_dict(), projection_dim=8,
        text_config=transformers.CLIPTextConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                                num_attention_heads=2, vocab_size=40, bos_token_id=0,
                                                eos_token_id=1, pad_token_id=1).to_dict())).eval()
    clip_dir = OUT / "clip"
    shutil.rmtree(clip_dir, ignore_errors=True)
    clip.save_pretrained(clip_dir)
    clip_vision = {k.removeprefix("vision_model."): v for k, v in clip.vision_model.state_dict().items()}

    (OUT / "vlm.json").write_text(json.dumps({
        "versions": versions(),
        "llava": describe_parts(parts),
        "llava_next_video": describe_parts(canonical(video)),
        "clip": {"vision": describe(clip_vision)},
    }))


def matrices_by_torch():
    """The tensors tests/io/test_safetensors.cpp writes from Eigen matrices (a bf16 tie, 65519 -> 65504
    in fp16, an fp16 underflow to 0 and an overflow to -inf), cast by torch."""
    m = torch.tensor([[0.1, -2.0, 65519.0], [1e-8, 3.14159, -70000.0]], dtype=torch.float32)
    return {"m.f32": m, "m.bf16": m.to(torch.bfloat16), "m.f16": m.half(),
            "v": torch.linspace(0.0, 1.0, 5, dtype=torch.float32)}


def check(paths):
    for path in paths:
        tensors = load_file(path)
        with safetensors.safe_open(path, "pt") as f:
            meta = f.metadata()
        print(f"{path}: loads in safetensors {safetensors.__version__}: metadata {meta}")
        for name, t in tensors.items():
            print(f"  {name!r}: {t.dtype} {list(t.shape)} {t.flatten()[:4].tolist()}")
        # "<x>.bf16" / "<x>.f16" beside "<x>.f32": the narrow copies must equal torch's own casts.
        for name, t in tensors.items():
            base, _, kind = name.rpartition(".")
            source = tensors.get(base + ".f32")
            if source is None or kind not in ("bf16", "f16"):
                continue
            want = source.to(torch.bfloat16) if kind == "bf16" else source.half()
            assert t.dtype == want.dtype and torch.equal(t, want), f"{name} differs from torch's cast of {base}.f32"
            print(f"  {name!r} equals torch's cast of {base + '.f32'!r}")
    return 0


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--check":
        return check(sys.argv[2:])
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "dtype_conversion.json").write_text(json.dumps(dtype_fixture(), indent=1))
    tensors = mixed_tensors()
    save_file(tensors, OUT / "mixed.safetensors", metadata={"format": "pt"})
    (OUT / "mixed.json").write_text(json.dumps({"versions": versions(), "metadata": {"format": "pt"},
                                                "tensors": describe(tensors)}, indent=1))
    save_file({"line\nbreak": torch.ones(2), "quote\"d": torch.zeros(1, 2), "ctrl\u0001": torch.ones(1),
               "\u00e9t\u00e9/\ud55c\uae00": torch.arange(3, dtype=torch.float32)}, OUT / "escaped_names.safetensors")
    save_file(matrices_by_torch(), OUT / "matrices_by_torch.safetensors", metadata={"format": "pt"})
    write_llama()
    write_vlm()
    print("wrote", OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
