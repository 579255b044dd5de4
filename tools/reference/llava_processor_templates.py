#!/usr/bin/env python3
"""Chat templates as model::LlavaProcessor runs them (tests/model/test_llava_processor.cpp).

For the two fixture directories of llava_processor_cases.py (tests/fixtures/model/llava_next_video_hf, LLaMA +
SentencePiece; llava_qwen_hf, Qwen2 + byte-level BPE), renders several chat templates the way
processor.apply_chat_template does (transformers' render_jinja_template with the tokenizer's special_tokens_map):
one user turn holding the video and then the question, with add_generation_prompt; and the same turn followed by
the assistant's answer, without it. Writes tests/fixtures/model/llava_processor_templates.json: for each case the
directory, the edits made to a copy of its tokenizer_config.json, the template, the tokenizer's special_tokens_map
(the template's variables), the prompt, the conversation with the answer, whether the prompt begins with the BOS token's
text, and the prompt's ids as processor.apply_chat_template(tokenize=True) tokenises it (no special tokens added to a
prompt that begins with the BOS text).

Needs only transformers and jinja2 (no torch): python3 -m venv /opt/jinjaenv && /opt/jinjaenv/bin/pip install transformers==5.24.0 jinja2==3.1.6
Run:  /opt/jinjaenv/bin/python -P tools/reference/llava_processor_templates.py
"""
import json
import pathlib
import shutil
import tempfile

import jinja2
import transformers
from transformers import AutoTokenizer
from transformers.utils.chat_template_utils import render_jinja_template

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODELS = ROOT / "tests/fixtures/model"
QUESTION = "이 영상을 자세히 설명하세요. Describe it."
ANSWER = "a red circle moves left"

LLAMA_TEMPLATE = (MODELS / "llava_next_video_hf/chat_template.jinja").read_text()
QWEN_TEMPLATE = (MODELS / "llava_qwen_hf/chat_template.jinja").read_text()

# ChatML with the role and a space before the placeholders, then "\n" and the text (as transformers' LLaVA-OneVision
# processor tests write it): its conversation with an answer does not begin with its generation prompt.
ROLE_SPACE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>' }}{% endfor %}"
    "{# Render all text next #}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ '\\n' + content['text'] }}{% endfor %}{{'<|im_end|>\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# The text before the video, a system line, the BOS token's text first, whitespace control over several lines.
TEXT_FIRST = (
    "{%- for message in messages -%}\n"
    "  {{- message['role'] | upper }}: \n"
    "  {%- for c in message['content'] if c['type'] == 'text' %}{{ c['text'] | trim }}{% endfor %}\n"
    "  {%- for c in message['content'] if c['type'] == 'video' %} <video>{% endfor %}\n"
    "  {{- '\\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt %}ASSISTANT:{% endif -%}\n"
)
# Variables from tokenizer_config.json beyond the standard seven: another "*_token" field and an
# "extra_special_tokens" object (transformers' special_tokens_map holds them all).
NAMED_TOKENS = {"boi_token": "<image>", "extra_special_tokens": {"video_token": "<video>"}}
TOKEN_VARIABLES = (
    "{{ boi_token }}{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}"
    "{% if c['type'] == 'video' %}{{ video_token }}{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{{ eos_token if m['role'] == 'assistant' }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
)
CASES = [
    ("llava_next_video_hf", "llava_hf", LLAMA_TEMPLATE),
    ("llava_next_video_hf", "llava_hf_system_prefix", "{{ 'A chat between two. ' }}" + LLAMA_TEMPLATE),
    ("llava_next_video_hf", "llava_hf_bos_first", "{{ bos_token }}" + LLAMA_TEMPLATE),
    ("llava_next_video_hf", "text_first", TEXT_FIRST),
    ("llava_qwen_hf", "chatml", QWEN_TEMPLATE),
    ("llava_qwen_hf", "chatml_own_system", QWEN_TEMPLATE.replace("You are a helpful assistant.", "Answer in Korean.")),
    ("llava_qwen_hf", "chatml_no_system", QWEN_TEMPLATE[QWEN_TEMPLATE.index("{% endif %}") + len("{% endif %}"):]),
    ("llava_qwen_hf", "chatml_role_space", ROLE_SPACE),
    ("llava_next_video_hf", "token_variables", TOKEN_VARIABLES, NAMED_TOKENS),
    ("llava_qwen_hf", "token_variables", TOKEN_VARIABLES, NAMED_TOKENS),
]


def conversation(answer):
    turns = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    if answer is not None:
        turns.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return turns


def render(template, tokenizer, answer):
    rendered, _ = render_jinja_template(conversations=[conversation(answer)], chat_template=template,
                                        add_generation_prompt=answer is None, **tokenizer.special_tokens_map)
    return rendered[0]


def main():
    cases = []
    for directory, name, template, *edits in CASES:
        config_edits = edits[0] if edits else {}
        with tempfile.TemporaryDirectory() as tmp:
            copy = pathlib.Path(tmp) / directory
            shutil.copytree(MODELS / directory, copy, ignore=shutil.ignore_patterns("*.safetensors"))
            config = json.loads((copy / "tokenizer_config.json").read_text())
            config.update(config_edits)
            (copy / "tokenizer_config.json").write_text(json.dumps(config))
            tokenizer = AutoTokenizer.from_pretrained(copy)
            prompt = render(template, tokenizer, None)
            bos = tokenizer.bos_token
            starts_with_bos = bool(bos) and prompt.startswith(bos)
            # processor.apply_chat_template(tokenize=True) tokenises the prompt so (before expanding the video token)
            prompt_ids = tokenizer(prompt, add_special_tokens=not starts_with_bos)["input_ids"]
        cases.append({"name": name, "directory": directory, "tokenizer_config": config_edits, "template": template,
                      "special_tokens_map": tokenizer.special_tokens_map, "prompt": prompt,
                      "conversation": render(template, tokenizer, ANSWER),
                      "prompt_starts_with_bos": starts_with_bos, "prompt_ids": prompt_ids})
    out = {"versions": {"transformers": transformers.__version__, "jinja2": jinja2.__version__},
           "question": QUESTION, "answer": ANSWER, "cases": cases}
    path = MODELS / "llava_processor_templates.json"
    path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {path} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
