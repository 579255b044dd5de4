#pragma once
// Everything vidlora offers without FFmpeg, SentencePiece or CUDA.
// Video decoding and samplers: <vidlora/video.hpp> (target vidlora::video).

#include <vidlora/core.hpp>
#include <vidlora/io.hpp>
#include <vidlora/quant.hpp>
#include <vidlora/lora.hpp>
#include <vidlora/schedule.hpp>
#include <vidlora/optim.hpp>
#include <vidlora/loss.hpp>
#include <vidlora/presets.hpp>
#include <vidlora/eval.hpp>
#include <vidlora/train.hpp>
#include <vidlora/comm.hpp>
