#pragma once
// DeviceOptimizer<backend::Cuda> (the seam: train/device_optimizer.hpp): the Trainer's optimizer step on the GPU by
// optim::cuda::DeviceAdamW, bound to the host optim::AdamW of the stage. bind() is called before every device step and
// rebuilds the device optimizer only when the host AdamW was rebuilt or restored (its generation moved: a new stage, a
// resume) or a device tensor moved; release_into() hands the moments back before the host steps instead.

#include <vidlora/core/portability.hpp>

#if !VIDLORA_KERNELS
#error "vidlora/train/cuda/device_optimizer.cuh runs kernels: compile this translation unit with nvcc (LANGUAGE CUDA)"
#endif

#include <cstdint>
#include <optional>
#include <vector>

#include <vidlora/core/backend.hpp>
#include <vidlora/core/caching_allocator.hpp>
#include <vidlora/core/cuda/cuda_upstream.cuh>
#include <vidlora/core/error.hpp>
#include <vidlora/optim/adamw.hpp>
#include <vidlora/optim/cuda/device_adamw.cuh>
#include <vidlora/optim/device_parameter.hpp>
#include <vidlora/train/device_optimizer.hpp>

namespace vidlora::train {

template <>
class DeviceOptimizer<backend::Cuda> {
 public:
  static constexpr bool available = true;

  // Steps `host`'s parameters on the device from now: `device` in host's group order; `generation` names this AdamW
  // object and its state (the Trainer's count of builds and restores). Builds the device optimizer (uploading host's
  // moments and step counts) unless it is bound to this generation and these tensors already; when only the tensors
  // moved, the moments it holds go to `host` first, so the new one continues from them.
  void bind(optim::AdamW& host, std::uint64_t generation, const std::vector<optim::DeviceParameter>& device,
            vidlora::cuda::CudaCachingAllocator* allocator) {
    if (bound_to(generation, device)) return;
    if (adamw_ && generation_ == generation) adamw_->copy_state_to(host);
    adamw_.reset();  // the old moments back to the allocator before the new ones
    try {
      adamw_.emplace(host, device, allocator);
    } catch (const DeviceMemoryError& e) {
      fail(
          "Trainer: out of device memory for AdamW's moments on the device: {} (train_captioner --max-memory-gb sets "
          "the cap; --host-optimizer keeps them on the host)",
          e.what());
    }
    generation_ = generation;
  }
  bool bound() const { return adamw_.has_value(); }
  // Whether bind(…, generation, device, …) would keep the device optimizer it holds.
  bool bound_to(std::uint64_t generation, const std::vector<optim::DeviceParameter>& device) const {
    return adamw_ && generation_ == generation && adamw_->holds(device);
  }
  optim::cuda::DeviceAdamW& operator*() { return *adamw_; }
  optim::cuda::DeviceAdamW* operator->() { return &*adamw_; }

  // host's moments and step counts from the device (a checkpoint); nothing when unbound.
  void copy_state_to(optim::AdamW& host) const {
    if (adamw_) adamw_->copy_state_to(host);
  }
  // Before the host steps `host` itself: its state from the device, then unbound.
  void release_into(optim::AdamW& host) {
    copy_state_to(host);
    adamw_.reset();
  }
  // The host AdamW is gone or replaced (a new stage): the device state is dropped.
  void reset() { adamw_.reset(); }

 private:
  std::optional<optim::cuda::DeviceAdamW> adamw_;
  std::uint64_t generation_ = 0;
};

}  // namespace vidlora::train
