#pragma once
// vidlora::Error: the one exception type every failure the library reports derives from.

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <utility>

#include <vidlora/core/error_type.hpp>

namespace vidlora {

// Throws vidlora::Error with a fmt-formatted message.
template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

// Throws vidlora::Error unless `condition` holds.
template <class... Args>
void require(bool condition, fmt::format_string<Args...> format, Args&&... args) {
  if (!condition) throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace vidlora
