#pragma once
// A run-time LoRA rank (an adapter_config.json's r) mapped onto the compile-time Rank of
// LoraLinear<Rank, Alpha, Base> / Decoder<Rank, Alpha, Base>: dispatch_rank(r, fn) calls
// fn.template operator()<R>() for the R in kSupportedRanks equal to r, and fails naming r and the
// list otherwise. Only the listed ranks are instantiated (seven, not one per value of r), and alpha
// is not dispatched: it only sets the scaling, so it travels at run time in LoraOptions::alpha.

#include <array>
#include <utility>

#include <vidlora/core/error.hpp>

namespace vidlora::lora {

// The ranks a run-time r may take.
using SupportedRanks = std::integer_sequence<int, 4, 8, 16, 32, 64, 128, 256>;
inline constexpr std::array<int, 7> kSupportedRanks{4, 8, 16, 32, 64, 128, 256};

namespace detail {
template <class Fn, int First, int... Rest>
decltype(auto) dispatch_rank_over(int r, Fn&& fn, std::integer_sequence<int, First, Rest...>) {
  if (r == First) return std::forward<Fn>(fn).template operator()<First>();
  if constexpr (sizeof...(Rest) > 0) {
    return dispatch_rank_over(r, std::forward<Fn>(fn), std::integer_sequence<int, Rest...>{});
  } else {
    fail("LoRA rank r = {} is not supported: the compiled ranks are 4, 8, 16, 32, 64, 128 and 256", r);
  }
}
}  // namespace detail

// fn: a generic lambda `[&]<int R>() { ... }`; every instantiation must return the same type.
template <class Fn>
decltype(auto) dispatch_rank(int r, Fn&& fn) {
  return detail::dispatch_rank_over(r, std::forward<Fn>(fn), SupportedRanks{});
}

constexpr bool is_supported_rank(int r) {
  for (int s : kSupportedRanks)
    if (s == r) return true;
  return false;
}

}  // namespace vidlora::lora
