// Multi-tensor AdamW (bit-exact with the CPU loop under nvcc's default flags: the kernel spells its roundings, and the
// "cuda-ptx" test checks its PTX without a GPU) and the global grad-norm + clip
// against optim::adamw_update_range and optim::clip_grad_norm; optim::cuda::DeviceAdamW (the two over an AdamW's
// groups, its state uploaded and handed back) against optim::AdamW.
#include <cstdint>

#include <catch2/catch.hpp>

#include <vidlora/optim/adamw.hpp>
#include <vidlora/optim/clip.hpp>
#include <vidlora/optim/cuda/device_adamw.cuh>
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

// ---- optim::cuda::DeviceAdamW: an optim::AdamW's clip + step on the device (the Trainer's device optimizer).

namespace device_adamw_test {

Matrix random_matrix(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  const auto v = cuda_test::random_vector(static_cast<std::size_t>(rows * cols), seed, lo, hi);
  return Eigen::Map<const Matrix>(v.data(), rows, cols);
}
std::vector<float> flat(const Matrix& m) { return std::vector<float>(m.data(), m.data() + m.size()); }

// Three parameters in AdamW's two groups (decay 0.01; no decay at half the learning rate), one of odd size and one
// a [1, n] bias row; values and gradients per parameter.
struct Problem {
  std::vector<Matrix> value, grad;
  explicit Problem(std::uint64_t seed) {
    const std::pair<Eigen::Index, Eigen::Index> shapes[] = {{37, 129}, {1, 4097}, {64, 64}};
    for (std::size_t i = 0; i < 3; ++i) {
      value.push_back(random_matrix(shapes[i].first, shapes[i].second, seed + i));
      grad.push_back(Matrix::Zero(shapes[i].first, shapes[i].second));
    }
  }
  optim::AdamW adamw() {
    std::vector<optim::ParamGroup> groups{
        {{{"w1", &value[0], &grad[0]}, {"w2", &value[2], &grad[2]}}, 0.01, 1.0, "decay"},
        {{{"b1", &value[1], &grad[1]}}, 0.0, 0.5, "no_decay"}};
    return optim::AdamW(std::move(groups));
  }
  // Step s's gradients (the same for every Problem): small on odd steps, large (clipped at 1.0) on even ones.
  void set_gradients(int s) {
    for (std::size_t i = 0; i < grad.size(); ++i)
      grad[i] =
          random_matrix(grad[i].rows(), grad[i].cols(), 1000 + 10 * s + i, -1.0f, 1.0f) * (s % 2 == 1 ? 1e-4f : 1.0f);
  }
};

// The Problem's tensors on the device, in the AdamW's group order (w1, w2, b1).
struct OnDevice {
  std::vector<DeviceBuffer<float>> value, grad;
  explicit OnDevice(const Problem& p) {
    for (std::size_t i : {0, 2, 1}) {
      value.emplace_back(flat(p.value[i]));
      grad.emplace_back(flat(p.grad[i]));
    }
  }
  std::vector<optim::DeviceParameter> parameters() {
    std::vector<optim::DeviceParameter> out;
    for (std::size_t k = 0; k < value.size(); ++k)
      out.push_back({value[k].data(), grad[k].data(), static_cast<std::int64_t>(value[k].size())});
    return out;
  }
  void upload_gradients(const Problem& p) {
    std::size_t k = 0;
    for (std::size_t i : {0, 2, 1}) grad[k++].upload(flat(p.grad[i]));
  }
};

}  // namespace device_adamw_test

TEST_CASE("cuda DeviceAdamW clips and steps an AdamW's groups as the host does and hands its moments back", "[optim]") {
  using namespace device_adamw_test;
  Problem host(7), mirror(7);  // the host's run, and the host matrices the device run writes its values into
  optim::AdamW host_adamw = host.adamw(), mirror_adamw = mirror.adamw();
  OnDevice dev(mirror);
  optim::cuda::DeviceAdamW device(mirror_adamw, dev.parameters());
  CHECK(device.parameter_count() == 3);
  for (int s = 1; s <= 8; ++s) {
    host.set_gradients(s);
    mirror.set_gradients(s);
    dev.upload_gradients(mirror);
    const double lr = 1e-3 * s;
    const double want = optim::clip_grad_norm(std::span<const optim::ParamGroup>(host_adamw.groups()), 1.0);
    host_adamw.step(lr);
    const double got = device.clip_grad_norm(1.0);
    device.step(lr);
    device.download_values();
    INFO("step " << s << ": norm " << want);
    CHECK(got == Approx(want).epsilon(1e-12));
    CHECK((s % 2 == 1 ? want < 1.0 : want > 1.0));  // both branches of the clip
    for (std::size_t i = 0; i < 3; ++i) {
      if (s == 1)  // before any clipped step the values are bit for bit the host's
        CHECK(cuda_test::bit_mismatches(flat(mirror.value[i]), flat(host.value[i])) == 0);
      CHECK(cuda_test::normwise_error(flat(mirror.value[i]), flat(host.value[i])) <= 1e-6);
    }
  }
  // The moments and step counts back in the host AdamW, as the host's own run holds them.
  device.copy_state_to(mirror_adamw);
  CHECK(mirror_adamw.steps_taken() == host_adamw.steps_taken());
  for (const std::string name : {"w1", "w2", "b1"}) {
    INFO(name);
    CHECK(mirror_adamw.state(name).step == 8);
    CHECK(cuda_test::normwise_error(flat(mirror_adamw.state(name).exp_avg), flat(host_adamw.state(name).exp_avg)) <=
          1e-6);
    CHECK(cuda_test::normwise_error(flat(mirror_adamw.state(name).exp_avg_sq),
                                    flat(host_adamw.state(name).exp_avg_sq)) <= 1e-6);
  }
  // A device optimizer built from that state (a resume) continues as the one that wrote it: one more step each.
  Problem again = mirror;
  optim::AdamW again_adamw = again.adamw();
  device.copy_state_to(again_adamw);
  OnDevice dev2(again);
  optim::cuda::DeviceAdamW resumed(again_adamw, dev2.parameters());
  mirror.set_gradients(2);
  again.set_gradients(2);
  dev.upload_gradients(mirror);
  dev2.upload_gradients(again);
  device.step(1e-3);
  resumed.step(1e-3);
  device.download_values();
  resumed.download_values();
  for (std::size_t i = 0; i < 3; ++i)
    CHECK(cuda_test::bit_mismatches(flat(again.value[i]), flat(mirror.value[i])) == 0);
}

TEST_CASE("cuda DeviceAdamW unscales with torch's found_inf and refuses tensors that do not match", "[optim]") {
  using namespace device_adamw_test;
  Problem p(11);
  optim::AdamW adamw = p.adamw();
  p.set_gradients(2);
  OnDevice dev(p);
  optim::cuda::DeviceAdamW device(adamw, dev.parameters());
  CHECK_FALSE(device.unscale_overflowed(0.5f));
  CHECK(cuda_test::bit_mismatches(dev.grad[0].download(), flat(p.grad[0] * 0.5f)) == 0);  // × 2^-1: exact
  std::vector<float> g = flat(p.grad[1]);  // b1, the device's third tensor
  g[17] = INFINITY;
  dev.grad[2].upload(g);
  CHECK(device.unscale_overflowed(1.0f));
  CHECK(std::isinf(device.clip_grad_norm(1.0)));  // a non-finite norm: nothing clipped

  std::vector<optim::DeviceParameter> wrong = dev.parameters();
  wrong[2].size -= 1;
  CHECK_THROWS_WITH(optim::cuda::DeviceAdamW(adamw, wrong), Catch::Contains("'b1'") && Catch::Contains("4096"));
  wrong.pop_back();
  CHECK_THROWS_WITH(optim::cuda::DeviceAdamW(adamw, wrong), Catch::Contains("2 device tensors"));
  CHECK(device.holds(dev.parameters()));
  CHECK_FALSE(device.holds(wrong));
}
