#pragma once
// vidlora train: data sets (AI-Hub layout, JSONL manifests), training logs and curves, progress lines,
// early stopping. (The two-stage Trainer arrives with the model module.)

#include <vidlora/train/dataset.hpp>
#include <vidlora/train/early_stopping.hpp>
#include <vidlora/train/progress.hpp>
#include <vidlora/train/training_log.hpp>
