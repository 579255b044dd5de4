#pragma once
// The gradient-clipping coefficient, shared by optim::clip_grad_norm (CPU) and the multi-tensor CUDA
// clip (optim/cuda/multi_tensor.cuh). fmt-free: nvcc 13 includes this header.

#include <vidlora/core/portability.hpp>

namespace vidlora::optim {

// The coefficient torch's clip_grad_norm_ uses: max_norm / (norm + 1e-6), applied (rounded to float)
// only when it is below 1.
VIDLORA_HOST_DEVICE inline double clip_coefficient(double norm, double max_norm) { return max_norm / (norm + 1e-6); }

}  // namespace vidlora::optim
