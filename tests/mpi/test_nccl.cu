// comm::Nccl on a GPU (or comm::BasicNccl<Single> without MPI: nccl_test_bootstrap.hpp): with one rank (mpiexec -np 1;
// NCCL refuses two ranks on one GPU) the sum is the
// identity, as comm::Single; with N ranks (one GPU each) rank r contributes r + 1 and every rank holds
// N(N+1)/2. Exits 77 (SKIPPED) without a CUDA device.
#include <cuda_runtime.h>

#include <cstdio>
#include <vector>

#include <vidlora/comm/single.hpp>

#include "nccl_test_bootstrap.hpp"

using namespace vidlora;

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipping the NCCL tests\n");
    return 77;
  }
  nccl_test::Session session(&argc, &argv);
  nccl_test::Nccl nccl = nccl_test::make_nccl();
  const int n = nccl.size();
  const std::size_t count = 3 * 1024 * 1024 + 7;  // 12 MiB of float: several NCCL chunks, an odd tail
  std::vector<float> host(count);
  for (std::size_t i = 0; i < count; ++i)
    host[i] = static_cast<float>((i % 1000) * 0.001) + static_cast<float>(nccl.rank());
  std::vector<float> single = host;
  comm::Single{}.all_reduce_sum(std::span<float>(single.data(), single.size()), "reference");
  float* device = nullptr;
  cudaMalloc(&device, count * sizeof(float));
  cudaMemcpy(device, host.data(), count * sizeof(float), cudaMemcpyHostToDevice);
  nccl.all_reduce_sum(std::span<float>(device, count), "test buffer");
  std::vector<float> back(count);
  cudaMemcpy(back.data(), device, count * sizeof(float), cudaMemcpyDeviceToHost);
  cudaFree(device);
  int bad = 0;
  for (std::size_t i = 0; i < count && bad < 5; ++i) {
    const float base = static_cast<float>((i % 1000) * 0.001);
    const float want = n == 1 ? single[i] : base * static_cast<float>(n) + static_cast<float>(n * (n - 1) / 2);
    if (std::abs(back[i] - want) > 1e-5f * std::max(1.0f, std::abs(want))) {
      std::printf("rank %d: element %zu is %g, expected %g\n", nccl.rank(), i, back[i], want);
      ++bad;
    }
  }
  std::string text = nccl.rank() == 0 ? "from rank 0" : "";
  nccl.broadcast(text, "test string");
  if (text != "from rank 0") ++bad;
  std::printf("rank %d of %d on GPU %d: NCCL all-reduce of %zu floats %s\n", nccl.rank(), n, nccl.device(), count,
              bad ? "WRONG" : "matches");
  return bad ? 1 : 0;
}
