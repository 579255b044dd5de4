#pragma once
// The aggregates that configure the samplers; every field has a default, so
// `SamplerOptions o{}; o.num_frames = 16;` and designated initializers both work.

#include <cstddef>
#include <cstdint>

namespace vidlora::video {

struct SceneChangeOptions {
  double threshold = 0.30;          // cut when the Bhattacharyya distance to the previous frame exceeds this
  std::int64_t min_scene_len = 15;  // frames; a cut closer than this to the previous one (or to frame 0) is ignored
  int analysis_width = 128;         // frames are analysed at this width (height keeps the aspect ratio)
  int threads = 0;                  // decoder threads; 0 = one per core
  // detect_scene_changes only: decode without the deblocking filter (~15% less CPU on H.264; the
  // histograms barely change). Sampler<SceneChange> always decodes fully, its frames go to a model.
  bool skip_loop_filter = false;
};

struct MotionOptions {
  // Each frame's weight is its motion score plus floor × the clip's mean score, so static stretches
  // still get a share proportional to floor (0: only motion counts; a clip without motion is uniform).
  double floor = 0.2;
};

struct SamplerOptions {
  int num_frames = 8;  // frames per clip (presets: T4 4, L4 8, A100 8, H100 16)
  int width = 336;     // size of the returned RGB frames; 0 = the video's own width
  int height = 336;    // 0 = the video's own height
  int threads = 0;     // decoder threads (FFmpeg frame threading); 0 = one per core
  SceneChangeOptions scene{};
  MotionOptions motion{};
  // Uniform: seek to the keyframe before each wanted frame and decode forward (false: decode every frame).
  bool seek = true;
  // A damaged file (read or decode error mid-file) throws by default; true samples the frames
  // before the damage instead and reports it in SamplingReport::status.
  bool accept_damaged = false;
  // Decoded frames held while one pass analyses the clip; above this the held frames thin out
  // (every 2nd, 4th, ... frame) and chosen frames snap to the nearest held one.
  std::size_t buffer_bytes = std::size_t{128} << 20;  // 1080p yuv420p: 42 frames, 720p: 91
};

}  // namespace vidlora::video

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using video::MotionOptions;
using video::SamplerOptions;
using video::SceneChangeOptions;
}  // namespace vidlora
