#pragma once
// The operands of the tiled attention kernels' tile products (model/cuda/flash_attention.cuh's shared-memory tiles,
// model/cuda/flash_attention_mma.cuh's registers): fp32, or rounded to nearest even into bf16 / fp16 as they enter a
// tile, by io/half.hpp's conversions on host and device, so that a host run of a kernel body rounds as the device does.
// fmt-free (nvcc compiles it).

#include <cstdint>
#include <type_traits>

#include <vidlora/core/portability.hpp>
#include <vidlora/io/half.hpp>

namespace vidlora::model::cuda {

// The tile products' operands: fp32, or rounded to nearest even into bf16 / fp16 as they enter a tile.
enum class FlashOperands : std::uint8_t { F32, BF16, F16 };

inline const char* flash_operands_name(FlashOperands k) {
  return k == FlashOperands::F32 ? "fp32" : k == FlashOperands::BF16 ? "bf16" : "fp16";
}

// How an operand is stored in a tile: a float, or a 16-bit pattern (io/half.hpp's conversions on host and device,
// so the host block and the device kernels round alike).
template <FlashOperands K>
struct FlashOperandFormat {
  static constexpr FlashOperands kind = K;
  using type = std::conditional_t<K == FlashOperands::F32, float, std::uint16_t>;
  static constexpr int bytes = static_cast<int>(sizeof(type));
  VIDLORA_HOST_DEVICE static type from_float(float x) {
    if constexpr (K == FlashOperands::F32)
      return x;
    else if constexpr (K == FlashOperands::BF16)
      return io::float_to_bf16_bits(x);
    else
      return io::float_to_fp16_bits(x);
  }
  VIDLORA_HOST_DEVICE static float to_float(type x) {
    if constexpr (K == FlashOperands::F32)
      return x;
    else if constexpr (K == FlashOperands::BF16)
      return io::bf16_bits_to_float(x);
    else
      return io::fp16_bits_to_float(x);
  }
};

}  // namespace vidlora::model::cuda
