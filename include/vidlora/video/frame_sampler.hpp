#pragma once
// concept FrameSampler: anything that turns a video file into sampled frames (every Sampler<P>).

#include <concepts>
#include <filesystem>
#include <vector>

#include <vidlora/video/frame.hpp>

namespace vidlora::video {

// What a data pipeline needs from a sampler: sample(path) -> frames in time order.
template <class S>
concept FrameSampler = requires(const S& sampler, const std::filesystem::path& path) {
  typename S::policy_type;
  { sampler.sample(path) } -> std::same_as<std::vector<SampledFrame>>;
};

}  // namespace vidlora::video
