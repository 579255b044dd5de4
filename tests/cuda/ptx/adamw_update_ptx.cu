// One kernel around optim::adamw_update, compiled to PTX with nvcc's default flags (so --fmad=true, as the GPU
// programs are built) for the test "cuda-ptx: …" (tests/cuda/CMakeLists.txt, check_rounding.cmake): its PTX must hold
// no fused multiply-add and only correctly rounded products and sums (mul.rn / add.rn: ptxas may contract a plain
// mul.f32 / add.f32 itself), or the device AdamW would not be the CPU loop's bit for bit. A machine without a GPU
// can check that.
#include <vidlora/optim/adamw_update.hpp>

__global__ void adamw_update_ptx_kernel(float* p, const float* g, float* m, float* v,
                                        vidlora::optim::AdamWStepParams s) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  vidlora::optim::adamw_update(p[i], g[i], m[i], v[i], s);
}
