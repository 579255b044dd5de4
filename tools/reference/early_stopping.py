"""Reference values for vidlora::EarlyStopping from transformers' EarlyStoppingCallback.

Drives the real callback's on_evaluate with a TrainerState and applies Trainer's best-metric update
(`_determine_best_metric`: strict improvement, no threshold) after it, in the order Trainer runs them.
Writes tests/fixtures/train/early_stopping.json.
"""
import json
import math
import pathlib
import types

import transformers
from transformers import TrainerControl, TrainerState
from transformers.trainer_callback import EarlyStoppingCallback

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests/fixtures/train/early_stopping.json"


def run(scores, patience, threshold, greater_is_better):
    cb = EarlyStoppingCallback(early_stopping_patience=patience, early_stopping_threshold=threshold)
    args = types.SimpleNamespace(metric_for_best_model="metric", greater_is_better=greater_is_better,
                                 load_best_model_at_end=True, eval_strategy="steps", save_strategy="steps")
    state, control = TrainerState(), TrainerControl()
    rows = []
    for i, s in enumerate(scores):
        state.global_step = 100 * (i + 1)
        cb.on_evaluate(args, state, control, metrics={"eval_metric": s})
        # Trainer._determine_best_metric, which runs after the callbacks' on_evaluate
        best = state.best_metric
        if best is None:
            best = -math.inf if greater_is_better else math.inf
        if (s > best) if greater_is_better else (s < best):
            state.best_metric = s
            state.best_global_step = state.global_step
        rows.append({"counter": cb.early_stopping_patience_counter, "stop": bool(control.should_training_stop),
                     "best": state.best_metric, "best_step": state.best_global_step})
        if control.should_training_stop:
            break
    return {"scores": scores, "patience": patience, "threshold": threshold,
            "mode": "max" if greater_is_better else "min", "evals": rows}


cases = [
    run([2.0, 1.5, 1.4, 1.45, 1.39, 1.6, 1.7, 1.8], 3, 0.0, False),
    run([2.0, 1.5, 1.45, 1.44, 1.43, 1.42, 1.0], 3, 0.05, False),   # small gains move best, not the counter
    run([0.1, 0.3, 0.3, 0.29, 0.5, 0.49, 0.48, 0.47, 0.46], 4, 0.0, True),
    run([0.1, 0.12, 0.13, 0.2, 0.21, 0.22], 2, 0.05, True),
    run([1.0, 1.0, 1.0], 2, 0.0, False),                               # ties are not improvements
]
OUT.parent.mkdir(parents=True, exist_ok=True)
OUT.write_text(json.dumps({"generated_by": f"transformers {transformers.__version__}", "cases": cases}, indent=1))
print("wrote", OUT)
