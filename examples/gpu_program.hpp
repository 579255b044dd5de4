#pragma once
// What the GPU preset builds of the programs share (train_captioner with VIDLORA_TRAIN_ON_CUDA, caption with
// VIDLORA_CAPTION_ON_CUDA; both CUDA translation units): the GPU that runs, checked against the binary's architectures
// and the memory cap, and the vision tower on the device, which encodes every clip up front into the feature cache and
// is then released so that it never shares the card with the decoder.

#include <algorithm>
#include <cstdio>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include <vidlora/core/cuda/status.cuh>
#include <vidlora/core/error.hpp>
#include <vidlora/core/memory_stats.hpp>
#include <vidlora/model/clip_vision.hpp>
#include <vidlora/model/cuda/clip_vision.cuh>
#include <vidlora/model/frame_encoder.hpp>
#include <vidlora/presets.hpp>
#include <vidlora/train/lora_mfu.hpp>

#include "clip_features.hpp"

namespace demo {

// An error of the GPU, not of a clip (a CUDA error, the memory cap): every clip would fail the same way.
inline bool is_device_failure(const std::exception& x) {
  return dynamic_cast<const vidlora::cuda::CudaError*>(&x) != nullptr ||
         dynamic_cast<const vidlora::DeviceMemoryError*>(&x) != nullptr;
}

// The GPU that runs, before anything is encoded: a binary built for a newer GPU has no kernels it can run (said
// here, naming both `program` and the GPU); a memory cap above its free memory is a warning. Prints a line naming it
// to `out` (with what MFU is against when `mfu`). Returns its dense 16-bit peak in TFLOP/s (0 for a GPU
// train::dense_16bit_peak_tflops does not know).
template <vidlora::presets::Preset P>
double check_running_gpu(std::string_view program, const vidlora::presets::DeviceMemoryOptions& memory, std::FILE* out,
                         bool mfu) {
  int device = 0;
  cudaDeviceProp prop{};
  VIDLORA_CUDA_CHECK(cudaGetDevice(&device));
  VIDLORA_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  // The oldest architecture this binary has code for (nvcc's __CUDA_ARCH_LIST__: what CMAKE_CUDA_ARCHITECTURES built,
  // which may differ from the preset's), else the preset's: an older GPU has no kernel it can run.
#if defined(__CUDA_ARCH_LIST__)
  constexpr int built_archs[] = {__CUDA_ARCH_LIST__};
  const int oldest_built = *std::min_element(std::begin(built_archs), std::end(built_archs)) / 10;
#else
  const int oldest_built = P::cuda_arch;
#endif
  if (prop.major * 10 + prop.minor < oldest_built)
    vidlora::fail(
        "this {} is built for sm_{} and newer (the {} preset's GPU is sm_{}); this GPU, {}, is sm_{}{}: build it for "
        "this GPU (cmake --preset T4, L4, A100 or H100, or -DCMAKE_CUDA_ARCHITECTURES={}{})",
        program, oldest_built, P::name, P::cuda_arch, prop.name, prop.major, prop.minor, prop.major, prop.minor);
  std::size_t free_bytes = 0, total_bytes = 0;
  VIDLORA_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  if (const auto warning = vidlora::presets::cap_above_free_memory(vidlora::presets::memory_cap_bytes<P>(memory),
                                                                   free_bytes, total_bytes))
    fmt::print(stderr, "warning: {}\n", *warning);
  const double peak = vidlora::train::dense_16bit_peak_tflops(prop.name, prop.major, prop.minor);
  fmt::print(out, "GPU: {} (sm_{}{}, {} free of {}){}\n", prop.name, prop.major, prop.minor,
             vidlora::format_bytes(free_bytes), vidlora::format_bytes(total_bytes),
             !mfu         ? std::string()
             : peak > 0.0 ? fmt::format("; MFU against its dense 16-bit peak, {} TFLOP/s", peak)
                          : std::string("; MFU against nothing: its peak is not in train::dense_16bit_peak_tflops"));
  return peak;
}

// A device copy of a CLIP tower whose tensors come from a caching allocator of its own under the run's cap (a frame
// pass's ~20 temporaries a layer reuse the blocks of the pass before instead of a cudaMalloc / cudaFree each, and
// cudaFree waits for the whole device), uploaded at the first clip it encodes (a run whose clips are all in the
// feature cache never uploads it); release() gives the weights and the cached blocks back to the device.
class ReleasableDeviceTower {
 public:
  ReleasableDeviceTower(const vidlora::model::ClipVision& vision, vidlora::cuda::Compute compute,
                        vidlora::cuda::DType operands, std::size_t cap_bytes)
      : vision_(vision), compute_(compute), operands_(operands), cap_bytes_(cap_bytes) {}
  const vidlora::model::ClipVisionConfig& config() const { return vision_.config(); }
  vidlora::Matrix features(std::span<const float> pixels, Eigen::Index frames) const {
    std::lock_guard lock(m_);
    if (released_)
      vidlora::fail(
          "its features were not made by the GPU vision tower up front (that encoding failed, or the feature cache "
          "lost them since); the tower is released while the decoder runs");
    if (!device_) {
      allocator_ = std::make_unique<vidlora::cuda::CudaCachingAllocator>(
          vidlora::CachingAllocatorOptions{.cap_bytes = cap_bytes_});
      device_ = std::make_unique<const vidlora::model::cuda::ClipVisionCuda>(vision_, compute_, 16, nullptr,
                                                                             allocator_.get(), operands_);
    }
    return device_->features(pixels, frames);
  }
  // Once every clip is encoded: before anything else may call features().
  void release() {
    std::lock_guard lock(m_);
    device_.reset();
    allocator_.reset();
    released_ = true;
  }

 private:
  const vidlora::model::ClipVision& vision_;
  vidlora::cuda::Compute compute_;
  vidlora::cuda::DType operands_;
  std::size_t cap_bytes_;
  mutable std::mutex m_;
  bool released_ = false;
  mutable std::unique_ptr<vidlora::cuda::CudaCachingAllocator> allocator_;  // before device_: it outlives the tower
  mutable std::unique_ptr<const vidlora::model::cuda::ClipVisionCuda> device_;
};

// The vision tower that encodes the frames: a device copy of `vision` at the run's precision (bf16 or fp16 operands
// for the GPU presets, TF32 or fp32 when asked; the feature cache's ids name it, so that features of one precision are
// never read as another's), which the program runs over every clip up front and then releases, so the tower (0.6 GB
// of 16-bit weights for CLIP ViT-L/14-336, 1.2 GB in fp32, plus its activations) never shares the card with the
// decoder, as presets::MemoryEstimate counts it. A clip whose up-front encoding failed (its error is printed then) is
// not encoded again after the release (a CPU encoding would be slow for ViT-L and would store CPU features under the
// GPU tower's cache id).
// (DeviceEncoder: clip_features.hpp.)
inline DeviceEncoder device_encoder(const vidlora::model::ClipVision& vision, std::string_view precision,
                                    std::size_t cap_bytes) {
  const auto compute = precision == "tf32" ? vidlora::cuda::Compute::TF32 : vidlora::cuda::Compute::F32;
  const auto operands = precision == "bf16"   ? vidlora::cuda::DType::BF16
                        : precision == "fp16" ? vidlora::cuda::DType::F16
                                              : vidlora::cuda::DType::F32;
  auto tower = std::make_shared<ReleasableDeviceTower>(vision, compute, operands, cap_bytes);
  const std::string variant = precision == "fp32" ? std::string() : std::string(precision);
  return {std::make_shared<const vidlora::model::FrameEncoder>(tower, variant), [tower] { tower->release(); }};
}

}  // namespace demo
