// A translation unit built as if configured with -DVIDLORA_PRESET=H100.
#define VIDLORA_ACTIVE_PRESET H100  // what vidlora_use_preset(<target> H100) defines
#include <catch2/catch.hpp>

#include <vidlora/presets.hpp>

TEST_CASE("VIDLORA_ACTIVE_PRESET=H100 makes ActivePreset the H100 preset", "[presets]") {
  STATIC_REQUIRE(std::is_same_v<vidlora::ActivePreset, vidlora::presets::H100>);
  STATIC_REQUIRE(vidlora::ActivePreset::num_frames == 16);
}
