#pragma once
// vidlora's version, the one place it is written: CMake reads it from here for project() and the
// installed package's vidloraConfigVersion.cmake. Semantic versioning; CHANGELOG.md says what changed.

#define VIDLORA_VERSION_MAJOR 0
#define VIDLORA_VERSION_MINOR 2
#define VIDLORA_VERSION_PATCH 0
// One number that compares: 10000 * major + 100 * minor + patch (0.2.0 -> 200).
#define VIDLORA_VERSION (VIDLORA_VERSION_MAJOR * 10000 + VIDLORA_VERSION_MINOR * 100 + VIDLORA_VERSION_PATCH)

#define VIDLORA_DETAIL_STRINGIZE_ARG(x) #x
#define VIDLORA_DETAIL_STRINGIZE(x) VIDLORA_DETAIL_STRINGIZE_ARG(x)

namespace vidlora {

inline constexpr int version_major = VIDLORA_VERSION_MAJOR;
inline constexpr int version_minor = VIDLORA_VERSION_MINOR;
inline constexpr int version_patch = VIDLORA_VERSION_PATCH;
inline constexpr const char* version_string =
    VIDLORA_DETAIL_STRINGIZE(VIDLORA_VERSION_MAJOR) "." VIDLORA_DETAIL_STRINGIZE(
        VIDLORA_VERSION_MINOR) "." VIDLORA_DETAIL_STRINGIZE(VIDLORA_VERSION_PATCH);

}  // namespace vidlora
