// NF4 / FP4 dequantization and the fused dequantize-GEMV against quant::Quantizer on the CPU.
#include <cstdint>

#include <catch2/catch.hpp>

#include <cuda_bf16.h>

#include <vidlora/quant/cuda/dequantize.cuh>

#include "reference/reference.hpp"
#include "support/cuda_test.cuh"

using namespace vidlora;
using vidlora::cuda::DeviceBuffer;

namespace {
struct DeviceQuantized {
  DeviceBuffer<std::uint8_t> packed, qabsmax;
  DeviceBuffer<float> absmax, nested;
  quant::cuda::Quantized4bitView view;
  DeviceQuantized(const ref::Quantized& q, std::int64_t numel, int blocksize)
      : packed(q.packed), qabsmax(q.qabsmax), absmax(q.absmax), nested(q.nested_absmax) {
    view.packed = packed.data();
    view.absmax = q.absmax.empty() ? nullptr : absmax.data();
    view.qabsmax = q.qabsmax.empty() ? nullptr : qabsmax.data();
    view.nested_absmax = q.qabsmax.empty() ? nullptr : nested.data();
    view.absmax_offset = q.absmax_offset;
    view.numel = numel;
    view.blocksize_log2 = quant::cuda::blocksize_log2(blocksize);
  }
};

template <class Format>
void check_dequantize(bool nf4, std::size_t numel, int blocksize, bool dq, std::size_t out_offset) {
  INFO("numel " << numel << " blocksize " << blocksize << " double quant " << dq << " output offset " << out_offset);
  const auto values = cuda_test::random_vector(numel, numel + 7, -4.0f, 4.0f);
  const ref::Quantized q = ref::quantize(nf4, values, blocksize, dq);
  DeviceQuantized d(q, static_cast<std::int64_t>(numel), blocksize);
  DeviceBuffer<float> out(numel + out_offset);
  cuda_test::poison(out);
  quant::cuda::dequantize_4bit<Format>(d.view, out.data() + out_offset);
  VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> got = out.download();
  got.erase(got.begin(), got.begin() + static_cast<std::ptrdiff_t>(out_offset));
  CHECK(cuda_test::bit_mismatches(got, q.dequantized) == 0);

  DeviceBuffer<__nv_bfloat16> out16(numel);
  cuda_test::poison(out16);
  quant::cuda::dequantize_4bit<Format>(d.view, out16.data());
  VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
  const auto got16 = out16.download();
  std::size_t bad = 0;
  for (std::size_t i = 0; i < numel; ++i)
    bad += __bfloat162float(got16[i]) != __bfloat162float(__float2bfloat16_rn(q.dequantized[i]));
  CHECK(bad == 0);
}
}  // namespace

TEST_CASE("cuda nf4 and fp4 dequantize are bit-exact with the CPU", "[quant]") {
  check_dequantize<quant::NF4>(true, 4096, 64, false, 0);
  check_dequantize<quant::NF4>(true, 64 * 1000 + 5, 64, true, 0);  // > 256 blocks, odd tail
  check_dequantize<quant::NF4>(true, 1 << 20, 64, true, 0);
  check_dequantize<quant::FP4>(false, 999, 128, true, 0);
  check_dequantize<quant::FP4>(false, 4096, 64, false, 1);  // unaligned output: scalar path
  check_dequantize<quant::NF4>(true, 7, 64, false, 0);
}

TEST_CASE("cuda dequantize-GEMV matches the dense product of the dequantized weight", "[quant]") {
  for (auto [rows, cols] : {std::pair<std::int64_t, std::int64_t>{4096, 4096}, {13, 130}, {1, 64}}) {
    INFO("W [" << rows << ", " << cols << "]");
    const auto w = cuda_test::random_vector(static_cast<std::size_t>(rows * cols), rows + cols);
    const auto q = ref::quantize(true, w, 64, true);
    const auto x = cuda_test::random_vector(static_cast<std::size_t>(cols), 5);
    std::vector<double> want(static_cast<std::size_t>(rows), 0.0);
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t c = 0; c < cols; ++c)
        want[static_cast<std::size_t>(r)] +=
            static_cast<double>(q.dequantized[static_cast<std::size_t>(r * cols + c)]) * x[static_cast<std::size_t>(c)];
    DeviceQuantized d(q, rows * cols, 64);
    DeviceBuffer<float> dx(x), dy(static_cast<std::size_t>(rows));
    cuda_test::poison(dy);
    quant::cuda::DequantGemvParams p{d.view, rows, cols, dx.data(), dy.data()};
    quant::cuda::dequant_gemv<quant::NF4>(p);
    VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
    CHECK(cuda_test::normwise_error(dy.download(), want) < 1e-5);
  }
}
