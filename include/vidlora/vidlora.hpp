#pragma once
// Everything vidlora offers without FFmpeg or CUDA (video: <vidlora/video.hpp>, target vidlora::video).

#include <vidlora/core.hpp>
#include <vidlora/presets.hpp>
#include <vidlora/train.hpp>
