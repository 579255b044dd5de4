// comm::Nccl on a GPU (or comm::BasicNccl<Single> without MPI: nccl_test_bootstrap.hpp): with N ranks (one GPU each;
// mpiexec -np 1 on one GPU, as NCCL refuses two ranks on one GPU) rank r contributes base + r and every rank holds
// f·(N·base + N(N-1)/2), for f = 1 (ncclSum: with one rank the identity, as comm::Single, and NCCL runs no kernel for
// it) and f = 2 (NcclOptions::premultiply: a PreMulSum, whose one-rank sum does run a kernel, so one GPU tests the
// data path: counts, float and double, the grouped calls, the stream ordering against the caller's copies). Then a
// communicator whose second rank never starts: the constructor stops within NcclOptions::timeout. Exits 77 (SKIPPED)
// without a CUDA device.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "nccl_test_bootstrap.hpp"

using namespace vidlora;

namespace nccl_test {
// A bootstrap of two ranks whose rank 1 never starts: this process is rank 0 and answers the host collectives alone
// (rank 0's unique id, a GPU list naming a second GPU), so ncclCommInitRankConfig waits for a peer that never joins.
struct AbsentPeer {
  static constexpr comm::Buffers buffers = comm::Buffers::Host;
  int rank() const { return 0; }
  int size() const { return 2; }
  void all_reduce_sum(std::span<float>, std::string_view) {}
  void all_reduce_sum(std::span<double>, std::string_view) {}
  void broadcast(std::string&, std::string_view) {}
  std::vector<std::string> gather(const std::string& mine, std::string_view) {
    return {mine, "rank 1 (never started)"};
  }
  void barrier(std::string_view) {}
};
static_assert(comm::Communicator<AbsentPeer>);

// The CommError of making a communicator over AbsentPeer with a 3 s timeout, or a text saying there was none.
std::string construction_error() {
  try {
    comm::BasicNccl<AbsentPeer> nccl(AbsentPeer{}, {.timeout = std::chrono::seconds(3)});
    return "(none: the communicator was made)";
  } catch (const comm::CommError& e) {
    return e.what();
  }
}

// Making the communicator with a peer that never joins stops within the timeout (non-blocking NCCL, aborted), with an
// error naming the step and the timeout; in blocking mode it waited forever. Returns the failures.
int absent_peer_times_out() {
  const auto start = std::chrono::steady_clock::now();
  const std::string error = construction_error();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const bool named = error.find("ncclCommInitRankConfig") != std::string::npos &&
                     error.find("did not complete within 3 s") != std::string::npos &&
                     error.find("rank 0 of 2") != std::string::npos;
  const bool in_time = seconds >= 3.0 && seconds < 3.0 + 30.0;  // the timeout, plus NCCL's abort
  std::printf("a peer that never joins: stopped after %.1f s (timeout 3 s) with: %s -> %s\n", seconds, error.c_str(),
              named && in_time ? "as expected" : "WRONG");
  return named && in_time ? 0 : 1;
}

// NCCL_COMM_BLOCKING=1 would override the non-blocking mode: the constructor refuses it, naming it, before it touches
// a GPU or a rank. Returns the failures.
int blocking_mode_refused() {
  ::setenv("NCCL_COMM_BLOCKING", "1", 1);
  const std::string error = construction_error();
  ::unsetenv("NCCL_COMM_BLOCKING");
  const bool named = error.find("NCCL_COMM_BLOCKING=1") != std::string::npos &&
                     error.find("unset NCCL_COMM_BLOCKING") != std::string::npos;
  std::printf("NCCL_COMM_BLOCKING=1: %s -> %s\n", error.c_str(), named ? "refused, as expected" : "WRONG");
  return named ? 0 : 1;
}
}  // namespace nccl_test

int main(int argc, char** argv) {
  // Before any CUDA call, so it runs (and can fail) on a machine without a GPU too.
  if (nccl_test::blocking_mode_refused() != 0) return 1;
  ::unsetenv("NCCL_COMM_BLOCKING");  // (it would make NCCL blocking, and the last case hang)
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipping the NCCL tests\n");
    return 77;
  }
  nccl_test::Session session(&argc, &argv);
  int bad = 0;
  for (const double factor : {1.0, 2.0}) {
    nccl_test::Nccl nccl = nccl_test::make_nccl(factor);
    const int n = nccl.size();
    const auto want_of = [&](double base) { return factor * (base * n + static_cast<double>(n * (n - 1) / 2)); };
    // One float buffer: 12 MiB, several NCCL chunks, an odd tail.
    const std::size_t count = 3 * 1024 * 1024 + 7;
    std::vector<float> host(count);
    for (std::size_t i = 0; i < count; ++i)
      host[i] = static_cast<float>((i % 1000) * 0.001) + static_cast<float>(nccl.rank());
    float* device = nullptr;
    cudaMalloc(&device, count * sizeof(float));
    cudaMemcpy(device, host.data(), count * sizeof(float), cudaMemcpyHostToDevice);
    nccl.all_reduce_sum(std::span<float>(device, count), "test buffer");
    std::vector<float> back(count);
    cudaMemcpy(back.data(), device, count * sizeof(float), cudaMemcpyDeviceToHost);
    cudaFree(device);
    int wrong = 0;
    for (std::size_t i = 0; i < count && wrong < 5; ++i) {
      const float want = static_cast<float>(want_of(static_cast<float>((i % 1000) * 0.001)));
      if (std::abs(back[i] - want) > 1e-5f * std::max(1.0f, std::abs(want))) {
        std::printf("rank %d, factor %g: float element %zu is %g, expected %g\n", nccl.rank(), factor, i, back[i],
                    want);
        ++wrong;
      }
    }
    // A group of double buffers (the float64 gradient sums' path), one of them empty.
    const std::vector<std::size_t> sizes{1000, 0, 70001};
    std::vector<double*> buffers;
    std::vector<std::span<double>> spans;
    for (const std::size_t s : sizes) {
      std::vector<double> h(s);
      for (std::size_t i = 0; i < s; ++i) h[i] = 0.25 * static_cast<double>(i % 7) + nccl.rank();
      double* d = nullptr;
      if (s) cudaMalloc(&d, s * sizeof(double));
      if (s) cudaMemcpy(d, h.data(), s * sizeof(double), cudaMemcpyHostToDevice);
      buffers.push_back(d);
      spans.emplace_back(d, s);
    }
    nccl.all_reduce_sum_group(std::span<const std::span<double>>(spans), "test group");
    for (std::size_t b = 0; b < sizes.size(); ++b) {
      std::vector<double> h(sizes[b]);
      if (sizes[b]) cudaMemcpy(h.data(), buffers[b], sizes[b] * sizeof(double), cudaMemcpyDeviceToHost);
      for (std::size_t i = 0; i < sizes[b] && wrong < 10; ++i)
        if (h[i] != want_of(0.25 * static_cast<double>(i % 7))) {
          std::printf("rank %d, factor %g: double buffer %zu element %zu is %g, expected %g\n", nccl.rank(), factor, b,
                      i, h[i], want_of(0.25 * static_cast<double>(i % 7)));
          ++wrong;
        }
      if (buffers[b]) cudaFree(buffers[b]);
    }
    std::string text = nccl.rank() == 0 ? "from rank 0" : "";
    nccl.broadcast(text, "test string");
    if (text != "from rank 0") ++wrong;
    std::printf("rank %d of %d on GPU %d, factor %g: NCCL all-reduce of %zu floats and a group of doubles %s\n",
                nccl.rank(), n, nccl.device(), factor, count, wrong ? "WRONG" : "match");
    bad += wrong;
  }
  bad += nccl_test::absent_peer_times_out();
  return bad ? 1 : 0;
}
