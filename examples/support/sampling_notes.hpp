#pragma once
// What the programs say about a clip's sampling on stderr, beside its features (both model paths, the demo's and
// the Hugging Face one): a clip shorter than the frames asked, and damage FFmpeg decoded through (the programs
// decode with one thread, so FFmpeg's H.264 decoder conceals and flags damaged frames, most of them:
// video/decoder.hpp).
// Printed when a clip's features are computed; a clip served from the feature cache was told about when encoded.
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include <vidlora/video/sampler.hpp>

namespace demo {

// `whole_clip`: a pass over every frame the features also used (the demo's change tokens), whose damage count,
// covering the whole clip, is the one told when it found some.
inline void print_sampling_notes(const std::filesystem::path& video, const vidlora::video::SamplingReport& report,
                                 int frames_asked, const vidlora::video::DecodeStatus* whole_clip = nullptr) {
  if (report.short_video)  // the model sees fewer frames than it was asked to (and than a run trained on)
    fmt::print(stderr, "\nnote: {} has {} frames, fewer than the {} asked: all {} are used\n", video.string(),
               report.frame_count, frames_asked, report.frame_count);
  const vidlora::video::DecodeStatus& damage =
      whole_clip && whole_clip->concealed_frames > 0 ? *whole_clip : report.status;
  if (damage.concealed_frames > 0)  // the features are of a picture FFmpeg partly guessed
    fmt::print(stderr,
               "\nnote: {}: {}: its bitstream is corrupt there and the picture wrong up to the next keyframe; the "
               "clip's features are kept (re-encode it from its source, or remove it)\n",
               video.string(), damage.concealment());
}

}  // namespace demo
