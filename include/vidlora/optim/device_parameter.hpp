#pragma once
// optim::DeviceParameter: where a trainable tensor's value and gradient live on a device, for an optimizer that
// steps them there (optim::cuda::DeviceAdamW). A device step that keeps a tensor on the device says where
// (train::DecoderStep<Cuda>::device_parameter, model::cuda::CudaMlp2xGelu::device_parameter); host code only passes
// the pointers on, so this header needs no CUDA.

#include <cstdint>

namespace vidlora::optim {

struct DeviceParameter {
  float* value = nullptr;  // `size` floats in the host Parameter's element order (row-major [rows, cols])
  float* grad = nullptr;   // the step's gradient, `size` floats, in the same order
  std::int64_t size = 0;
};

}  // namespace vidlora::optim
