// The video half of the programs' Hugging Face model path (hf_model.hpp): FFmpeg sampling at the video's own
// size, then the checkpoint's processor preprocessing and its CLIP tower (+ LLaVA-NeXT-Video's pooling).
#include <fmt/format.h>

#include <vidlora/model/clip_vision.hpp>
#include <vidlora/model/frame_encoder.hpp>
#include <vidlora/model/projector.hpp>
#include <vidlora/train/feature_cache.hpp>
#include <vidlora/video/clip_preprocess.hpp>
#include <vidlora/video/policy_table.hpp>
#include <vidlora/video/sampler.hpp>

#include "sampling_notes.hpp"

#include <filesystem>
#include <string>

namespace demo {

vidlora::train::NotedFeatures hf_clip_features(const std::filesystem::path& video, const std::string& sampler,
                                               int frames, const vidlora::video::ClipPreprocessOptions& preprocessing,
                                               const vidlora::model::FrameEncoder& encoder, int pool_stride) {
  vidlora::video::SamplerOptions so;
  so.num_frames = frames;
  so.width = 0;  // the processor resizes from the decoded size, as transformers does
  so.height = 0;
  so.threads = 1;
  so.scene.threads = 1;
  so.scene.min_scene_len = 3;
  return vidlora::video::with_sampling_policy(sampler, [&](auto policy) {
    const auto sampling = vidlora::video::Sampler<decltype(policy)>(so).sample_with_report(video);
    const auto& sampled = sampling.frames;
    const auto pixels = vidlora::video::clip_preprocess(sampled, preprocessing);
    vidlora::Matrix f = encoder.features(pixels.data, pixels.frames);
    if (pool_stride > 1) f = vidlora::model::spatial_average_pool(f, encoder.config().grid(), pool_stride);
    return vidlora::train::NotedFeatures{std::move(f), sampling_notes(video, sampling.report, frames)};
  });
}

}  // namespace demo
