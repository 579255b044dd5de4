#pragma once
// The sampling policies: empty tags that say what the decode pass must measure and how frame
// indices are chosen from those measurements. Sampler<Policy> runs them.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string_view>
#include <vector>

#include <vidlora/video/analysis.hpp>
#include <vidlora/video/options.hpp>

namespace vidlora::video {

// np.linspace(0, n - 1, k).astype(int), the indices LLaVA-NeXT and Video-LLaVA sample:
// step (n-1)/(k-1) in double, truncated, the last one exactly n - 1.
inline std::vector<std::int64_t> uniform_indices(std::int64_t n, std::int64_t k) {
  std::vector<std::int64_t> out;
  if (n <= 0 || k <= 0) return out;
  out.reserve(static_cast<std::size_t>(k));
  if (k == 1) return {0};
  const double step = static_cast<double>(n - 1) / static_cast<double>(k - 1);
  for (std::int64_t j = 0; j < k; ++j) out.push_back(static_cast<std::int64_t>(static_cast<double>(j) * step));
  out.back() = n - 1;
  return out;
}

// Turns sorted, possibly repeated indices in [0, n) into strictly increasing ones, moving each as
// little as the neighbours allow (needs k <= n).
inline std::vector<std::int64_t> make_distinct(std::vector<std::int64_t> idx, std::int64_t n) {
  std::sort(idx.begin(), idx.end());
  const auto k = static_cast<std::int64_t>(idx.size());
  for (std::int64_t j = 0; j < k; ++j) {
    idx[j] = std::clamp<std::int64_t>(idx[j], j, n - k + j);
    if (j > 0 && idx[j] <= idx[j - 1]) idx[j] = idx[j - 1] + 1;
  }
  for (std::int64_t j = k - 2; j >= 0; --j)
    if (idx[j] >= idx[j + 1]) idx[j] = idx[j + 1] - 1;
  return idx;
}

// Evenly spaced over the whole clip, first and last frame included. Needs only the frame count,
// so Sampler<Uniform> seeks to keyframes instead of decoding everything.
struct Uniform {
  static constexpr std::string_view name = "uniform";
  static constexpr AnalysisKind analysis = AnalysisKind::none;
  static std::vector<std::int64_t> select(const FrameAnalysis& a, const SamplerOptions& o) {
    return uniform_indices(a.frame_count, o.num_frames);
  }
};

// One frame from the middle of every scene, leftover slots shared out so that the scenes' frames are
// as evenly spaced as possible (each further slot goes to the scene with the largest length per
// frame). With more scenes than slots, the longest scenes are kept.
struct SceneChange {
  static constexpr std::string_view name = "scene_change";
  static constexpr AnalysisKind analysis = AnalysisKind::scene_change;
  static std::vector<std::int64_t> select(const FrameAnalysis& a, const SamplerOptions& o) {
    const std::int64_t n = a.frame_count, k = o.num_frames;
    struct Scene {
      std::int64_t begin, length, slots;
    };
    std::vector<Scene> scenes;
    for (std::size_t s = 0; s < a.scene_starts.size(); ++s) {
      const std::int64_t b = a.scene_starts[s];
      const std::int64_t e = s + 1 < a.scene_starts.size() ? a.scene_starts[s + 1] : n;
      if (e > b) scenes.push_back({b, e - b, 0});
    }
    if (static_cast<std::int64_t>(scenes.size()) > k) {  // keep the k longest, in time order
      std::vector<Scene> by_length = scenes;
      std::stable_sort(by_length.begin(), by_length.end(),
                       [](const Scene& x, const Scene& y) { return x.length > y.length; });
      by_length.resize(static_cast<std::size_t>(k));
      std::sort(by_length.begin(), by_length.end(), [](const Scene& x, const Scene& y) { return x.begin < y.begin; });
      scenes = by_length;
    }
    for (auto& s : scenes) s.slots = 1;
    for (std::int64_t left = k - static_cast<std::int64_t>(scenes.size()); left > 0; --left) {
      Scene* best = nullptr;
      for (auto& s : scenes)
        if (s.slots < s.length &&
            (!best || s.length * (best->slots + 1) > best->length * (s.slots + 1)))  // length/(slots+1) larger
          best = &s;
      if (!best) break;
      ++best->slots;
    }
    std::vector<std::int64_t> out;
    for (const auto& s : scenes)
      for (std::int64_t q = 0; q < s.slots; ++q)
        out.push_back(s.begin + static_cast<std::int64_t>((static_cast<double>(q) + 0.5) * s.length / s.slots));
    return make_distinct(out, n);
  }
};

// Frames at equal steps of cumulative motion: the q-th frame is where the running sum of
// (motion + floor · mean motion) first reaches (q + 0.5)/k of the total.
struct Motion {
  static constexpr std::string_view name = "motion";
  static constexpr AnalysisKind analysis = AnalysisKind::motion;
  static std::vector<std::int64_t> select(const FrameAnalysis& a, const SamplerOptions& o) {
    const std::int64_t n = a.frame_count, k = o.num_frames;
    double mean = 0;
    for (double m : a.motion) mean += m;
    mean = a.motion.empty() ? 0.0 : mean / static_cast<double>(a.motion.size());
    const double floor = mean > 0 ? o.motion.floor * mean : 1.0;
    std::vector<double> cumulative(static_cast<std::size_t>(n));
    double total = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      total += (mean > 0 && i < static_cast<std::int64_t>(a.motion.size()) ? a.motion[i] : 0.0) + floor;
      cumulative[i] = total;
    }
    std::vector<std::int64_t> out;
    for (std::int64_t q = 0; q < k; ++q) {
      const double target = (static_cast<double>(q) + 0.5) / static_cast<double>(k) * total;
      const auto it = std::lower_bound(cumulative.begin(), cumulative.end(), target);
      out.push_back(std::min<std::int64_t>(n - 1, it - cumulative.begin()));
    }
    return make_distinct(out, n);
  }
};

// num_frames consecutive frames around the largest change from one frame to the next (the largest
// Motion score, the earliest on a tie): frames peak − k/2 … peak − k/2 + k − 1, shifted to stay inside the
// clip, so with k = 2 the pair (peak − 1, peak). A short event (a shake, a cut) that evenly spaced frames
// step over is seen as two neighbouring frames; train::video_change_features turns that pair into one image.
struct PeakChange {
  static constexpr std::string_view name = "peak_change";
  static constexpr AnalysisKind analysis = AnalysisKind::motion;
  static std::vector<std::int64_t> select(const FrameAnalysis& a, const SamplerOptions& o) {
    const std::int64_t n = a.frame_count, k = std::min<std::int64_t>(o.num_frames, n);
    std::int64_t peak = 0;
    const auto scored = std::min<std::int64_t>(n, static_cast<std::int64_t>(a.motion.size()));
    for (std::int64_t i = 1; i < scored; ++i)
      if (a.motion[static_cast<std::size_t>(i)] > a.motion[static_cast<std::size_t>(peak)]) peak = i;
    const std::int64_t first = std::clamp<std::int64_t>(peak - k / 2, 0, n - k);
    std::vector<std::int64_t> out;
    for (std::int64_t j = 0; j < k; ++j) out.push_back(first + j);
    return out;
  }
};

}  // namespace vidlora::video

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using video::Motion;
using video::SceneChange;
using video::Uniform;
}  // namespace vidlora
