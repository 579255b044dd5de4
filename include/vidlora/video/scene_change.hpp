#pragma once
// detect_scene_changes: the cut detector of Sampler<SceneChange>, on its own.

#include <cstdint>
#include <filesystem>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/video/decode_pass.hpp>
#include <vidlora/video/options.hpp>

namespace vidlora::video {

// Index of the first frame of each new scene (frame 0 is not listed), from one decode pass.
// Frame i starts a scene when the Bhattacharyya distance between the H-S histograms of frames
// i-1 and i exceeds options.threshold and the previous cut (or frame 0) is at least
// options.min_scene_len frames earlier. Throws vidlora::Error naming the file when it cannot be
// decoded or breaks mid-way.
inline std::vector<std::int64_t> detect_scene_changes(const std::filesystem::path& path,
                                                      const SceneChangeOptions& options = {}) {
  VideoDecoder decoder(path,
                       VideoDecoderOptions{.threads = options.threads, .skip_loop_filter = options.skip_loop_filter});
  PassResult pass = analyse_and_hold(decoder, AnalysisKind::scene_change, options, 0, 0);
  if (pass.status.damaged) fail("video file {}: damaged, decoding stopped {}", path.string(), pass.status.where());
  if (pass.status.frames == 0) fail("video file {}: no decodable frames", path.string());
  return {pass.analysis.scene_starts.begin() + 1, pass.analysis.scene_starts.end()};
}

}  // namespace vidlora::video
