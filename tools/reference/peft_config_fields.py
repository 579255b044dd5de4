#!/usr/bin/env python3
"""The fields of PEFT's LoraConfig, for the unknown-field rule of lora::parse_adapter_config.

Writes tests/fixtures/lora/peft_lora_config_fields.json:
  fields            every dataclass field of LoraConfig (the PeftConfig base's included), in declaration order
  written           the fields save_pretrained writes to adapter_config.json (runtime_config is not written)
  off_values        each field's default as written, for the rule "an unknown field is refused unless null, false
                    or empty": every feature flag and sub-config of this release is off at one of those values
  unknown_field     what PeftConfig.from_pretrained does with a field it does not know: the warning it gives and
                    whether the field reaches the loaded config

Run:  /opt/refenv/bin/python tools/reference/peft_config_fields.py
"""
import dataclasses
import json
import pathlib
import sys
import tempfile
import warnings

sys.path = [p for p in sys.path if pathlib.Path(p or ".").resolve() != pathlib.Path(__file__).resolve().parent]

import peft  # noqa: E402
from peft import LoraConfig, PeftConfig  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "lora" / "peft_lora_config_fields.json"


def main():
    fields = [f.name for f in dataclasses.fields(LoraConfig)]
    with tempfile.TemporaryDirectory() as tmp:
        LoraConfig(r=4, target_modules=["q_proj"]).save_pretrained(tmp)
        path = pathlib.Path(tmp) / "adapter_config.json"
        written = json.loads(path.read_text())
        edited = dict(written, vidlora_unknown_field=True)
        path.write_text(json.dumps(edited))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loaded = PeftConfig.from_pretrained(tmp)
    feature_flags = ["use_dora", "lora_bias", "use_qalora", "use_bdlora", "fan_in_fan_out", "use_rslora",
                     "trainable_token_indices", "target_parameters", "layer_replication", "alora_invocation_tokens",
                     "arrow_config", "velora_config", "monteclora_config", "kasa_config", "rank_pattern",
                     "alpha_pattern", "megatron_config", "loftq_config", "eva_config", "corda_config",
                     "lora_ga_config", "ensure_weight_tying", "modules_to_save", "exclude_modules"]
    off = {k: written[k] for k in feature_flags}
    for k, v in off.items():  # the rule the C++ side relies on
        assert v is None or v is False or v == {} or v == [], (k, v)
    fixture = {
        "versions": {"peft": peft.__version__},
        "fields": fields,
        "written": sorted(written),
        "off_values": off,
        "unknown_field": {"warnings": [str(w.message) for w in caught],
                          "kept": hasattr(loaded, "vidlora_unknown_field")},
    }
    OUT.write_text(json.dumps(fixture, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {OUT} ({len(fields)} fields)")


if __name__ == "__main__":
    main()
