// Multi-tensor AdamW (bit-exact: this file is compiled with --fmad=false) and the global grad-norm + clip
// against optim::adamw_update_range and optim::clip_grad_norm.
#include <catch2/catch.hpp>

#include <vidlora/optim/cuda/multi_tensor.cuh>

#include "reference/reference.hpp"
#include "support/cuda_test.cuh"

using namespace vidlora;
using vidlora::cuda::DeviceBuffer;

namespace {
struct Tensors {
  std::vector<std::int64_t> sizes;
  std::vector<std::vector<float>> p, g, m, v;
  std::vector<DeviceBuffer<float>> dp, dg, dm, dv;
  DeviceBuffer<optim::cuda::TensorSlot> slots;
  DeviceBuffer<optim::cuda::Chunk> chunks;
  optim::cuda::MultiTensorLaunch launch;

  Tensors(std::vector<std::int64_t> s, const std::vector<optim::AdamWStepParams>& steps, std::int64_t chunk)
      : sizes(std::move(s)) {
    for (std::size_t t = 0; t < sizes.size(); ++t) {
      const auto n = static_cast<std::size_t>(sizes[t]);
      p.push_back(cuda_test::random_vector(n, 10 * t + 1));
      g.push_back(cuda_test::random_vector(n, 10 * t + 2, -0.1f, 0.1f));
      m.push_back(cuda_test::random_vector(n, 10 * t + 3, -0.01f, 0.01f));
      v.push_back(cuda_test::random_vector(n, 10 * t + 4, 0.0f, 1e-4f));
      dp.emplace_back(p.back());
      dg.emplace_back(g.back());
      dm.emplace_back(m.back());
      dv.emplace_back(v.back());
    }
    std::vector<optim::cuda::TensorSlot> host;
    for (std::size_t t = 0; t < sizes.size(); ++t)
      host.push_back({dp[t].data(), dg[t].data(), dm[t].data(), dv[t].data(), sizes[t], steps[t]});
    slots = DeviceBuffer<optim::cuda::TensorSlot>(host);
    const auto c = optim::cuda::make_chunks(sizes, chunk);
    chunks = DeviceBuffer<optim::cuda::Chunk>(c);
    launch = {slots.data(), chunks.data(), static_cast<std::int64_t>(c.size()), chunk};
  }
};
}  // namespace

TEST_CASE("cuda multi-tensor adamw is bit-exact with the CPU update over two steps", "[optim]") {
  const std::vector<optim::AdamWStepParams> steps1 = {optim::AdamWStepParams::make(1e-3, 0.01, 0.9, 0.999, 1e-8, 1),
                                                      optim::AdamWStepParams::make(1e-3, 0.0, 0.9, 0.999, 1e-8, 1),
                                                      optim::AdamWStepParams::make(2e-4, 0.1, 0.6, 0.95, 1e-6, 1)};
  Tensors t({100003, 17, 4096}, steps1, 4096);
  for (int step = 1; step <= 2; ++step) {
    if (step == 2) {  // new step scalars: re-upload the slots
      std::vector<optim::cuda::TensorSlot> host;
      for (std::size_t i = 0; i < t.sizes.size(); ++i) {
        auto s = steps1[i];
        if (i == 0) s = optim::AdamWStepParams::make(1e-3, 0.01, 0.9, 0.999, 1e-8, 2);
        host.push_back({t.dp[i].data(), t.dg[i].data(), t.dm[i].data(), t.dv[i].data(), t.sizes[i], s});
      }
      t.slots.upload(host);
    }
    optim::cuda::adamw_step(t.launch);
    VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
    for (std::size_t i = 0; i < t.sizes.size(); ++i) {
      auto s = steps1[i];
      if (step == 2 && i == 0) s = optim::AdamWStepParams::make(1e-3, 0.01, 0.9, 0.999, 1e-8, 2);
      ref::adamw(t.p[i], t.g[i], t.m[i], t.v[i], s);
      INFO("step " << step << " tensor " << i);
      CHECK(cuda_test::bit_mismatches(t.dp[i].download(), t.p[i]) == 0);
      CHECK(cuda_test::bit_mismatches(t.dm[i].download(), t.m[i]) == 0);
      CHECK(cuda_test::bit_mismatches(t.dv[i].download(), t.v[i]) == 0);
    }
  }
}

TEST_CASE("cuda global grad norm and clip match clip_grad_norm", "[optim]") {
  const auto s = optim::AdamWStepParams::make(1e-3, 0, 0.9, 0.999, 1e-8, 1);
  for (double max_norm : {0.5, 1e6}) {
    Tensors t({70001, 3, 65536 * 2 + 1}, {s, s, s}, optim::cuda::kDefaultChunk);
    DeviceBuffer<double> partial(static_cast<std::size_t>(t.launch.num_chunks)), result(2);
    cuda_test::poison(partial);
    cuda_test::poison(result);
    optim::cuda::grad_norm_clip(t.launch, max_norm, partial.data(), result.data());
    VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
    const double want = ref::clip_grad_norm(t.g, max_norm);
    const auto r = result.download();
    INFO("max_norm " << max_norm);
    CHECK(r[0] == Approx(want).epsilon(1e-12));
    for (std::size_t i = 0; i < t.sizes.size(); ++i)
      CHECK(cuda_test::elementwise_relative_error(t.dg[i].download(), t.g[i]) < 1e-6);
  }
}

TEST_CASE("cuda adamw and grad norm take the scalar path for misaligned tensors and stay exact", "[optim]") {
  // Tensors that start one float past an allocation (not 16-byte aligned): the float4 path must not be used.
  const std::int64_t n = 4099;
  const auto p0 = cuda_test::random_vector(static_cast<std::size_t>(n), 91),
             g0 = cuda_test::random_vector(static_cast<std::size_t>(n), 92, -0.1f, 0.1f),
             m0 = cuda_test::random_vector(static_cast<std::size_t>(n), 93, -0.01f, 0.01f),
             v0 = cuda_test::random_vector(static_cast<std::size_t>(n), 94, 0.0f, 1e-4f);
  auto shifted = [](const std::vector<float>& v) {
    std::vector<float> out(v.size() + 1, 0.0f);
    std::copy(v.begin(), v.end(), out.begin() + 1);
    return out;
  };
  DeviceBuffer<float> dp(shifted(p0)), dg(shifted(g0)), dm(shifted(m0)), dv(shifted(v0));
  const auto step = optim::AdamWStepParams::make(1e-3, 0.01, 0.9, 0.999, 1e-8, 3);
  const std::vector<optim::cuda::TensorSlot> host = {
      {dp.data() + 1, dg.data() + 1, dm.data() + 1, dv.data() + 1, n, step}};
  DeviceBuffer<optim::cuda::TensorSlot> slots(host);
  const auto c = optim::cuda::make_chunks({n}, 1024);
  DeviceBuffer<optim::cuda::Chunk> chunks(c);
  const optim::cuda::MultiTensorLaunch launch{slots.data(), chunks.data(), static_cast<std::int64_t>(c.size()), 1024};
  optim::cuda::adamw_step(launch);
  DeviceBuffer<double> partial(c.size()), result(2);
  optim::cuda::grad_norm_clip(launch, 0.01, partial.data(), result.data());
  VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> p = p0, g = g0, m = m0, v = v0;
  ref::adamw(p, g, m, v, step);
  std::vector<std::vector<float>> grads = {g0};
  const double want_norm = ref::clip_grad_norm(grads, 0.01);
  auto unshift = [](const std::vector<float>& v) { return std::vector<float>(v.begin() + 1, v.end()); };
  CHECK(cuda_test::bit_mismatches(unshift(dp.download()), p) == 0);
  CHECK(cuda_test::bit_mismatches(unshift(dm.download()), m) == 0);
  CHECK(cuda_test::bit_mismatches(unshift(dv.download()), v) == 0);
  CHECK(result.download()[0] == Approx(want_norm).epsilon(1e-12));
  CHECK(cuda_test::elementwise_relative_error(unshift(dg.download()), grads[0]) < 1e-6);
  CHECK(dp.download()[0] == 0.0f);  // the float before the tensor is untouched
}
