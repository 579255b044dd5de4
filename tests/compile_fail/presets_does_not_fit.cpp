// expect: this preset cannot fit this model in its memory
// An 8 GB card without 4-bit weights cannot hold an 8B decoder: rejected at compile time.
#include <vidlora/presets.hpp>

struct EightGigabytes : vidlora::presets::T4 {
  static constexpr int vram_gb = 8;
  static constexpr bool load_in_4bit = false;
};

int main() { return vidlora::presets::AssertFits<EightGigabytes, vidlora::presets::models::Qwen3_8B>::value ? 0 : 1; }
