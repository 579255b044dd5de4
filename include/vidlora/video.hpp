#pragma once
// vidlora video (target vidlora::video, needs FFmpeg): RAII decoding with libavformat/libavcodec,
// Sampler<Uniform / SceneChange / Motion / PeakChange>, detect_scene_changes, CLIP preprocessing and the
// per-frame visual token budgets. Not included by <vidlora/vidlora.hpp>.

#include <vidlora/core.hpp>
#include <vidlora/video/ffmpeg.hpp>
#include <vidlora/video/frame.hpp>
#include <vidlora/video/frame_difference.hpp>
#include <vidlora/video/decoder.hpp>
#include <vidlora/video/options.hpp>
#include <vidlora/video/hsv_histogram.hpp>
#include <vidlora/video/analysis.hpp>
#include <vidlora/video/policies.hpp>
#include <vidlora/video/sampling_policy.hpp>
#include <vidlora/video/policy_table.hpp>
#include <vidlora/video/decode_pass.hpp>
#include <vidlora/video/sampler.hpp>
#include <vidlora/video/frame_sampler.hpp>
#include <vidlora/video/scene_change.hpp>
#include <vidlora/video/clip_preprocess.hpp>
#include <vidlora/video/tokens.hpp>
