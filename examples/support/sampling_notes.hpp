#pragma once
// What the programs say about a clip's sampling on stderr, beside its features (both model paths, the demo's and
// the Hugging Face one): a clip shorter than the frames asked, and damage FFmpeg decoded through (the programs
// decode with one thread, so FFmpeg's H.264 decoder conceals and flags damaged frames, most of them:
// video/decoder.hpp).
// The note is made when a clip's features are computed and kept with them in the feature cache
// (FeatureCache::get_noted), so a clip read from the cache later is told about again (clip_features.hpp).
#include <filesystem>
#include <string>

#include <fmt/format.h>

#include <vidlora/video/sampler.hpp>

namespace demo {

// The note's lines ("note: ...\n" each), empty when there is nothing to say. `whole_clip`: a pass over every frame
// the features also used (the demo's change tokens), whose damage count, covering the whole clip, is the one told
// when it found some.
inline std::string sampling_notes(const std::filesystem::path& video, const vidlora::video::SamplingReport& report,
                                  int frames_asked, const vidlora::video::DecodeStatus* whole_clip = nullptr) {
  std::string notes;
  if (report.short_video)  // the model sees fewer frames than it was asked to (and than a run trained on)
    notes += fmt::format("note: {} has {} frames, fewer than the {} asked: all {} are used\n", video.string(),
                         report.frame_count, frames_asked, report.frame_count);
  const vidlora::video::DecodeStatus& damage =
      whole_clip && whole_clip->concealed_frames > 0 ? *whole_clip : report.status;
  if (damage.concealed_frames > 0)  // the features are of a picture FFmpeg partly guessed
    notes += fmt::format(
        "note: {}: {}: its bitstream is corrupt there and the picture wrong up to the next keyframe; the clip's "
        "features are kept (re-encode it from its source, or remove it)\n",
        video.string(), damage.concealment());
  return notes;
}

}  // namespace demo
