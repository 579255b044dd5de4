#pragma once
// DeviceOptimizer<Backend>: where the Trainer's clipping and AdamW run when a training step's gradients are final on
// its device. The preset's backend chooses it, as it chooses the decoder step (train/decoder_step.hpp):
//   DeviceOptimizer<backend::Cpu>   none (available = false): the host's optim::clip_grad_norm and optim::AdamW;
//   DeviceOptimizer<backend::Cuda>  train/cuda/device_optimizer.cuh (optim::cuda::DeviceAdamW): the step's unscale,
//                                   clip and AdamW on the GPU, the new values copied to the host when it reads them
//                                   (no gradients down and values up every step, and no pass over them on the host's
//                                   cores); this header includes it when nvcc compiles the translation unit.
// The host optim::AdamW stays the optimizer of record: its groups and options are what the device steps, and its
// state is what checkpoints save (the Trainer copies the device's moments into it first) and what the device starts
// from (the Trainer binds a device optimizer to each AdamW it builds or restores). TrainerConfig::optimizer_on_device
// turns it off; the Trainer also steps on the host whenever a trained tensor's gradient is not final on the device
// (ranks summed on the host by comm::Mpi).

#include <vidlora/core/backend.hpp>

namespace vidlora::train {

// No device optimizer for this backend (the CPU's): the Trainer clips and steps on the host.
template <backend::Backend B>
class DeviceOptimizer {
 public:
  static constexpr bool available = false;
};

}  // namespace vidlora::train

#include <vidlora/core/portability.hpp>

#if VIDLORA_KERNELS
#include <vidlora/train/cuda/device_optimizer.cuh>
#endif
