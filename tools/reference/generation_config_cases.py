#!/usr/bin/env python3
"""generation_config.json and the logits processors, as transformers' generate() reads and builds them.

For model::read_generation_config and model::process_scores (tests/model/test_generation_config.cpp). Each case
copies one of the tiny fixture directories (tests/fixtures/model/llava_next_video_hf, llava_qwen_hf), writes a
generation_config.json into the copy (or none), loads the model from it with from_pretrained (the path that reads
generation_config.json, or builds it from config.json when there is none), and records:

- the generation config as generate() resolves it (model._prepare_generation_config: the file over transformers'
  global defaults): do_sample, temperature, top_k, top_p, min_p, repetition_penalty, no_repeat_ngram_size,
  num_beams, length_penalty, max_new_tokens, max_length, min_new_tokens, min_length and the EOS ids; cases without
  a generation_config.json edit config.json's top level and text_config first (from_model_config reads both);
- for a few (input_ids, scores) pairs, the scores after the logits processors generate() builds for that config
  (model._get_logits_processor after model._prepare_special_tokens, with the prompt's length as
  input_ids_seq_length, as generate() calls it with input_ids; min_new_tokens turned into min_length as
  _prepare_generated_length does). The scores are float32, written as their bits (hex) so that the comparison is exact;
- the names of every GenerationConfig field (generation_config_fields).

Needs torch and transformers (tools/reference/requirements.txt).
Run:  /opt/refenv/bin/python -P tools/reference/generation_config_cases.py
"""
import json
import pathlib
import shutil
import struct
import tempfile

import torch
import transformers
from transformers import LlavaNextVideoForConditionalGeneration

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODELS = ROOT / "tests/fixtures/model"
OUT = MODELS / "generation_config_cases.json"
VOCAB = 64  # the scores' width (any width: the processors do not read the model's vocabulary)

# (name, directory, generation_config.json or None)
CASES = [
    ("no file: config.json's EOS", "llava_next_video_hf", None),
    ("no file: the Qwen directory", "llava_qwen_hf", None),
    ("llava-hf style: token ids only", "llava_next_video_hf",
     {"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
      "transformers_version": "4.42.0.dev0"}),
    ("Qwen instruct style: sampling with a list of EOS ids", "llava_qwen_hf",
     {"bos_token_id": 5, "do_sample": True, "eos_token_id": [7, 5], "pad_token_id": 5, "repetition_penalty": 1.05,
      "temperature": 0.7, "top_p": 0.8, "top_k": 20, "transformers_version": "4.37.0"}),
    ("do_sample alone: transformers' top_k 50", "llava_next_video_hf", {"do_sample": True}),
    ("sampling: top_k off, top_p, temperature above 1, min_p", "llava_next_video_hf",
     {"do_sample": True, "top_k": 0, "top_p": 0.9, "temperature": 1.3, "min_p": 0.05}),
    ("sampling: top_k 3 and top_p 0.5", "llava_next_video_hf",
     {"do_sample": True, "top_k": 3, "top_p": 0.5, "eos_token_id": 2}),
    ("sampling: min_p alone", "llava_next_video_hf", {"do_sample": True, "top_k": 0, "min_p": 0.2}),
    ("greedy with sampling fields (unused)", "llava_next_video_hf",
     {"do_sample": False, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0.1}),
    ("beams: length penalty and no-repeat n-grams", "llava_next_video_hf",
     {"num_beams": 3, "length_penalty": 0.8, "no_repeat_ngram_size": 2, "early_stopping": False}),
    ("repetition penalty over the prompt too", "llava_next_video_hf",
     {"repetition_penalty": 1.3, "max_new_tokens": 100}),
    ("no-repeat n-grams across the prompt's end", "llava_next_video_hf", {"no_repeat_ngram_size": 3}),
    ("min_new_tokens", "llava_next_video_hf", {"min_new_tokens": 4, "eos_token_id": [2, 9]}),
    ("min_length counts the prompt", "llava_next_video_hf", {"min_length": 9, "eos_token_id": 2}),
    ("null fields are unset", "llava_next_video_hf",
     {"do_sample": None, "temperature": None, "top_k": None, "eos_token_id": None, "max_new_tokens": None}),
    ("max_length", "llava_next_video_hf", {"max_length": 12, "eos_token_id": 2}),
    ("encoder repetition penalty over the prompt", "llava_next_video_hf", {"encoder_repetition_penalty": 1.4}),
    ("encoder no-repeat n-grams of the prompt", "llava_next_video_hf", {"encoder_no_repeat_ngram_size": 2}),
    ("encoder and decoder penalties together", "llava_next_video_hf",
     {"encoder_repetition_penalty": 0.8, "repetition_penalty": 1.2, "encoder_no_repeat_ngram_size": 1,
      "no_repeat_ngram_size": 2, "do_sample": True, "top_k": 10}),
    ("keys GenerationConfig does not have, and inert values", "llava_next_video_hf",
     {"chat_format": "chatml", "max_window_size": 6144, "typical_p": 1.5, "epsilon_cutoff": 0.0, "forced_bos_token_id": 3,
      "diversity_penalty": 0.5, "early_stopping": True, "suppress_tokens": []}),
]
# (name, directory, edits to config.json: top-level fields and text_config fields) for directories without a
# generation_config.json: GenerationConfig.from_model_config takes the top level's generation fields, then
# text_config's where still unset.
CONFIG_CASES = [
    ("no file: config.json's generation fields", "llava_next_video_hf",
     {"repetition_penalty": 1.7, "max_length": 30}, {"no_repeat_ngram_size": 2, "temperature": 0.5,
                                                     "repetition_penalty": 1.1, "eos_token_id": [2, 5]}),
    ("no file: text_config's EOS list under a top-level one", "llava_qwen_hf",
     {"eos_token_id": 7, "do_sample": True}, {"eos_token_id": [706, 5], "top_p": 0.9}),
]

# (prompt ids, generated ids): the processors see prompt + generated as input_ids, as generate() gives them.
INPUTS = [
    ([1, 11, 4, 4, 4, 12, 13], []),
    ([1, 11, 4, 4, 4, 12, 13], [12, 13, 20]),
    ([1, 11, 4, 4, 12, 13], [21, 22, 21, 22, 12, 13, 21]),
    ([1, 11, 4, 12, 4, 30], [4, 11]),  # the sequence ends with ids the prompt's n-grams continue
]


def f32_hex(values):
    return [struct.pack(">f", v).hex() for v in values]


def resolved(gc):
    eos = gc.eos_token_id
    return {
        "do_sample": bool(gc.do_sample),
        "temperature": gc.temperature,
        "top_k": gc.top_k,
        "top_p": gc.top_p,
        "min_p": gc.min_p,
        "repetition_penalty": gc.repetition_penalty,
        "no_repeat_ngram_size": gc.no_repeat_ngram_size,
        "num_beams": gc.num_beams,
        "length_penalty": gc.length_penalty,
        "encoder_repetition_penalty": gc.encoder_repetition_penalty,
        "encoder_no_repeat_ngram_size": gc.encoder_no_repeat_ngram_size,
        "max_new_tokens": gc.max_new_tokens,
        "max_length": gc.max_length,
        "min_new_tokens": gc.min_new_tokens,
        "min_length": gc.min_length,
        "eos_token_ids": [] if eos is None else ([eos] if isinstance(eos, int) else list(eos)),
    }


def main():
    generator = torch.Generator().manual_seed(20261207)
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        all_cases = [(n, d, c, None) for n, d, c in CASES] + [(n, d, None, (t, x)) for n, d, t, x in CONFIG_CASES]
        for i, (name, directory, config, edits) in enumerate(all_cases):
            d = pathlib.Path(tmp) / f"case{i}"
            shutil.copytree(MODELS / directory, d)
            if config is not None:
                (d / "generation_config.json").write_text(json.dumps(config, indent=2))
            if edits is not None:
                model_config = json.loads((d / "config.json").read_text())
                model_config.update(edits[0])
                model_config["text_config"].update(edits[1])
                (d / "config.json").write_text(json.dumps(model_config, indent=2))
            model = LlavaNextVideoForConditionalGeneration.from_pretrained(d)
            gc, _ = model._prepare_generation_config(None)
            model._prepare_special_tokens(gc, True, device="cpu")
            settings = resolved(gc)
            runs = []
            for prompt, generated in INPUTS:
                # as _prepare_generated_length: min_new_tokens becomes a min_length over the prompt's length
                if gc.min_new_tokens is not None:
                    gc.min_length = gc.min_new_tokens + len(prompt)
                else:
                    gc.min_length = settings["min_length"]
                processors = model._get_logits_processor(
                    generation_config=gc,
                    input_ids_seq_length=len(prompt),
                    encoder_input_ids=torch.tensor([prompt]),
                    prefix_allowed_tokens_fn=None,
                    logits_processor=None,
                    device="cpu",
                    model_kwargs={"attention_mask": torch.ones(1, len(prompt), dtype=torch.long)},
                )
                scores = (torch.randn(1, VOCAB, generator=generator) * 3.0).to(torch.float32)
                input_ids = torch.tensor([prompt + generated])
                out = processors(input_ids, scores.clone())
                runs.append({
                    "prompt_ids": prompt,
                    "generated_ids": generated,
                    "scores": f32_hex(scores[0].tolist()),
                    "processed": f32_hex(out[0].tolist()),
                    "processors": [type(p).__name__ for p in processors],
                })
            cases.append({
                "name": name,
                "directory": directory,
                "generation_config": config,
                "config_edits": None if edits is None else {"top_level": edits[0], "text_config": edits[1]},
                "resolved": settings,
                "runs": runs,
            })
    OUT.write_text(json.dumps({
        "produced_by": "tools/reference/generation_config_cases.py",
        "versions": {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__},
        # every field of transformers' GenerationConfig: vidlora must sort each (used, not used, refused)
        "generation_config_fields": sorted(transformers.GenerationConfig().__dict__),
        "cases": cases,
    }, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {OUT}: {len(cases)} cases")


if __name__ == "__main__":
    main()
