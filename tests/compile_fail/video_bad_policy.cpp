// expect: Policy must be a sampling policy tag
// Sampler<P> only takes sampling policy tags (Uniform, SceneChange, Motion or a SamplingPolicy model).
#include <vidlora/video.hpp>

struct Random {};  // not a policy: no name, analysis or select()

int main() {
  vidlora::Sampler<Random> sampler;
  (void)sampler;
}
