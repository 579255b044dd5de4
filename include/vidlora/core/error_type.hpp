#pragma once
// vidlora::Error: the one exception type every failure the library reports derives from. fmt-free, so the
// CUDA headers (nvcc 13 rejects fmt's consteval format strings in C++20) can derive from it; core/error.hpp
// includes this and adds the fmt-formatting fail / require.

#include <stdexcept>

namespace vidlora {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace vidlora
