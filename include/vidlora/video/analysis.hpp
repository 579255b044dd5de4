#pragma once
// What one decode pass measures about a clip, and the online scene-cut detector that fills it.

#include <cstdint>
#include <cstdlib>
#include <vector>

#include <vidlora/video/hsv_histogram.hpp>
#include <vidlora/video/options.hpp>

namespace vidlora::video {

// Which per-frame measurements a sampling policy needs from the decode pass.
enum class AnalysisKind { none, scene_change, motion };

// Per-clip measurements, frame i = i-th decoded frame.
struct FrameAnalysis {
  std::int64_t frame_count = 0;
  std::vector<std::int64_t> scene_starts{0};  // first frame of each scene, starting with 0
  std::vector<double> scene_distance;         // Bhattacharyya distance to the previous frame (0 for frame 0)
  std::vector<double> motion;                 // mean |Δluma| to the previous frame, 0..255 (0 for frame 0)
};

// Feeds frames one at a time; decides cuts as it goes so the decode pass can keep the first frame
// of every scene.
class SceneCutDetector {
 public:
  explicit SceneCutDetector(SceneChangeOptions options) : options_(options) {}

  // rgb: the frame at analysis size. Returns true when `index` starts a new scene.
  bool push(std::int64_t index, const std::uint8_t* rgb, std::size_t pixels) {
    current_.clear();
    current_.add_rgb(rgb, pixels);
    double d = 0.0;
    if (has_previous_) d = bhattacharyya_distance(current_, previous_);
    std::swap(current_, previous_);
    has_previous_ = true;
    distances_.push_back(d);
    if (index > 0 && d > options_.threshold && index - last_cut_ >= options_.min_scene_len) {
      last_cut_ = index;
      cuts_.push_back(index);
      return true;
    }
    return false;
  }

  const std::vector<std::int64_t>& cuts() const { return cuts_; }  // excludes frame 0
  const std::vector<double>& distances() const { return distances_; }

 private:
  SceneChangeOptions options_;
  HsvHistogram current_, previous_;
  bool has_previous_ = false;
  std::int64_t last_cut_ = 0;
  std::vector<std::int64_t> cuts_;
  std::vector<double> distances_;
};

// Mean absolute difference of 8-bit luma (BT.601 weights) between consecutive analysis frames.
class MotionMeter {
 public:
  double push(const std::uint8_t* rgb, std::size_t pixels) {
    current_.resize(pixels);
    for (std::size_t i = 0; i < pixels; ++i)
      current_[i] =
          static_cast<std::uint8_t>((77 * rgb[3 * i] + 150 * rgb[3 * i + 1] + 29 * rgb[3 * i + 2] + 128) >> 8);
    double score = 0.0;
    if (previous_.size() == pixels && pixels > 0) {
      std::uint64_t sum = 0;
      for (std::size_t i = 0; i < pixels; ++i) sum += static_cast<std::uint64_t>(std::abs(current_[i] - previous_[i]));
      score = static_cast<double>(sum) / static_cast<double>(pixels);
    }
    std::swap(current_, previous_);
    return score;
  }

 private:
  std::vector<std::uint8_t> current_, previous_;
};

}  // namespace vidlora::video
