#pragma once
// The two-stage Trainer with everything it composes: the model (decoder, vision encoder, tokenizers),
// video sampling and frozen-feature extraction, generation and the on-disk feature cache.
// Needs the vidlora::model and vidlora::video targets (SentencePiece and FFmpeg).

#include <vidlora/vidlora.hpp>
#include <vidlora/model.hpp>
#include <vidlora/video.hpp>
#include <vidlora/train/feature_cache.hpp>
#include <vidlora/train/generation.hpp>
#include <vidlora/train/random_vision_weights.hpp>
#include <vidlora/train/trainer.hpp>
#include <vidlora/train/video_features.hpp>
