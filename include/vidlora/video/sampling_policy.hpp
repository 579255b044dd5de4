#pragma once
// concept SamplingPolicy: what Sampler<P> needs from a policy tag.

#include <concepts>
#include <cstdint>
#include <string_view>
#include <vector>

#include <vidlora/video/analysis.hpp>
#include <vidlora/video/options.hpp>

namespace vidlora::video {

// A sampling policy is a tag type that names itself, says which measurements the decode pass must
// take (AnalysisKind), and picks frame indices from them: select() returns strictly increasing
// indices in [0, frame_count), exactly num_frames of them when frame_count >= num_frames.
// Uniform, SceneChange and Motion are the policies vidlora ships; a user type that models this
// concept works the same way.
template <class P>
concept SamplingPolicy = requires(const FrameAnalysis& analysis, const SamplerOptions& options) {
  { P::name } -> std::convertible_to<std::string_view>;
  { P::analysis } -> std::convertible_to<AnalysisKind>;
  { P::select(analysis, options) } -> std::same_as<std::vector<std::int64_t>>;
};

}  // namespace vidlora::video

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using video::SamplingPolicy;
}  // namespace vidlora
