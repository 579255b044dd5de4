#pragma once
// vidlora train: the two-stage Trainer and what it composes (its configuration, trainable tensors, checkpoints,
// evaluation and run outputs; data sets in the AI-Hub layout or JSONL manifests, the frozen-feature cache, video
// features, training logs and curves, progress lines, early stopping). Needs the vidlora::model and vidlora::video
// targets (SentencePiece and FFmpeg); the parts without them (dataset, early_stopping, progress, training_log) come
// with <vidlora/vidlora.hpp>.

#include <vidlora/model.hpp>
#include <vidlora/video.hpp>
#include <vidlora/train/dataset.hpp>
#include <vidlora/train/decoder_step.hpp>
#include <vidlora/train/device_optimizer.hpp>
#include <vidlora/train/early_stopping.hpp>
#include <vidlora/train/progress.hpp>
#include <vidlora/train/training_log.hpp>
#include <vidlora/train/feature_cache.hpp>
#include <vidlora/train/loss_scaling.hpp>
#include <vidlora/train/random_vision_weights.hpp>
#include <vidlora/train/checkpoint.hpp>
#include <vidlora/train/evaluation.hpp>
#include <vidlora/train/projector_tensors.hpp>
#include <vidlora/train/run_outputs.hpp>
#include <vidlora/train/text_codec.hpp>
#include <vidlora/train/train_result.hpp>
#include <vidlora/train/trainable_tensors.hpp>
#include <vidlora/train/trainer_config.hpp>
#include <vidlora/train/trainer.hpp>
#include <vidlora/train/video_features.hpp>
