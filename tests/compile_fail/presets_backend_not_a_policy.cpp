// expect: backend_policy must name a backend policy type
// A preset names its backend as a policy type (backend::Cpu or backend::Cuda); anything else is rejected by
// presets::check_preset<P>() with a message naming the field.
#include <vidlora/presets.hpp>

struct TpuPreset : vidlora::presets::Cpu {
  using backend_policy = int;  // wrong: not a backend policy
};

static_assert(vidlora::presets::check_preset<TpuPreset>());

int main() {}
