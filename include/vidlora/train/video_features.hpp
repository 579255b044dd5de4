#pragma once
// Frozen vision features of one video clip: Sampler<Policy> frames → CLIP preprocessing →
// ClipVision → optional 2×2 spatial pooling, as [frames · tokens per frame, vision hidden].
// Needs the vidlora::video (FFmpeg) target; <vidlora/vidlora.hpp> does not include it, <vidlora/train.hpp> does.

#include <cstdint>
#include <filesystem>
#include <string>

#include <fmt/format.h>

#include <vidlora/core/matrix.hpp>
#include <vidlora/model/clip_vision.hpp>
#include <vidlora/model/config.hpp>
#include <vidlora/model/projector.hpp>
#include <vidlora/model/tensor_source.hpp>
#include <vidlora/train/feature_cache.hpp>
#include <vidlora/video/clip_preprocess.hpp>
#include <vidlora/video/sampler.hpp>

namespace vidlora::train {

template <class Policy>
Matrix video_clip_features(const std::filesystem::path& video, const video::SamplerOptions& sampling,
                           const model::ClipVision& encoder, int pool_stride = 1) {
  const int size = encoder.config().image_size;
  video::SamplerOptions so = sampling;
  so.width = size;
  so.height = size;
  const auto frames = video::Sampler<Policy>(so).sample(video);
  video::ClipPreprocessOptions pre;
  pre.shortest_edge = size;
  pre.crop_height = size;
  pre.crop_width = size;
  const auto pixels = video::clip_preprocess(frames, pre);
  Matrix f = encoder.features(pixels.data, pixels.frames);
  if (pool_stride > 1) f = model::spatial_average_pool(f, encoder.config().grid(), pool_stride);
  return f;
}

}  // namespace vidlora::train
