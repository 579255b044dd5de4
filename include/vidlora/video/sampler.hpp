#pragma once
// Sampler<Policy>: picks num_frames frames of a video file with one decode pass (or, for Uniform,
// keyframe seeks) and returns them as RGB at the requested size.

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <set>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/video/decode_pass.hpp>
#include <vidlora/video/decoder.hpp>
#include <vidlora/video/options.hpp>
#include <vidlora/video/policies.hpp>
#include <vidlora/video/sampling_policy.hpp>

namespace vidlora::video {

// How a sampling went, beside the frames.
struct SamplingReport {
  StreamInfo info;
  std::int64_t frame_count = 0;     // frames the video really has (decoded, or demuxed when seeking)
  bool short_video = false;         // fewer frames than num_frames: every frame was returned
  bool seeked = false;              // Uniform took the keyframe-seek path
  std::int64_t frames_decoded = 0;  // decoder output frames this sampling consumed
  std::int64_t hold_stride = 1;     // >1: chosen frames were snapped to every hold_stride-th frame
  // damaged = the file broke mid-way (only with accept_damaged). concealed_frames / concealment(): frames FFmpeg
  // decoded through damage (decode with threads = 1: video/decoder.hpp) among those this sampling decoded: the whole
  // clip in one pass; seeking (report.seeked), the frames shown from each taken frame's keyframe up to it (with
  // B-frames, a reference frame shown after a taken frame is decoded but not counted), so about the
  // damage the returned frames can carry. There `frames` counts the distinct frames counted so.
  DecodeStatus status;
  std::vector<std::int64_t> scene_starts;  // SceneChange: first frame of every detected scene
};

struct Sampling {
  std::vector<SampledFrame> frames;
  SamplingReport report;
};

template <class Policy>
class Sampler {
  static_assert(SamplingPolicy<Policy>,
                "Sampler<Policy>: Policy must be a sampling policy tag - vidlora::Uniform, vidlora::SceneChange, "
                "vidlora::Motion, or a type modelling concept vidlora::video::SamplingPolicy "
                "(static name, static analysis, static select(FrameAnalysis, SamplerOptions))");

 public:
  using policy_type = Policy;

  explicit Sampler(SamplerOptions options = {}) : options_(options) {}
  const SamplerOptions& options() const { return options_; }

  // Exactly num_frames distinct frames in time order (all of them, flagged, when the video is
  // shorter). Throws vidlora::Error naming the file on any failure.
  std::vector<SampledFrame> sample(const std::filesystem::path& path) const { return sample_with_report(path).frames; }

  Sampling sample_with_report(const std::filesystem::path& path) const {
    const SamplerOptions& o = options_;
    if (o.num_frames <= 0)
      fail("video file {}: SamplerOptions.num_frames is {}; ask for at least one frame", path.string(), o.num_frames);
    if (o.width < 0 || o.height < 0)
      fail("video file {}: SamplerOptions size {}x{} is negative", path.string(), o.width, o.height);
    VideoDecoder decoder(path, VideoDecoderOptions{o.threads});
    const int w = o.width > 0 ? o.width : decoder.info().width;
    const int h = o.height > 0 ? o.height : decoder.info().height;
    if constexpr (Policy::analysis == AnalysisKind::none) {
      if (o.seek)
        if (auto seeked = sample_by_seeking(decoder, w, h)) return std::move(*seeked);
      if (!decoder.rewind()) decoder = VideoDecoder(path, VideoDecoderOptions{o.threads});
    }
    return sample_in_one_pass(decoder, w, h);
  }

 private:
  Sampling sample_in_one_pass(VideoDecoder& decoder, int w, int h) const {
    const SamplerOptions& o = options_;
    const auto k = static_cast<std::int64_t>(o.num_frames);
    PassResult pass = analyse_and_hold(decoder, Policy::analysis, o.scene, o.buffer_bytes,
                                       static_cast<std::size_t>(std::max<std::int64_t>(4 * k, 16)));
    Sampling out;
    out.report.info = decoder.info();
    out.report.status = pass.status;
    out.report.frames_decoded = pass.status.frames;
    out.report.frame_count = pass.analysis.frame_count;
    out.report.hold_stride = pass.hold_stride;
    if (Policy::analysis == AnalysisKind::scene_change) out.report.scene_starts = pass.analysis.scene_starts;
    const auto& path = decoder.path();
    if (pass.status.damaged && !o.accept_damaged)
      fail(
          "video file {}: damaged, decoding stopped {} (re-encode it, or remove it before a new run: a resumed run "
          "needs the clips its checkpoint was trained on; a program built on the library "
          "can set SamplerOptions.accept_damaged to sample the frames before the damage)",
          path.string(), pass.status.where());
    const std::int64_t n = pass.analysis.frame_count;
    if (n == 0)
      fail("video file {}: no decodable frames{}", path.string(),
           pass.status.damaged ? " (" + pass.status.problem + ")" : "");

    std::vector<std::int64_t> wanted;
    std::vector<std::pair<std::int64_t, std::int64_t>> ranges;
    if (n <= k) {
      out.report.short_video = n < k;
      for (std::int64_t i = 0; i < n; ++i) wanted.push_back(i);
    } else {
      wanted = Policy::select(pass.analysis, o);
      if (static_cast<std::int64_t>(wanted.size()) != k)
        fail("video file {}: sampling policy {} chose {} frames, expected {}", path.string(), Policy::name,
             wanted.size(), k);
      if (Policy::analysis == AnalysisKind::scene_change) {  // keep each choice inside its scene
        const auto& starts = pass.analysis.scene_starts;
        for (auto idx : wanted) {
          auto it = std::upper_bound(starts.begin(), starts.end(), idx);
          ranges.emplace_back(*(it - 1), it == starts.end() ? n : *it);
        }
      }
    }
    RgbConverter converter(SWS_BICUBIC);
    for (std::size_t c : match_held(pass.held, wanted, ranges)) {
      const HeldFrame& f = pass.held[c];
      out.frames.push_back({f.index, f.timestamp, converter.convert(*f.frame, w, h)});
    }
    return out;
  }

  // Uniform: demux once to learn the real frame count and keyframes, then seek to the keyframe before
  // each wanted frame (unless it is ahead of where decoding already is) and decode forward to it.
  // Returns nothing when the file does not allow it; the caller then decodes every frame.
  std::optional<Sampling> sample_by_seeking(VideoDecoder& decoder, int w, int h) const {
    const auto k = static_cast<std::int64_t>(options_.num_frames);
    PacketIndex index = decoder.scan_packets();
    const auto n = static_cast<std::int64_t>(index.pts.size());
    if (!index.complete || !index.rewound || index.status.damaged || n <= k) return std::nullopt;
    Sampling out;
    out.report.info = decoder.info();
    out.report.frame_count = n;
    out.report.seeked = true;
    RgbConverter converter(SWS_BICUBIC);
    std::int64_t position = std::numeric_limits<std::int64_t>::min();  // pts of the last decoded frame
    bool from_start = true;  // after the scan the decoder sits at the first frame
    FrameAnalysis counted;
    counted.frame_count = n;
    std::set<std::int64_t> seen;  // pts of the frames in report.status (a step back decodes some of them again)
    DecodeStatus& status = out.report.status;
    const auto count = [&](const DecodedFrame& f) {
      if (!seen.insert(f.pts).second) return;
      ++status.frames;
      status.last_timestamp = std::max(status.last_timestamp, f.timestamp);
      if (f.concealed)
        status.first_concealed_timestamp =
            status.concealed_frames++ == 0 ? f.timestamp : std::min(status.first_concealed_timestamp, f.timestamp);
    };
    for (std::int64_t t : Policy::select(counted, options_)) {
      const std::int64_t target = index.pts[static_cast<std::size_t>(t)];
      std::int64_t key = t;
      while (key > 0 && !index.keyframe[static_cast<std::size_t>(key)]) --key;
      bool found = false;
      for (int attempt = 0; attempt < 3 && !found; ++attempt) {
        const std::int64_t key_pts = index.pts[static_cast<std::size_t>(key)];
        if (attempt > 0 || (key_pts > position && !(from_start && key == 0))) {
          if (!decoder.seek_keyframe(key_pts)) return std::nullopt;
          from_start = false;
        }
        bool overshot = false;
        const DecodeStatus s = decoder.decode([&](const DecodedFrame& f) {
          count(f);
          if (f.pts < target) return true;
          if (f.pts == target) {
            out.frames.push_back({t, f.timestamp, converter.convert(*f.frame, w, h)});
            found = true;
          } else {
            overshot = true;
          }
          return false;
        });
        out.report.frames_decoded += s.frames;
        if (s.damaged) return std::nullopt;
        if (!found && !overshot) return std::nullopt;  // reached the end without meeting the frame
        if (!found) {                                  // landed after the frame: go one keyframe further back
          do --key;
          while (key > 0 && !index.keyframe[static_cast<std::size_t>(key)]);
          if (key < 0) return std::nullopt;
        }
      }
      if (!found) return std::nullopt;
      position = target;
    }
    return out;
  }

  SamplerOptions options_;
};

}  // namespace vidlora::video

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using video::Sampler;
}  // namespace vidlora
