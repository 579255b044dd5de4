#pragma once
// Backend policies: where a model's steps run. `Cpu` (Eigen, the reference, always built) and `Cuda`
// (cuBLASLt + the kernels in */cuda/*.cuh). A preset names its backend as a type (`using backend_policy =
// backend::Cuda;`); code that forks per backend dispatches on the tag, and the step lists that both run
// (model/decoder_layer_steps.hpp) are written once. fmt-free: nvcc includes it.

#include <concepts>
#include <string_view>

namespace vidlora::backend {

struct Cpu {
  static constexpr std::string_view name = "Cpu";
  static constexpr bool on_device = false;  // tensors live in host memory
};

struct Cuda {
  static constexpr std::string_view name = "Cuda";
  static constexpr bool on_device = true;  // tensors live in one CUDA device's memory
};

// A backend policy: Cpu or Cuda, or a type refining one of them by inheritance.
template <class B>
concept Backend = requires {
  { B::name } -> std::convertible_to<std::string_view>;
  { B::on_device } -> std::convertible_to<bool>;
}
&&(std::derived_from<B, Cpu> || std::derived_from<B, Cuda>);

// Checks B with a message a user reads (the concept alone only says "not satisfied"). Always true when it compiles.
template <class B>
consteval bool check_backend() {
  static_assert(
      Backend<B>,
      "vidlora backend: the backend policy must be vidlora::backend::Cpu or vidlora::backend::Cuda (or a type "
      "derived from one), e.g. `using backend_policy = vidlora::backend::Cuda;` in a preset");
  return true;
}

}  // namespace vidlora::backend
