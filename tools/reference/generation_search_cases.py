#!/usr/bin/env python3
"""Greedy decoding and beam search as transformers' generate() runs them, on the tiny LLaVA-NeXT-Video fixture.

For model::generate (tests/model/test_generation_config.cpp). The model is tests/fixtures/model/llava_next_video_hf
loaded by LlavaNextVideoForConditionalGeneration; each case calls generate() with text-only input_ids (the decoder
alone, as vidlora's Decoder sees the embedded prompt) and the settings given as generate() keyword arguments, with
return_dict_in_generate and output_scores, and records the new tokens (the EOS included when it ended the sequence)
and, for beam search, sequences_scores. The EOS ids are chosen among the tokens the model generates greedily, so
that beams end on them: finished hypotheses, their length penalty and the candidates kept per EOS id are exercised.

Needs torch and transformers (tools/reference/requirements.txt).
Run:  /opt/refenv/bin/python -P tools/reference/generation_search_cases.py
"""
import json
import pathlib

import torch
import transformers
from transformers import LlavaNextVideoForConditionalGeneration

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT / "tests/fixtures/model/llava_next_video_hf"
OUT = ROOT / "tests/fixtures/model/generation_search_cases.json"
PROMPTS = [[1, 11, 12, 13, 14, 15], [1, 700, 42, 42, 9, 310, 77]]
MAX_NEW_TOKENS = 8


def main():
    model = LlavaNextVideoForConditionalGeneration.from_pretrained(MODEL).eval()
    cases = []
    for prompt in PROMPTS:
        ids = torch.tensor([prompt])
        greedy = model.generate(input_ids=ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, eos_token_id=None,
                                pad_token_id=0)[0, len(prompt):].tolist()
        with torch.no_grad():
            first = model(input_ids=ids).logits[0, -1].topk(5).indices.tolist()  # the first step's best tokens
        # settings: generate() keyword arguments; the EOS ids come from the greedy tokens, or are the first step's best
        # tokens (more EOS candidates than beams among the best: transformers keeps (1 + EOS ids) · num_beams)
        settings = [
            {"num_beams": 2, "length_penalty": 1.0, "eos_token_id": [greedy[2]]},
            {"num_beams": 3, "length_penalty": 0.5, "eos_token_id": [greedy[1]]},
            {"num_beams": 2, "length_penalty": 2.0, "eos_token_id": [greedy[1], greedy[3]]},
            {"num_beams": 3, "length_penalty": 1.0, "eos_token_id": [greedy[0], greedy[2], greedy[4]]},
            {"num_beams": 4, "length_penalty": 1.0, "eos_token_id": [2]},
            {"num_beams": 2, "length_penalty": 1.0, "eos_token_id": [greedy[3]], "no_repeat_ngram_size": 2,
             "repetition_penalty": 1.3},
            {"num_beams": 3, "length_penalty": 0.0, "eos_token_id": [greedy[2]], "min_new_tokens": 4},
            {"num_beams": 2, "length_penalty": 1.0, "eos_token_id": first[:3]},
            {"num_beams": 3, "length_penalty": 1.0, "eos_token_id": first[1:5]},
            {"num_beams": 1, "eos_token_id": [greedy[0]], "min_new_tokens": 3},
            {"num_beams": 1, "eos_token_id": [2], "max_length": len(prompt) + 3},
            {"num_beams": 2, "eos_token_id": [2], "max_length": len(prompt) + 5},
            {"num_beams": 1, "eos_token_id": [2], "repetition_penalty": 1.8},
            {"num_beams": 1, "eos_token_id": [2], "no_repeat_ngram_size": 1},
        ]
        for s in settings:
            length = {} if "max_length" in s else {"max_new_tokens": MAX_NEW_TOKENS}  # max_new_tokens would win
            out = model.generate(input_ids=ids, do_sample=False, pad_token_id=0, return_dict_in_generate=True,
                                 output_scores=True, **length, **s)
            tokens = out.sequences[0, len(prompt):].tolist()
            eos = set(s["eos_token_id"])
            # generate() pads after an EOS; keep what was generated up to and including the first EOS
            for i, t in enumerate(tokens):
                if t in eos:
                    tokens = tokens[: i + 1]
                    break
            case = {"prompt_ids": prompt, "max_new_tokens": length.get("max_new_tokens"), "settings": s,
                    "tokens": tokens}
            if s["num_beams"] > 1:
                case["sequences_score"] = out.sequences_scores[0].item()
            cases.append(case)
    OUT.write_text(json.dumps({
        "produced_by": "tools/reference/generation_search_cases.py",
        "versions": {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__},
        "model": "tests/fixtures/model/llava_next_video_hf",
        "cases": cases,
    }, indent=1) + "\n")
    print(f"wrote {OUT}: {len(cases)} cases")


if __name__ == "__main__":
    main()
