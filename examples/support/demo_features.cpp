// The video half of the demo programs (FFmpeg sampling and frozen CLIP features), compiled once for both.
#include <fmt/format.h>

#include <vidlora/train/feature_cache.hpp>
#include <vidlora/train/video_features.hpp>
#include <vidlora/core/error.hpp>
#include <vidlora/video/ffmpeg.hpp>
#include <vidlora/video/policy_table.hpp>

#include "sampling_notes.hpp"

#include <cstdlib>
#include <string>
#include <string_view>

namespace demo {

void capture_ffmpeg_log() {
  const char* env = std::getenv("VIDLORA_FFMPEG_LOG");
  const std::string_view name = env && *env ? env : "info";  // FFmpeg's own default: nothing hidden
  static constexpr std::pair<std::string_view, int> kLevels[] = {
      {"quiet", AV_LOG_QUIET},     {"panic", AV_LOG_PANIC}, {"fatal", AV_LOG_FATAL},     {"error", AV_LOG_ERROR},
      {"warning", AV_LOG_WARNING}, {"info", AV_LOG_INFO},   {"verbose", AV_LOG_VERBOSE}, {"debug", AV_LOG_DEBUG}};
  for (const auto& [level_name, level] : kLevels)
    if (name == level_name) return vidlora::video::capture_ffmpeg_log(level);
  vidlora::fail("VIDLORA_FFMPEG_LOG={}: not one of quiet, panic, fatal, error, warning, info, verbose, debug", name);
}

vidlora::train::NotedFeatures clip_features(const std::filesystem::path& video, const std::string& sampler, int frames,
                                            const vidlora::model::FrameEncoder& encoder, int pool_stride,
                                            int change_pool_stride) {
  vidlora::video::SamplerOptions so;
  so.num_frames = frames;
  so.threads = 1;
  so.scene.threads = 1;
  so.scene.min_scene_len = 3;  // the demo clips' scenes are short (docs/data.md)
  vidlora::video::SamplingReport report;
  vidlora::Matrix f = vidlora::video::with_sampling_policy(sampler, [&](auto policy) {
    return vidlora::train::video_clip_features<decltype(policy)>(video, so, encoder, pool_stride, &report);
  });
  if (change_pool_stride == 0) return {std::move(f), sampling_notes(video, report, frames)};
  vidlora::video::SamplingReport change_report;  // (every frame decoded: its damage count covers the whole clip)
  const vidlora::Matrix change =
      vidlora::train::video_change_features(video, so, encoder, change_pool_stride, &change_report);
  vidlora::Matrix both(f.rows() + change.rows(), f.cols());
  both << f, change;
  return {std::move(both), sampling_notes(video, report, frames, &change_report.status)};
}

}  // namespace demo
