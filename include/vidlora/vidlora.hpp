#pragma once
// Everything vidlora offers without FFmpeg, SentencePiece or CUDA.
// Video decoding and samplers: <vidlora/video.hpp> (target vidlora::video); the model: <vidlora/model.hpp>
// (vidlora::model); the Trainer and everything it composes: <vidlora/train.hpp> (both targets).

#include <vidlora/core.hpp>
#include <vidlora/io.hpp>
#include <vidlora/quant.hpp>
#include <vidlora/lora.hpp>
#include <vidlora/schedule.hpp>
#include <vidlora/optim.hpp>
#include <vidlora/loss.hpp>
#include <vidlora/presets.hpp>
#include <vidlora/eval.hpp>
#include <vidlora/train/dataset.hpp>
#include <vidlora/train/early_stopping.hpp>
#include <vidlora/train/progress.hpp>
#include <vidlora/train/training_log.hpp>
#include <vidlora/comm.hpp>
