#pragma once
// Frozen vision features of one video clip: Sampler<Policy> frames → CLIP preprocessing →
// ClipVision → optional 2×2 spatial pooling, as [frames · tokens per frame, vision hidden]; and the
// tokens of the clip's largest change (video_change_features), which the demo appends to them.
// Needs the vidlora::video (FFmpeg) target; <vidlora/vidlora.hpp> does not include it, <vidlora/train.hpp> does.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/model/clip_vision.hpp>
#include <vidlora/model/config.hpp>
#include <vidlora/model/frame_encoder.hpp>
#include <vidlora/model/projector.hpp>
#include <vidlora/model/tensor_source.hpp>
#include <vidlora/train/feature_cache.hpp>
#include <vidlora/video/clip_preprocess.hpp>
#include <vidlora/video/frame_difference.hpp>
#include <vidlora/video/sampler.hpp>

namespace vidlora::train {

// Encoder: model::ClipVision, model::FrameEncoder (model/frame_encoder.hpp: any backend's tower), or anything with
// config() and features(pixels, frames). `report`, when given, receives the sampling's report (short_video: the clip
// has fewer frames than sampling.num_frames and all of them were encoded).
template <class Policy, class Encoder = model::ClipVision>
Matrix video_clip_features(const std::filesystem::path& video, const video::SamplerOptions& sampling,
                           const Encoder& encoder, int pool_stride = 1, video::SamplingReport* report = nullptr) {
  const int size = encoder.config().image_size;
  video::SamplerOptions so = sampling;
  so.width = size;
  so.height = size;
  auto sampled = video::Sampler<Policy>(so).sample_with_report(video);
  const auto& frames = sampled.frames;
  if (report) *report = std::move(sampled.report);
  video::ClipPreprocessOptions pre;
  pre.shortest_edge = size;
  pre.crop_height = size;
  pre.crop_width = size;
  const auto pixels = video::clip_preprocess(frames, pre);
  Matrix f = encoder.features(pixels.data, pixels.frames);
  if (pool_stride > 1) f = model::spatial_average_pool(f, encoder.config().grid(), pool_stride);
  return f;
}

// The clip's largest change as tokens: the two consecutive frames whose luma differs most
// (Sampler<PeakChange>, 2 frames, at the encoder's input size), their absolute difference as one image,
// CLIP preprocessing, ClipVision, pooled by pool_stride: [(grid / pool_stride)², vision hidden]. Evenly
// spaced frames step over a short event (the demo's 0.6 s shake falls between 4 uniform frames of a 2-4 s
// clip); this image shows it whatever the frames around it: black where nothing changed.
// `report`, when given, receives the sampling's report (its status covers every frame of the clip, decoded to
// find the change: concealed damage anywhere in it is counted there).
template <class Encoder = model::ClipVision>
Matrix video_change_features(const std::filesystem::path& video, const video::SamplerOptions& sampling,
                             const Encoder& encoder, int pool_stride = 1, video::SamplingReport* report = nullptr) {
  const int size = encoder.config().image_size;
  video::SamplerOptions so = sampling;
  so.width = size;
  so.height = size;
  so.num_frames = 2;
  auto sampled = video::Sampler<video::PeakChange>(so).sample_with_report(video);
  const auto& pair = sampled.frames;
  if (report) *report = std::move(sampled.report);
  require(pair.size() == 2, "video file {}: one frame only, no change to show", video.string());
  video::ClipPreprocessOptions pre;
  pre.shortest_edge = size;
  pre.crop_height = size;
  pre.crop_width = size;
  const auto pixels =
      video::clip_preprocess(std::vector<video::RgbImage>{video::absolute_difference(pair[0].rgb, pair[1].rgb)}, pre);
  Matrix f = encoder.features(pixels.data, pixels.frames);
  if (pool_stride > 1) f = model::spatial_average_pool(f, encoder.config().grid(), pool_stride);
  return f;
}

}  // namespace vidlora::train
