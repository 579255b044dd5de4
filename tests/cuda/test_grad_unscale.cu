// Multi-tensor unscale + found-inf against optim::unscale_range (the CPU path GradScaler::unscale runs):
// bit-identical gradients, found_inf set exactly when an Inf/NaN is present, wherever it sits (a float4 lane,
// a chunk's scalar tail, a misaligned tensor).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <vidlora/optim/cuda/grad_unscale.cuh>
#include <vidlora/optim/grad_scaler.hpp>  // the host state machine compiles under nvcc too

#include "support/cuda_test.cuh"

using namespace vidlora;
using vidlora::cuda::DeviceBuffer;

namespace {

struct Grads {
  std::vector<std::vector<float>> host;
  DeviceBuffer<float> storage;  // every tensor in one buffer, at the given element offsets (misalignment)
  DeviceBuffer<optim::cuda::TensorSlot> slots;
  DeviceBuffer<optim::cuda::Chunk> chunks;
  DeviceBuffer<float> found{1};
  std::vector<std::size_t> offsets;
  optim::cuda::MultiTensorLaunch launch;

  Grads(const std::vector<std::int64_t>& sizes, std::int64_t chunk, float scale, std::size_t misalign) {
    std::size_t total = 0;
    for (std::size_t t = 0; t < sizes.size(); ++t) {
      // Each tensor starts 16-byte aligned (float4 lanes), tensor 1 `misalign` elements past that (scalar path).
      offsets.push_back((total + 3) / 4 * 4 + (t == 1 ? misalign : 0));
      total = offsets.back() + static_cast<std::size_t>(sizes[t]) + 8;
      auto g = cuda_test::random_vector(static_cast<std::size_t>(sizes[t]), 40 + t, -1.0f, 1.0f);
      for (float& x : g) x *= scale;  // what a backward of the scaled loss gives
      host.push_back(std::move(g));
    }
    storage = DeviceBuffer<float>(total);
    std::vector<optim::cuda::TensorSlot> table;
    for (std::size_t t = 0; t < sizes.size(); ++t)
      table.push_back({nullptr, storage.data() + offsets[t], nullptr, nullptr, sizes[t], {}});
    slots = DeviceBuffer<optim::cuda::TensorSlot>(table);
    const auto c = optim::cuda::make_chunks(sizes, chunk);
    chunks = DeviceBuffer<optim::cuda::Chunk>(c);
    launch = {slots.data(), chunks.data(), static_cast<std::int64_t>(c.size()), chunk};
  }
  void upload() {
    for (std::size_t t = 0; t < host.size(); ++t)
      VIDLORA_CUDA_CHECK(cudaMemcpy(storage.data() + offsets[t], host[t].data(), host[t].size() * sizeof(float),
                                    cudaMemcpyHostToDevice));
    found.fill_bytes(0);
  }
  std::vector<float> download(std::size_t t) const {
    std::vector<float> out(host[t].size());
    VIDLORA_CUDA_CHECK(
        cudaMemcpy(out.data(), storage.data() + offsets[t], out.size() * sizeof(float), cudaMemcpyDeviceToHost));
    return out;
  }
};

}  // namespace

TEST_CASE("cuda unscale is bit-identical with the CPU unscale and reports Inf/NaN wherever it sits", "[optim]") {
  const float scale = 65536.0f, inv = optim::reciprocal_scale(scale);
  const std::vector<std::int64_t> sizes = {70001, 5, 4096 * 3 + 3};
  struct Poison {
    std::size_t tensor, index;
    float value;
  };
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<std::vector<Poison>> cases = {
      {},                        // clean
      {{0, 4096 * 2 + 1, inf}},  // a float4 lane inside a chunk
      {{0, 70000, -inf}},        // the first tensor's scalar tail
      {{1, 3, nan}},             // tensor 1: a float4 lane when aligned, the scalar path when misaligned
      {{2, 4096 * 3 + 2, nan}, {2, 0, inf}},
  };
  for (std::size_t misalign : {std::size_t{0}, std::size_t{1}}) {
    for (std::size_t k = 0; k < cases.size(); ++k) {
      Grads g(sizes, 4096, scale, misalign);
      for (const auto& p : cases[k]) g.host[p.tensor][p.index] = p.value;
      g.upload();
      optim::cuda::unscale_and_check(g.launch, {inv, g.found.data()});
      const bool found = optim::cuda::found_inf_to_host(g.found.data());
      bool want = false;
      for (auto& h : g.host) want |= optim::unscale_range(h.data(), h.size(), inv);
      INFO("case " << k << " misalign " << misalign);
      CHECK(found == want);
      CHECK(want == !cases[k].empty());
      for (std::size_t t = 0; t < sizes.size(); ++t) CHECK(cuda_test::bit_mismatches(g.download(t), g.host[t]) == 0);
    }
  }
}

TEST_CASE("cuda unscale leaves gradients untouched at scale 1 and accumulates found_inf across launches", "[optim]") {
  Grads a({1000}, 256, 1.0f, 0), b({333}, 256, 1.0f, 0);
  a.upload();
  b.host[0][100] = std::numeric_limits<float>::infinity();
  b.upload();
  const auto before = a.host[0];
  optim::cuda::unscale_and_check(a.launch, {1.0f, a.found.data()});
  CHECK_FALSE(optim::cuda::found_inf_to_host(a.found.data()));
  CHECK(cuda_test::bit_mismatches(a.download(0), before) == 0);
  // Two launches into one flag: set by the second, kept (never cleared by a clean launch after it).
  optim::cuda::unscale_and_check(b.launch, {1.0f, a.found.data()});
  optim::cuda::unscale_and_check(a.launch, {1.0f, a.found.data()});
  CHECK(optim::cuda::found_inf_to_host(a.found.data()));
  CHECK_THROWS_WITH(optim::cuda::unscale_and_check(a.launch, {1.0f, nullptr}), Catch::Contains("found_inf is null"));
}

TEST_CASE("cuda unscale drives the GradScaler: a skipped step backs off, a clean one counts", "[optim]") {
  optim::GradScaler scaler(optim::GradScalerOptions{.init_scale = 1024.0, .growth_interval = 2});
  Grads g({5000, 77}, 1024, scaler.scale(), 1);
  g.host[1][76] = std::numeric_limits<float>::quiet_NaN();
  g.upload();
  optim::cuda::unscale_and_check(g.launch, {scaler.inv_scale(), g.found.data()});
  scaler.record_unscaled(optim::cuda::found_inf_to_host(g.found.data()));
  CHECK_FALSE(scaler.should_step());
  auto u = scaler.update();
  CHECK(u.skipped);
  CHECK(u.scale_after == 512.0f);
  Grads clean({5000, 77}, 1024, scaler.scale(), 1);
  clean.upload();
  optim::cuda::unscale_and_check(clean.launch, {scaler.inv_scale(), clean.found.data()});
  scaler.record_unscaled(optim::cuda::found_inf_to_host(clean.found.data()));
  CHECK(scaler.should_step());
  u = scaler.update();
  CHECK_FALSE(u.skipped);
  CHECK(u.growth_tracker == 1);
  // The unscaled gradients are the true ones: |g| <= 1 (random_vector's range) after dividing by 512.
  float largest = 0.0f;
  for (std::size_t t = 0; t < 2; ++t)
    for (float x : clean.download(t)) largest = std::fmax(largest, std::fabs(x));
  CHECK(largest <= 1.0f);
  CHECK(largest > 0.5f);
}
