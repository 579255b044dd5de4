// A downstream user's plain C++ file on vidlora::cuda (no nvcc): the row-major -> cuBLASLt mapping and the
// runtime's device query, which reports 0 devices on a machine without a GPU or driver.
#include <vidlora/core/cuda/gemm.cuh>
#include <vidlora/core/cuda/memory.cuh>

#include <cstdio>

int main() {
  const auto problem = vidlora::cuda::linear_forward(8, 16, 4, vidlora::cuda::DType::BF16);
  const auto mapped = vidlora::cuda::to_column_major(problem);
  if (mapped.m != 4 || mapped.n != 8 || mapped.k != 16) return 1;
  std::printf("downstream cuda OK: devices %d\n", vidlora::cuda::device_count());
  return 0;
}
