#pragma once
// The CUDA backend (link vidlora::cuda). Under nvcc every kernel header is available; from a plain C++
// translation unit only the host-side parts are (Params structs, shape checks, GEMM plans, launch math),
// plus the runtime wrappers (DeviceBuffer, Stream, Event, GemmRunner) when VIDLORA_CUDA_RUNTIME is defined,
// which linking vidlora::cuda does.

#include <vidlora/core/cuda/cuda_upstream.cuh>
#include <vidlora/core/cuda/float64_sum.cuh>
#include <vidlora/core/cuda/gemm.cuh>
#include <vidlora/core/cuda/launch.cuh>
#include <vidlora/core/cuda/math.cuh>
#include <vidlora/core/cuda/memory.cuh>
#include <vidlora/io/cuda/round_16bit.cuh>
#include <vidlora/core/cuda/status.cuh>
#include <vidlora/lora/cuda/lora_linear.cuh>
#include <vidlora/loss/cuda/cross_entropy.cuh>
#include <vidlora/loss/cuda/lm_head_cross_entropy.cuh>
#include <vidlora/model/cuda/attention.cuh>
#if VIDLORA_KERNELS
#include <vidlora/model/cuda/cached_decoder.cuh>  // runs kernels: nvcc only
#endif
#include <vidlora/model/cuda/decoder_model.cuh>
#include <vidlora/model/cuda/elementwise.cuh>
#include <vidlora/model/cuda/flash_attention.cuh>
#include <vidlora/model/cuda/projector.cuh>
#include <vidlora/optim/cuda/grad_unscale.cuh>
#include <vidlora/optim/cuda/multi_tensor.cuh>
#include <vidlora/quant/cuda/dequantize.cuh>
