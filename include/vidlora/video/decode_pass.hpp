#pragma once
// The single decode pass behind SceneChange, Motion and detect_scene_changes: every frame is
// measured at a small analysis size while a bounded set of decoded frames is held (by reference,
// not copied) so the chosen ones can be converted afterwards without decoding again.

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include <vidlora/video/analysis.hpp>
#include <vidlora/video/decoder.hpp>

namespace vidlora::video {

// A decoded frame kept alive by reference counting (av_frame_ref), with its position.
struct HeldFrame {
  std::int64_t index = 0;
  double timestamp = 0.0;
  FramePtr frame;
  bool pinned = false;  // first frame of a scene: never thinned out
};

// Holds every stride-th frame (stride 1, 2, 4, ...) plus pinned ones; when more than `capacity`
// unpinned frames are held the stride doubles and every other one is let go.
class FrameHold {
 public:
  FrameHold(std::size_t budget_bytes, std::size_t min_frames) : budget_(budget_bytes), min_frames_(min_frames) {}

  void offer(const DecodedFrame& f, bool pin) {
    if (!last_) last_.reset(av_frame_alloc());
    av_frame_unref(last_.get());  // the latest frame is always at hand, so the last frame can be chosen
    if (!last_ || av_frame_ref(last_.get(), f.frame) < 0)
      fail("video: out of memory holding decoded frame {}", f.index);
    last_index_ = f.index;
    last_timestamp_ = f.timestamp;
    if (capacity_ == 0) {  // size the hold from the first frame's decoded bytes
      const int bytes =
          av_image_get_buffer_size(static_cast<AVPixelFormat>(f.frame->format), f.frame->width, f.frame->height, 1);
      capacity_ = std::max<std::size_t>(min_frames_, bytes > 0 ? budget_ / static_cast<std::size_t>(bytes) : 0);
    }
    if (!pin && f.index % stride_ != 0) return;
    FramePtr ref(av_frame_alloc());
    if (!ref || av_frame_ref(ref.get(), f.frame) < 0) fail("video: out of memory holding decoded frame {}", f.index);
    held_.push_back({f.index, f.timestamp, std::move(ref), pin});
    if (!pin) ++unpinned_;
    while (unpinned_ > capacity_) {
      stride_ *= 2;
      std::erase_if(held_, [&](const HeldFrame& h) { return !h.pinned && h.index % stride_ != 0; });
      unpinned_ = static_cast<std::size_t>(
          std::count_if(held_.begin(), held_.end(), [](const HeldFrame& h) { return !h.pinned; }));
    }
  }

  // The held frames in index order, the latest decoded frame included.
  std::vector<HeldFrame>& frames() {
    if (last_ && last_->buf[0] && (held_.empty() || held_.back().index != last_index_)) {
      held_.push_back({last_index_, last_timestamp_, std::move(last_), false});
    }
    return held_;
  }
  std::int64_t stride() const { return stride_; }

 private:
  std::size_t budget_, min_frames_;
  std::size_t capacity_ = 0;
  std::size_t unpinned_ = 0;
  std::int64_t stride_ = 1;
  std::vector<HeldFrame> held_;
  FramePtr last_;
  std::int64_t last_index_ = -1;
  double last_timestamp_ = 0.0;
};

struct PassResult {
  FrameAnalysis analysis;
  DecodeStatus status;
  std::vector<HeldFrame> held;  // sorted by index; empty when nothing was to be held
  std::int64_t hold_stride = 1;
};

// Analysis size for a w x h video: `analysis_width` wide (never upscaled), aspect kept.
inline std::pair<int, int> analysis_size(int width, int height, int analysis_width) {
  if (analysis_width <= 0 || analysis_width >= width) return {width, height};
  const int h = std::max(1, static_cast<int>((static_cast<long long>(height) * analysis_width + width / 2) / width));
  return {analysis_width, h};
}

#ifndef VIDLORA_ANALYSIS_SCALER
#define VIDLORA_ANALYSIS_SCALER \
  SWS_POINT  // point samples: the histogram and the luma difference need no filtering, and it is ~free
#endif
inline int analysis_scaler_flags() { return VIDLORA_ANALYSIS_SCALER; }

// Decodes `decoder` from its current position to the end. kind: what to measure; hold_budget: bytes
// of decoded frames to hold (0 = hold nothing); min_hold: frames held at least (before thinning).
inline PassResult analyse_and_hold(VideoDecoder& decoder, AnalysisKind kind, const SceneChangeOptions& scene,
                                   std::size_t hold_budget, std::size_t min_hold) {
  PassResult result;
  const auto [aw, ah] = analysis_size(decoder.info().width, decoder.info().height, scene.analysis_width);
  RgbConverter small(analysis_scaler_flags());
  std::vector<std::uint8_t> rgb(static_cast<std::size_t>(aw) * ah * 3);
  SceneCutDetector detector(scene);
  MotionMeter meter;
  const bool hold = hold_budget > 0 || min_hold > 0;
  FrameHold held(hold_budget, min_hold);
  std::vector<std::int64_t> starts{0};

  result.status = decoder.decode([&](const DecodedFrame& f) {
    bool cut = false;
    if (kind != AnalysisKind::none) {
      small.convert(*f.frame, aw, ah, rgb.data());
      const auto pixels = static_cast<std::size_t>(aw) * ah;
      if (kind == AnalysisKind::scene_change) {
        cut = detector.push(f.index, rgb.data(), pixels);
        if (cut) starts.push_back(f.index);
      } else {
        result.analysis.motion.push_back(meter.push(rgb.data(), pixels));
      }
    }
    if (hold) held.offer(f, cut || f.index == 0);
    return true;
  });
  result.analysis.frame_count = result.status.frames;
  result.analysis.scene_starts = std::move(starts);
  result.analysis.scene_distance = detector.distances();
  result.held = std::move(held.frames());
  result.hold_stride = held.stride();
  return result;
}

// Maps wanted indices (strictly increasing) onto held frames: each to the nearest held frame not
// used yet, preferring one inside [lo[j], hi[j]) when given, keeping time order.
inline std::vector<std::size_t> match_held(const std::vector<HeldFrame>& held, const std::vector<std::int64_t>& wanted,
                                           const std::vector<std::pair<std::int64_t, std::int64_t>>& ranges = {}) {
  std::vector<std::size_t> out;
  const std::size_t k = wanted.size(), h = held.size();
  std::size_t first = 0;
  for (std::size_t j = 0; j < k && first < h; ++j) {
    const std::size_t last = h - std::min(h, k - j);  // leave enough held frames for the rest
    std::size_t best = first;
    auto cost = [&](std::size_t c) {
      const std::int64_t d = held[c].index - wanted[j];
      std::int64_t penalty = 0;
      if (!ranges.empty() && (held[c].index < ranges[j].first || held[c].index >= ranges[j].second))
        penalty = std::numeric_limits<std::int32_t>::max();
      return (d < 0 ? -d : d) + penalty;
    };
    for (std::size_t c = first; c <= std::max(first, last) && c < h; ++c)
      if (cost(c) < cost(best)) best = c;
    out.push_back(best);
    first = best + 1;
  }
  return out;
}

}  // namespace vidlora::video
