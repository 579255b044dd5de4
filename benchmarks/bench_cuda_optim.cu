// Multi-tensor AdamW and global grad-norm + clip against a device-to-device copy of the same bytes
// (goal: >= 70% of copy bandwidth). AdamW moves 7 floats per parameter (p, g, m, v read; p, m, v written),
// the norm pass reads g and the clip pass reads and writes it.
// Then the Trainer's optimizer phase of one step at the H100 preset's trainable count (LLaVA-NeXT-Video-7B, LoRA
// r=64 on all seven modules + the projector: 181 M values in 452 tensors), wall time, the two ways a device run can
// take it: on the host (BM_trainer_optimizer_host: the float32 gradients copied down and added to the host's, the
// finite check, clip_grad_norm and AdamW::step on the host's cores, the values copied up) and on the device
// (BM_trainer_optimizer_device: optim::cuda::DeviceAdamW's clip and step, and the values copied down, which the
// Trainer does only when the host reads them: an upper bound of the step's cost).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <vidlora/core/matrix.hpp>
#include <vidlora/core/parallel.hpp>
#include <vidlora/optim/adamw.hpp>
#include <vidlora/optim/clip.hpp>
#include <vidlora/optim/cuda/device_adamw.cuh>
#include <vidlora/optim/cuda/multi_tensor.cuh>
#include <vidlora/optim/param_groups.hpp>

#include "cuda_bench_support.cuh"

using vidlora::cuda::DeviceBuffer;
namespace oc = vidlora::optim::cuda;

namespace {
constexpr std::int64_t kParams = std::int64_t{40} << 20;  // 40 Mi parameters (a 7B model's r=16 all-linear LoRA)

struct State {
  std::vector<std::int64_t> sizes;
  DeviceBuffer<float> p{static_cast<std::size_t>(kParams)}, g{static_cast<std::size_t>(kParams)},
      m{static_cast<std::size_t>(kParams)}, v{static_cast<std::size_t>(kParams)};
  DeviceBuffer<oc::TensorSlot> slots;
  DeviceBuffer<oc::Chunk> chunks;
  DeviceBuffer<double> partial, result{2};
  oc::MultiTensorLaunch launch;
  State() {
    for (auto* b : {&p, &g, &m, &v}) b->fill_bytes(0);
    // 448 tensors of mixed sizes summing to kParams (LoRA A/B pairs of 7 modules x 32 layers).
    std::vector<oc::TensorSlot> host;
    // Each tensor starts 256-byte aligned, as a separate cudaMalloc would place it (the float4 paths need 16).
    const std::int64_t n = 448, each = kParams / n / 64 * 64;
    const auto step = vidlora::optim::AdamWStepParams::make(1e-4, 0.01, 0.9, 0.999, 1e-8, 10);
    for (std::int64_t t = 0; t < n; ++t) {
      const std::int64_t len = t + 1 == n ? kParams - each * (n - 1) : each;
      const std::int64_t off = t * each;
      host.push_back({p.data() + off, g.data() + off, m.data() + off, v.data() + off, len, step});
      sizes.push_back(len);
    }
    slots = DeviceBuffer<oc::TensorSlot>(host);
    const auto c = oc::make_chunks(sizes);
    chunks = DeviceBuffer<oc::Chunk>(c);
    partial = DeviceBuffer<double>(c.size());
    launch = {slots.data(), chunks.data(), static_cast<std::int64_t>(c.size()), oc::kDefaultChunk};
  }
};

void BM_copy_baseline(benchmark::State& state) {
  DeviceBuffer<float> src(static_cast<std::size_t>(kParams)), dst(static_cast<std::size_t>(kParams));
  cuda_bench::time_iterations(state, [&] {
    VIDLORA_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), dst.bytes(), cudaMemcpyDeviceToDevice, nullptr));
  });
  state.SetBytesProcessed(state.iterations() * kParams * 4 * 2);  // read + write
}

void BM_adamw_multi_tensor(benchmark::State& state) {
  State s;
  cuda_bench::time_iterations(state, [&] { oc::adamw_step(s.launch); });
  state.SetBytesProcessed(state.iterations() * kParams * 4 * 7);
}

void BM_grad_norm_clip(benchmark::State& state) {
  State s;
  cuda_bench::time_iterations(state, [&] { oc::grad_norm_clip(s.launch, 1e-30, s.partial.data(), s.result.data()); });
  state.SetBytesProcessed(state.iterations() * kParams * 4 *
                          3);  // norm read + clip read/write (gradients are 0: coef applied)
}

// The H100 preset's trainable tensors on LLaVA-NeXT-Video-7B, on the host (values, gradients) and on the device.
struct TrainerTensors {
  std::vector<std::string> names;
  std::vector<vidlora::Matrix> value, grad;
  std::vector<DeviceBuffer<float>> d_value, d_grad;
  std::int64_t count = 0;
  TrainerTensors() {
    const auto add = [&](std::string name, Eigen::Index rows, Eigen::Index cols) {
      names.push_back(std::move(name));
      value.push_back(vidlora::Matrix::Constant(rows, cols, 0.01f));
      grad.push_back(vidlora::Matrix::Zero(rows, cols));
      count += rows * cols;
    };
    constexpr int kLayers = 32, kRank = 64, kHidden = 4096, kInter = 11008;
    const std::pair<const char*, std::pair<int, int>> modules[] = {
        {"q_proj", {kHidden, kHidden}},  {"k_proj", {kHidden, kHidden}},   {"v_proj", {kHidden, kHidden}},
        {"o_proj", {kHidden, kHidden}},  {"gate_proj", {kHidden, kInter}}, {"up_proj", {kHidden, kInter}},
        {"down_proj", {kInter, kHidden}}};
    for (int l = 0; l < kLayers; ++l)
      for (const auto& [m, io] : modules) {
        const std::string path = "layers." + std::to_string(l) + "." + m;
        add(path + ".lora_A.weight", kRank, io.first);
        add(path + ".lora_B.weight", io.second, kRank);
      }
    add("multi_modal_projector.linear_1.weight", kHidden, 1024);
    add("multi_modal_projector.linear_1.bias", 1, kHidden);
    add("multi_modal_projector.linear_2.weight", kHidden, kHidden);
    add("multi_modal_projector.linear_2.bias", 1, kHidden);
    for (std::size_t i = 0; i < value.size(); ++i) {
      const auto n = static_cast<std::size_t>(value[i].size());
      d_value.emplace_back(std::span<const float>(value[i].data(), n));
      d_grad.emplace_back(n);
      cuda_bench::fill_uniform(d_grad.back(), static_cast<std::uint32_t>(i + 1), -1e-3f, 1e-3f);
    }
  }
  vidlora::optim::AdamW adamw() {
    std::vector<vidlora::optim::Parameter> params;
    for (std::size_t i = 0; i < value.size(); ++i) params.push_back({names[i], &value[i], &grad[i]});
    return vidlora::optim::AdamW(vidlora::optim::transformers_groups(params, 0.01));
  }
  // The device tensors in the AdamW's group order (matched by the host value each parameter names).
  std::vector<vidlora::optim::DeviceParameter> device_parameters(const vidlora::optim::AdamW& a) {
    std::vector<vidlora::optim::DeviceParameter> out;
    for (const auto& g : a.groups())
      for (const auto& p : g.params) {
        const auto i = static_cast<std::size_t>(p.value - value.data());
        out.push_back({d_value[i].data(), d_grad[i].data(), static_cast<std::int64_t>(d_value[i].size())});
      }
    return out;
  }
};

void BM_trainer_optimizer_host(benchmark::State& state) {
  TrainerTensors t;
  vidlora::optim::AdamW adamw = t.adamw();
  std::vector<float> scratch;
  for (auto _ : state) {
    for (std::size_t i = 0; i < t.grad.size(); ++i) {  // DecoderStep<Cuda>::add_lora_grads: down, then added
      scratch.resize(t.d_grad[i].size());
      t.d_grad[i].download(std::span<float>(scratch));
      float* out = t.grad[i].data();
      const auto n = static_cast<std::int64_t>(scratch.size());
      vidlora::parallel_for(std::int64_t{0}, (n + 65535) / 65536, n, [&](std::int64_t b) {
        for (std::int64_t k = b * 65536; k < std::min(n, (b + 1) * 65536); ++k) out[k] += scratch[k];
      });
    }
    bool finite = true;
    for (const auto& g : t.grad) finite = finite && vidlora::all_finite(g);
    benchmark::DoNotOptimize(finite);
    benchmark::DoNotOptimize(
        vidlora::optim::clip_grad_norm(std::span<const vidlora::optim::ParamGroup>(adamw.groups()), 1.0));
    adamw.step(1e-4);
    for (std::size_t i = 0; i < t.value.size(); ++i)  // the values up for the next step
      t.d_value[i].upload(std::span<const float>(t.value[i].data(), static_cast<std::size_t>(t.value[i].size())));
    for (auto& g : t.grad) g.setZero();  // the Trainer's zero_all_grads
  }
  state.counters["values"] = static_cast<double>(t.count);
}

void BM_trainer_optimizer_device(benchmark::State& state) {
  TrainerTensors t;
  vidlora::optim::AdamW adamw = t.adamw();
  vidlora::optim::cuda::DeviceAdamW device(adamw, t.device_parameters(adamw));
  for (auto _ : state) {
    benchmark::DoNotOptimize(device.clip_grad_norm(1.0));
    device.step(1e-4);
    device.download_values();
  }
  state.counters["values"] = static_cast<double>(t.count);
}
}  // namespace

BENCHMARK(BM_trainer_optimizer_host)->UseRealTime()->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_trainer_optimizer_device)->UseRealTime()->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_copy_baseline)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_adamw_multi_tensor)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_grad_norm_clip)->UseManualTime()->Unit(benchmark::kMicrosecond);

VIDLORA_CUDA_BENCHMARK_MAIN()
