#include <catch2/catch.hpp>

#include <vidlora/core.hpp>

#include <string>

TEST_CASE("the version macros, constants and CMake's project version agree", "[core][version]") {
  const std::string from_parts = std::to_string(vidlora::version_major) + "." + std::to_string(vidlora::version_minor) +
                                 "." + std::to_string(vidlora::version_patch);
  CHECK(std::string(vidlora::version_string) == from_parts);
  CHECK(std::string(VIDLORA_CMAKE_PROJECT_VERSION) == from_parts);  // CMake read the header, not a copy
  CHECK(VIDLORA_VERSION == VIDLORA_VERSION_MAJOR * 10000 + VIDLORA_VERSION_MINOR * 100 + VIDLORA_VERSION_PATCH);
  static_assert(VIDLORA_VERSION >= 200, "0.2.0 is the first version with the macro");
}
