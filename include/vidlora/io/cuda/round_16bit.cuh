#pragma once
// round_to_16bit: float values rounded to nearest even into bf16 or fp16 bit patterns on the device, by io/half.hpp's
// conversions (the host's bits exactly). The one place the device narrows floats: the 16-bit operands of the frozen
// GEMMs (lora/cuda/lora_linear.cuh) and of the CLIP tower (model/cuda/clip_vision.cuh), and the decoder's saved
// activations packed in bf16 (model/cuda/decoder_layer.cuh's pack_bf16).

#include <cstdint>

#include <vidlora/core/cuda/gemm.cuh>
#include <vidlora/core/cuda/launch.cuh>
#include <vidlora/core/cuda/status.cuh>
#include <vidlora/io/half.hpp>

#if VIDLORA_KERNELS
namespace vidlora::io::cuda {

namespace detail {
template <bool Bf16>
__global__ void round_to_16bit_kernel(const float* src, std::uint16_t* dst, std::int64_t n) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    dst[i] = Bf16 ? float_to_bf16_bits(src[i]) : float_to_fp16_bits(src[i]);
}
}  // namespace detail

// dst[0, n) = src[0, n) as `t` (BF16 or F16) bits, on `stream`.
inline void round_to_16bit(const float* src, std::uint16_t* dst, std::int64_t n, vidlora::cuda::DType t,
                           cudaStream_t stream) {
  using vidlora::cuda::DType;
  vidlora::cuda::check_arg(t != DType::F32, "cuda::round_to_16bit", "needs a 16-bit type (bf16 or fp16)");
  if (n == 0) return;
  if (t == DType::BF16)
    VIDLORA_LAUNCH(vidlora::cuda::grid_size(n, 256), 256, 0, stream, detail::round_to_16bit_kernel<true>)(src, dst, n);
  else
    VIDLORA_LAUNCH(vidlora::cuda::grid_size(n, 256), 256, 0, stream, detail::round_to_16bit_kernel<false>)(src, dst, n);
  VIDLORA_CUDA_CHECK_LAUNCH("cuda::round_to_16bit");
}

}  // namespace vidlora::io::cuda
#endif
