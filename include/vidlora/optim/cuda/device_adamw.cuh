#pragma once
// optim::cuda::DeviceAdamW: an optim::AdamW's step run on the device, over parameters whose values and gradients
// live there (optim::DeviceParameter). It mirrors the host AdamW it was built from: the same parameters in group
// order, each group's weight decay and lr scale, the options, each parameter's step count; the moments m and v live
// on the device (from a caching allocator when given, so under the run's cap and in its memory statistics), uploaded
// from the host AdamW's state at construction and copied back by copy_state_to (checkpoints; before the host steps
// again). One step of the Trainer: unscale_overflowed (fp16 loss scaling: grad_unscale.cuh, torch's found_inf),
// clip_grad_norm (multi_tensor.cuh's global norm and scale: clip_grad_norm's rule), step (multi_tensor.cuh's AdamW:
// per element optim::adamw_update, the function the CPU loop runs, spelled so that nvcc cannot contract it: bit-exact
// with AdamW::step) and download_values (the new values into the host's matrices).
// Everything runs on the legacy default stream, as the device steps do; the calls that return a host value wait for it.

#include <vidlora/optim/cuda/grad_unscale.cuh>
#include <vidlora/optim/cuda/multi_tensor.cuh>

#include <vidlora/core/portability.hpp>

#if VIDLORA_KERNELS
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <vidlora/core/cuda/cuda_upstream.cuh>
#include <vidlora/core/cuda/memory.cuh>
#include <vidlora/core/cuda/status.cuh>
#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/optim/adamw.hpp>
#include <vidlora/optim/device_parameter.hpp>

namespace vidlora::optim::cuda {

class DeviceAdamW {
 public:
  // `device[i]` is the i-th parameter of `host` in group order (AdamW::groups()), of the host value's size. The host
  // AdamW's parameter matrices must outlive this object (download_values writes them); its state is read here once.
  DeviceAdamW(const AdamW& host, const std::vector<DeviceParameter>& device,
              vidlora::cuda::CudaCachingAllocator* allocator = nullptr, std::int64_t chunk = kDefaultChunk)
      : options_(host.options()), base_steps_(host.steps_taken()), chunk_(chunk) {
    std::vector<std::int64_t> sizes;
    std::size_t k = 0;
    for (const ParamGroup& g : host.groups()) {
      for (const Parameter& p : g.params) {
        require(k < device.size(), "DeviceAdamW: {} device tensors for more host parameters (at '{}')", device.size(),
                p.name);
        const DeviceParameter& d = device[k++];
        require(d.value != nullptr && d.grad != nullptr, "DeviceAdamW: parameter '{}' has no device {}", p.name,
                d.value == nullptr ? "value" : "gradient");
        require(d.size == static_cast<std::int64_t>(p.value->size()),
                "DeviceAdamW: parameter '{}' holds {} values on the device but is {} on the host", p.name, d.size,
                shape_string(*p.value));
        const AdamWState& s = host.state(p.name);
        Slot slot{.name = p.name,
                  .host_value = p.value,
                  .device = d,
                  .m = vidlora::cuda::DeviceBuffer<float>(allocator, static_cast<std::size_t>(d.size),
                                                          "adamw.exp_avg." + p.name),
                  .v = vidlora::cuda::DeviceBuffer<float>(allocator, static_cast<std::size_t>(d.size),
                                                          "adamw.exp_avg_sq." + p.name),
                  .steps = s.step,
                  .weight_decay = g.weight_decay,
                  .lr_scale = g.lr_scale};
        slot.m.upload(std::span<const float>(s.exp_avg.data(), static_cast<std::size_t>(d.size)));
        slot.v.upload(std::span<const float>(s.exp_avg_sq.data(), static_cast<std::size_t>(d.size)));
        sizes.push_back(d.size);
        slots_.push_back(std::move(slot));
      }
    }
    require(k == device.size(), "DeviceAdamW: {} device tensors for {} host parameters", device.size(), k);
    for (Slot& s : slots_)
      table_host_.push_back({s.device.value, s.device.grad, s.m.data(), s.v.data(), s.device.size, {}});
    table_ = vidlora::cuda::DeviceBuffer<TensorSlot>(table_host_);
    const std::vector<Chunk> chunks = make_chunks(sizes, chunk_);
    chunks_ = vidlora::cuda::DeviceBuffer<Chunk>(chunks);
    num_chunks_ = static_cast<std::int64_t>(chunks.size());
    partial_ = vidlora::cuda::DeviceBuffer<double>(static_cast<std::size_t>(num_chunks_ > 0 ? num_chunks_ : 1));
    result_ = vidlora::cuda::DeviceBuffer<double>(2);
    found_inf_ = vidlora::cuda::DeviceBuffer<float>(1);
  }

  // Every gradient × inv_scale (GradScaler::inv_scale()); whether one held Inf/NaN before (the step must be skipped).
  bool unscale_overflowed(float inv_scale) {
    found_inf_.fill_bytes(0);
    unscale_and_check(launch(), {inv_scale, found_inf_.data()});
    return found_inf_to_host(found_inf_.data());
  }

  // As optim::clip_grad_norm over the parameters: the global L2 norm (Σ g² in double); when it is finite and above
  // max_norm, every gradient × float(max_norm / (norm + 1e-6)). Returns the norm before clipping (NaN / Inf: nothing
  // was touched, as clip_grad_norm leaves such gradients for the caller to refuse).
  double clip_grad_norm(double max_norm) {
    require(std::isfinite(max_norm) && max_norm > 0.0, "DeviceAdamW: max_norm must be finite and > 0 (got {})",
            max_norm);
    if (num_chunks_ == 0) return 0.0;
    grad_norm_clip(launch(), max_norm, partial_.data(), result_.data());
    double r[2] = {0.0, 0.0};
    VIDLORA_CUDA_CHECK(cudaMemcpy(r, result_.data(), sizeof r, cudaMemcpyDeviceToHost));
    return r[0];
  }

  // One AdamW step with the scheduled learning rate (group lr = lr · lr_scale), as AdamW::step: every parameter's
  // step count + 1, its scalars computed on the host in double (AdamWStepParams::make), one launch over all.
  void step(double lr) {
    require(std::isfinite(lr) && lr >= 0.0, "DeviceAdamW: learning rate must be finite and >= 0 (got {})", lr);
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      Slot& s = slots_[i];
      s.steps += 1;
      table_host_[i].step =
          AdamWStepParams::make(lr * s.lr_scale, s.weight_decay, options_.beta1, options_.beta2, options_.eps, s.steps);
    }
    table_.upload(table_host_);
    adamw_step(launch());
    ++steps_;
  }

  // The device values into the host AdamW's parameter matrices (waits for the step).
  void download_values() const {
    for (const Slot& s : slots_)
      VIDLORA_CUDA_CHECK(cudaMemcpy(s.host_value->data(), s.device.value,
                                    static_cast<std::size_t>(s.device.size) * sizeof(float), cudaMemcpyDeviceToHost));
  }

  // The moments and step counts into `host` (the AdamW this was built from, or one of the same parameters): what a
  // checkpoint saves, and what the host's own step continues from.
  void copy_state_to(AdamW& host) const {
    for (const Slot& s : slots_) {
      AdamWState state{Matrix(s.host_value->rows(), s.host_value->cols()),
                       Matrix(s.host_value->rows(), s.host_value->cols()), s.steps};
      s.m.download(std::span<float>(state.exp_avg.data(), static_cast<std::size_t>(s.device.size)));
      s.v.download(std::span<float>(state.exp_avg_sq.data(), static_cast<std::size_t>(s.device.size)));
      host.restore_state(s.name, std::move(state));
    }
    host.set_steps_taken(base_steps_ + steps_);
  }

  // Whether this object steps exactly these device tensors (in this order).
  bool holds(const std::vector<DeviceParameter>& device) const {
    if (device.size() != slots_.size()) return false;
    for (std::size_t i = 0; i < device.size(); ++i)
      if (device[i].value != slots_[i].device.value || device[i].grad != slots_[i].device.grad ||
          device[i].size != slots_[i].device.size)
        return false;
    return true;
  }
  std::size_t parameter_count() const { return slots_.size(); }

 private:
  struct Slot {
    std::string name;
    Matrix* host_value = nullptr;
    DeviceParameter device;
    vidlora::cuda::DeviceBuffer<float> m, v;
    long steps = 0;
    double weight_decay = 0.0, lr_scale = 1.0;
  };
  MultiTensorLaunch launch() const { return {table_.data(), chunks_.data(), num_chunks_, chunk_}; }

  AdamWOptions options_;
  long base_steps_ = 0, steps_ = 0;  // the host AdamW's steps_taken() when bound; the steps taken here since
  std::int64_t chunk_ = kDefaultChunk, num_chunks_ = 0;
  std::vector<Slot> slots_;
  std::vector<TensorSlot> table_host_;
  vidlora::cuda::DeviceBuffer<TensorSlot> table_;
  vidlora::cuda::DeviceBuffer<Chunk> chunks_;
  vidlora::cuda::DeviceBuffer<double> partial_, result_;
  vidlora::cuda::DeviceBuffer<float> found_inf_;
};

}  // namespace vidlora::optim::cuda
#endif
