#!/usr/bin/env python3
"""The tiny Hugging Face LLaVA-NeXT-Video fixture with its decoder's linear weights as transformers +
bitsandbytes hold them after a 4-bit load, for `caption --base nf4` (tests/programs/hf_model.sh).

transformers loads tests/fixtures/model/llava_next_video_hf with
BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True) on the CPU
(bitsandbytes' torch backend; Linear4bit's blocksize 64); each bnb.nn.Linear4bit of the language model
(q/k/v/o/gate/up/down_proj of every layer) is dequantized with bitsandbytes.functional.dequantize_4bit on its
own quant state: the float32 weight those codes and absmax stand for (on a GPU, what its forward multiplies by;
bitsandbytes 0.50.2's CPU path dequantizes this fixture's shapes wrongly, see dequantized()). Those replace the fixture's weights; every
other tensor is copied unchanged (transformers also quantizes the vision tower and the projector, which
vidlora's NF4 base leaves in full precision, as the GPU presets train: they are not taken).

Writes tests/fixtures/model/llava_next_video_hf_nf4/model.safetensors and reference.json (the keys replaced,
the largest change, versions). The test copies the fixture's other files beside it: captions by
`caption --base fp32` over this directory are the ones `caption --base nf4` gives over the original.

  /work/scratch/refenv/bin/python -P tools/reference/nf4_decoder_fixture.py
"""
import copy
import json
import pathlib

import bitsandbytes
import bitsandbytes.functional as F
import safetensors
import safetensors.torch
import torch
import transformers
from transformers import BitsAndBytesConfig, LlavaNextVideoForConditionalGeneration

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCE = ROOT / "tests" / "fixtures" / "model" / "llava_next_video_hf"
OUT = ROOT / "tests" / "fixtures" / "model" / "llava_next_video_hf_nf4"
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def dequantized(packed, state):
    """dequantize_4bit of a Linear4bit's weight, viewed as rows of one block each.

    bitsandbytes 0.50.2's CPU dequantize_4bit is wrong for a weight whose rows are shorter than a block (all 14
    of this fixture's, [8, 16] to [32, 16]: a block's values come out scaled by another block's absmax; rows of
    64 or more, every real model's, come out right). Quantization runs over the flattened weight, so the same codes
    and absmax dequantized with the shape [n / 64, 64] give the values the weight stands for.
    """
    n = state.shape.numel()
    assert n % state.blocksize == 0, state.shape
    rows = copy.copy(state)
    rows.shape = torch.Size([n // state.blocksize, state.blocksize])
    wrong = F.dequantize_4bit(packed, state).flatten()
    right = F.dequantize_4bit(packed, rows).to(torch.float32).flatten()
    # the same codes as the table lookup by hand: each nibble's NF4 value times its block's (double-dequantized) absmax
    nibbles = torch.stack([packed.flatten() >> 4, packed.flatten() & 15], 1).flatten()[:n].long()
    absmax = F.dequantize_blockwise(state.absmax, state.state2) + state.offset
    by_hand = state.code[nibbles] * absmax.repeat_interleave(state.blocksize)[:n]
    assert torch.equal(right, by_hand), "dequantize_4bit over rows of one block disagrees with the table"
    DEQUANTIZE_4BIT_WRONG.append(not torch.equal(wrong, right))
    return right


DEQUANTIZE_4BIT_WRONG = []


def main():
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.float32)
    model = LlavaNextVideoForConditionalGeneration.from_pretrained(SOURCE, quantization_config=config,
                                                                   dtype=torch.float32, device_map="cpu")
    with safetensors.safe_open(SOURCE / "model.safetensors", "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = f.metadata()

    replaced = {}
    for name, module in model.named_modules():
        if not isinstance(module, bitsandbytes.nn.Linear4bit) or "language_model" not in name:
            continue
        state = module.weight.quant_state
        assert state.quant_type == "nf4" and state.blocksize == 64 and state.nested, (name, state.as_dict())
        assert name.rsplit(".", 1)[-1] in PROJECTIONS, name
        # model.language_model.layers.N.<self_attn|mlp>.<proj> -> the checkpoint's language_model.model.layers...
        key = "language_model.model." + name.split("model.language_model.", 1)[1] + ".weight"
        assert key in tensors, key
        dense = dequantized(module.weight.data, state).reshape(tensors[key].shape)
        change = (dense - tensors[key]).abs().max().item()
        assert 0 < change, key  # quantization changes every weight matrix of this fixture
        tensors[key] = dense.contiguous()
        replaced[key] = change
    layers = model.config.text_config.num_hidden_layers
    assert len(replaced) == 7 * layers, sorted(replaced)

    OUT.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(tensors, OUT / "model.safetensors", metadata=metadata)
    reference = {
        "source": str(SOURCE.relative_to(ROOT)),
        "quantization_config": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
                                "blocksize": 64},
        "replaced_max_abs_change": dict(sorted(replaced.items())),
        "cpu_dequantize_4bit_wrong_for": sum(DEQUANTIZE_4BIT_WRONG),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "bitsandbytes": bitsandbytes.__version__, "safetensors": safetensors.__version__},
    }
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print(f"{OUT}: {len(replaced)} weights replaced, the largest change {max(replaced.values()):.3g}")


if __name__ == "__main__":
    main()
