// The video half of the demo programs (FFmpeg sampling and frozen CLIP features), compiled once for both.
#include <vidlora/train/video_features.hpp>
#include <vidlora/video/policy_table.hpp>

#include <string>

namespace demo {

vidlora::Matrix clip_features(const std::filesystem::path& video, const std::string& sampler, int frames,
                              const vidlora::model::FrameEncoder& encoder, int pool_stride, int change_pool_stride) {
  vidlora::video::SamplerOptions so;
  so.num_frames = frames;
  so.threads = 1;
  so.scene.threads = 1;
  so.scene.min_scene_len = 3;  // the demo clips' scenes are short (docs/data.md)
  vidlora::Matrix f = vidlora::video::with_sampling_policy(sampler, [&](auto policy) {
    return vidlora::train::video_clip_features<decltype(policy)>(video, so, encoder, pool_stride);
  });
  if (change_pool_stride == 0) return f;
  const vidlora::Matrix change = vidlora::train::video_change_features(video, so, encoder, change_pool_stride);
  vidlora::Matrix both(f.rows() + change.rows(), f.cols());
  both << f, change;
  return both;
}

}  // namespace demo
