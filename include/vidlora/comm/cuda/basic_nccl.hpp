#pragma once
// comm::BasicNccl<Bootstrap>: data-parallel ranks on GPUs, one GPU per rank; all_reduce_sum and all_reduce_sum_group
// sum DEVICE buffers with NCCL on the communicator's CUDA stream (the CUDA trainer's gradients, through
// comm::DeviceSum: comm/device_sum.hpp). `Bootstrap` is the host communicator that started the ranks: rank 0's
// ncclUniqueId is broadcast over it, and it carries the host-side operations (broadcast, gather, barrier of strings).
// comm::Nccl (comm/cuda/nccl.hpp) is BasicNccl<comm::Mpi>, the ranks of mpirun / srun; BasicNccl<comm::Single> is one
// process on one GPU without MPI (the same device sums, of one rank: what a machine without MPI can test); launchers
// without MPI (torchrun-style variables) bootstrap over comm::Tcp: BasicNccl<comm::Tcp>.
// Link vidlora::nccl_core (CUDA runtime, NCCL; vidlora::nccl adds MPI).
//
// The communicator is made in NCCL's non-blocking mode (ncclConfig_t::blocking = 0): every NCCL call returns at once
// and its work (the ranks joining in ncclCommInitRankConfig, a group's connection and enqueue in ncclGroupEnd,
// ncclCommFinalize) goes on in NCCL's threads while this polls ncclCommGetAsyncError. Whatever does not finish within
// NcclOptions::timeout (a rank died, hangs alive or never started) aborts the NCCL communicator (ncclCommAbort) and
// throws CommError naming the rank, the operation and the timeout; so does an NCCL error. The constructor, every sum
// and the destructor are under the timeout (docs/distributed.md, "Faults"); NCCL_COMM_BLOCKING=1, which would override
// the mode, is refused. What NCCL itself may still hold up: ncclCommAbort of a communicator whose sums ran joins NCCL's
// proxy thread, and an init aborted before the ranks connected leaves NCCL's bootstrap root thread and sockets behind
// (the process is about to stop then).

#include <cuda_runtime.h>
#include <nccl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <vidlora/comm/communicator.hpp>
#include <vidlora/comm/cuda/local_device.hpp>

namespace vidlora::comm {

namespace detail {
inline void nccl_check(ncclResult_t rc, std::string_view what) {
  if (rc != ncclSuccess && rc != ncclInProgress)
    throw CommError(detail::message("{}: NCCL error {}: {}", what, static_cast<int>(rc), ncclGetErrorString(rc)));
}
inline void cuda_check(cudaError_t rc, std::string_view what) {
  if (rc != cudaSuccess) throw CommError(detail::message("{}: CUDA error: {}", what, cudaGetErrorString(rc)));
}
}  // namespace detail

// Rank 0 draws the id; every rank of `bootstrap` receives it.
template <Communicator Bootstrap>
ncclUniqueId nccl_unique_id_over(Bootstrap& bootstrap) {
  ncclUniqueId id{};
  std::string bytes;
  if (bootstrap.rank() == 0) {
    detail::nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    bytes.assign(reinterpret_cast<const char*>(&id), sizeof id);
  }
  bootstrap.broadcast(bytes, "the NCCL unique id");
  if (bytes.size() != sizeof id)
    throw CommError(detail::message("the NCCL unique id: {} bytes received, {} expected", bytes.size(), sizeof id));
  std::memcpy(&id, bytes.data(), sizeof id);
  return id;
}

struct NcclOptions {
  // Per operation, as MpiOptions::timeout: making the communicator (every rank joins), a sum (enqueue and completion),
  // the destructor's finalize.
  std::chrono::duration<double> timeout = std::chrono::seconds(600);
  int device = -1;  // -1: local_device()
  // Each rank's buffer times this before the sum (ncclRedOpCreatePreMulSum); 1: a plain sum (ncclSum). For tests: NCCL
  // skips an in-place sum over one rank (the identity), so a one-GPU run only tests its data path (counts, types, the
  // ordering of its stream against the caller's) with a factor whose result shows the kernel ran.
  double premultiply = 1.0;
};

template <Communicator Bootstrap>
class BasicNccl {
  static_assert(Bootstrap::buffers == Buffers::Host,
                "comm::BasicNccl: the bootstrap is a host communicator (comm::Mpi, comm::Single)");

 public:
  static constexpr Buffers buffers = Buffers::Device;
  using bootstrap_type = Bootstrap;

  // One NCCL communicator over the ranks of `bootstrap`, on this rank's GPU and a stream of its own.
  explicit BasicNccl(Bootstrap bootstrap, NcclOptions options = {})
      : bootstrap_(std::move(bootstrap)), options_(options) {
    // NCCL lets this variable override ncclConfig_t::blocking: the ranks' joining and each group's connection would
    // then wait without a limit, out of this communicator's reach.
    if (const char* b = std::getenv("NCCL_COMM_BLOCKING"); b && *b && std::string_view(b) != "0")
      throw CommError(detail::message(
          "comm::Nccl: NCCL_COMM_BLOCKING={} would put NCCL in blocking mode, where a rank that hangs or never starts "
          "keeps the others waiting without a limit; comm::Nccl polls NCCL's non-blocking mode under its timeout "
          "(--comm-timeout): unset NCCL_COMM_BLOCKING",
          b));
    device_ = local_device(options_.device);
    detail::cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    check_one_gpu_per_rank();
    if (!std::isfinite(options_.premultiply) || options_.premultiply == 0.0)
      throw CommError(
          detail::message("comm::Nccl: premultiply must be finite and not 0, got {}", options_.premultiply));
    try {  // (a constructor that throws runs no destructor: what it made so far goes here)
      detail::cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
      detail::cuda_check(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming), "cudaEventCreate");
      const ncclUniqueId id = nccl_unique_id_over(bootstrap_);
      const std::string init = "making the NCCL communicator (ncclCommInitRankConfig: every rank joins)";
      const auto deadline = deadline_from_now();
      ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
      config.blocking = 0;  // returns at once; the ranks join in NCCL's thread, polled under the timeout
      check_call(ncclCommInitRankConfig(&comm_, bootstrap_.size(), id, bootstrap_.rank(), &config), init);
      settle(init, deadline);
      if (options_.premultiply != 1.0) {
        float f = static_cast<float>(options_.premultiply);
        double d = options_.premultiply;
        call("ncclRedOpCreatePreMulSum (float)",
             ncclRedOpCreatePreMulSum(&op_float_, &f, ncclFloat, ncclScalarHostImmediate, comm_));
        call("ncclRedOpCreatePreMulSum (double)",
             ncclRedOpCreatePreMulSum(&op_double_, &d, ncclDouble, ncclScalarHostImmediate, comm_));
      }
    } catch (...) {
      abort_comm();
      release();
      throw;
    }
  }
  BasicNccl(const BasicNccl&) = delete;
  BasicNccl& operator=(const BasicNccl&) = delete;
  BasicNccl(BasicNccl&& o) noexcept
      : bootstrap_(std::move(o.bootstrap_)),
        options_(o.options_),
        device_(o.device_),
        stream_(std::exchange(o.stream_, nullptr)),
        ready_(std::exchange(o.ready_, nullptr)),
        comm_(std::exchange(o.comm_, nullptr)),
        op_float_(std::exchange(o.op_float_, ncclSum)),
        op_double_(std::exchange(o.op_double_, ncclSum)) {}
  BasicNccl& operator=(BasicNccl&&) = delete;
  ~BasicNccl() { release(); }

  int rank() const { return bootstrap_.rank(); }
  int size() const { return bootstrap_.size(); }
  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  Bootstrap& bootstrap() { return bootstrap_; }

  // x: device memory. Summed in place on stream(), which this waits for; waits for all work on the device first
  // (as the grouped sums), so a buffer written on any stream, or by a copy still landing, is complete.
  void all_reduce_sum(std::span<float> x, std::string_view what) { reduce(x.data(), x.size(), ncclFloat, what); }
  void all_reduce_sum(std::span<double> x, std::string_view what) { reduce(x.data(), x.size(), ncclDouble, what); }
  // Each buffer (device memory) summed in place, the calls grouped (ncclGroupStart / ncclGroupEnd, at most
  // kGroupOps at a time) and complete on return: a training step's gradients, one tensor each, without packing them.
  // Waits for all work on the device first, so buffers written on any stream are complete (comm::DeviceSum).
  void all_reduce_sum_group(std::span<const std::span<float>> buffers, std::string_view what) {
    reduce_group(buffers, ncclFloat, what);
  }
  void all_reduce_sum_group(std::span<const std::span<double>> buffers, std::string_view what) {
    reduce_group(buffers, ncclDouble, what);
  }
  static constexpr std::size_t kGroupOps = 256;
  // The same grouped sums, started on stream() once the work enqueued on `after` (a cudaStream_t; null: the legacy
  // default stream) so far is done, without waiting: the device goes on with the work enqueued after it (the blocks
  // below in the backward pass) while NCCL sums. wait() completes them; nothing may touch the buffers before it.
  void all_reduce_sum_group_after(std::span<const std::span<float>> buffers, void* after, std::string_view what) {
    enqueue_group(buffers, ncclFloat, static_cast<cudaStream_t>(after), what);
  }
  void all_reduce_sum_group_after(std::span<const std::span<double>> buffers, void* after, std::string_view what) {
    enqueue_group(buffers, ncclDouble, static_cast<cudaStream_t>(after), what);
  }

  // Every sum enqueued on stream() is complete (the NCCL communicator is aborted on an asynchronous NCCL error or
  // after NcclOptions::timeout, and a CommError names `what`).
  void wait(std::string_view what) {
    require_live(what);
    const auto deadline = deadline_from_now();
    settle(what, deadline);  // the last call's work is on stream_ (an empty stream_ would pass the query below)
    PollPause poll;
    while (true) {
      const cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady) detail::cuda_check(q, what);
      check_call(state(), what);  // an asynchronous NCCL error
      if (clock::now() >= deadline) timed_out(what);
      poll.pause();
    }
  }

  // Host-side operations over the bootstrap communicator.
  void broadcast(std::string& s, std::string_view what) { bootstrap_.broadcast(s, what); }
  std::vector<std::string> gather(const std::string& s, std::string_view what) { return bootstrap_.gather(s, what); }
  void barrier(std::string_view what) { bootstrap_.barrier(what); }

 private:
  using clock = std::chrono::steady_clock;
  // Between two polls: a yield for the first 200 µs (a group's enqueue in NCCL's thread takes about that, and a sleep
  // lasts at least Linux's 50 µs timer slack, on the path of every step's sums), then 50 µs sleeps.
  struct PollPause {
    clock::time_point start = clock::now();
    void pause() const {
      if (clock::now() - start < std::chrono::microseconds(200))
        std::this_thread::yield();
      else
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  };
  clock::time_point deadline_from_now() const {
    return clock::now() + std::chrono::duration_cast<clock::duration>(options_.timeout);
  }
  void require_live(std::string_view what) const {
    if (!comm_) throw CommError("comm::Nccl: " + std::string(what) + " after the communicator was aborted");
  }
  // Frees the communicator without waiting for the other ranks or for work on the device (NCCL stops it).
  void abort_comm() noexcept {
    if (comm_) ncclCommAbort(std::exchange(comm_, nullptr));
    op_float_ = op_double_ = ncclSum;  // freed with the communicator
  }
  [[noreturn]] void timed_out(std::string_view what) {
    abort_comm();
    throw CommError(
        detail::message("rank {} of {}: {} did not complete within {:g} s on GPU {}: another rank died, "
                        "hangs, did not start or is that far behind; the NCCL communicator was aborted",
                        rank(), size(), what, options_.timeout.count(), device_));
  }
  // An NCCL result other than success or in-progress aborts the communicator and throws, naming the rank and `what`.
  void check_call(ncclResult_t rc, std::string_view what) {
    if (rc == ncclSuccess || rc == ncclInProgress) return;
    abort_comm();
    detail::nccl_check(rc, detail::message("rank {} of {}: {}", rank(), size(), what));
  }
  // The communicator's state (ncclCommGetAsyncError's, or that call's own failure).
  ncclResult_t state() const {
    ncclResult_t async = ncclSuccess;
    const ncclResult_t rc = ncclCommGetAsyncError(comm_, &async);
    return rc != ncclSuccess ? rc : async;
  }
  // Non-blocking mode: a call that returned ncclInProgress goes on in NCCL's threads, and the communicator takes no
  // other call (and its stream may not hold the call's work yet) until its state leaves ncclInProgress. Polls it until
  // then; an error or the deadline aborts the communicator and throws.
  void settle(std::string_view what, clock::time_point deadline) {
    require_live(what);
    PollPause poll;
    while (true) {
      const ncclResult_t now = state();
      if (now == ncclSuccess) return;
      check_call(now, what);
      if (clock::now() >= deadline) timed_out(what);
      poll.pause();
    }
  }
  // One NCCL call outside a group: an error aborts the communicator and throws; an ncclInProgress is settled.
  void call(std::string_view what, ncclResult_t rc) {
    check_call(rc, what);
    settle(what, deadline_from_now());
  }

  // NCCL needs one GPU per rank, and two ranks on one GPU fail inside ncclCommInitRank with a terse message: every rank
  // says which GPU it took (host name and PCI bus id), and all stop with an error naming the ranks that share one.
  void check_one_gpu_per_rank() {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    char bus[32] = {};
    detail::cuda_check(cudaDeviceGetPCIBusId(bus, sizeof bus, device_), "cudaDeviceGetPCIBusId");
    // (the bus id names the GPU; a device number depends on each process's CUDA_VISIBLE_DEVICES)
    const std::string mine = std::string(host) + " GPU " + bus;
    const std::vector<std::string> all = bootstrap_.gather(mine, "the GPU of each rank");
    std::string verdict;
    for (std::size_t r = 0; r < all.size() && verdict.empty(); ++r)
      for (std::size_t q = 0; q < r && verdict.empty(); ++q)
        if (all[q] == all[r])
          verdict = detail::message(
              "comm::Nccl: ranks {} and {} share {}: NCCL needs one GPU per rank; start at most as many ranks per "
              "node as it has GPUs (CUDA_VISIBLE_DEVICES), or sum on the hosts with comm::Mpi",
              q, r, all[r]);
    bootstrap_.broadcast(verdict, "the GPU check of the ranks");
    if (!verdict.empty()) throw CommError(verdict);
  }

  template <class T>
  void reduce_group(std::span<const std::span<T>> buffers, ncclDataType_t type, std::string_view what) {
    require_live(what);
    wait(what);  // sums enqueued before (all_reduce_sum_group_after) complete under the timeout, not in the sync below
    detail::cuda_check(cudaDeviceSynchronize(), what);
    issue_group(buffers, type, what);
    wait(what);
  }
  template <class T>
  void enqueue_group(std::span<const std::span<T>> buffers, ncclDataType_t type, cudaStream_t after,
                     std::string_view what) {
    require_live(what);
    detail::cuda_check(cudaEventRecord(ready_, after), what);  // reused: stream_ waits on this record now
    detail::cuda_check(cudaStreamWaitEvent(stream_, ready_, 0), what);
    issue_group(buffers, type, what);
  }
  // ncclAllReduce of every non-empty buffer on stream_, at most kGroupOps per group; each group settled (connected to
  // the other ranks, which the first one does, and enqueued on stream_) under the timeout before the next, and before
  // this returns.
  template <class T>
  void issue_group(std::span<const std::span<T>> buffers, ncclDataType_t type, std::string_view what) {
    const auto deadline = deadline_from_now();
    for (std::size_t begin = 0; begin < buffers.size(); begin += kGroupOps) {
      const std::size_t end = std::min(buffers.size(), begin + kGroupOps);
      detail::nccl_check(ncclGroupStart(), what);
      ncclResult_t first_error = ncclSuccess;  // the group is closed whatever happens inside it
      for (std::size_t i = begin; i < end; ++i) {
        if (buffers[i].empty()) continue;
        const ncclResult_t rc =
            ncclAllReduce(buffers[i].data(), buffers[i].data(), buffers[i].size(), type, op(type), comm_, stream_);
        if (rc != ncclSuccess && rc != ncclInProgress && first_error == ncclSuccess) first_error = rc;
      }
      const ncclResult_t end_rc = ncclGroupEnd();
      check_call(first_error, what);
      check_call(end_rc, what);
      settle(what, deadline);
    }
  }

  // As reduce_group: the buffer written on any stream (or by a copy that may still be landing) is complete first.
  void reduce(void* data, std::size_t n, ncclDataType_t type, std::string_view what) {
    require_live(what);
    wait(what);
    detail::cuda_check(cudaDeviceSynchronize(), what);
    check_call(ncclAllReduce(data, data, n, type, op(type), comm_, stream_), what);
    wait(what);  // settles the call first
  }
  ncclRedOp_t op(ncclDataType_t type) const { return type == ncclDouble ? op_double_ : op_float_; }

  // A live communicator is finalized (its stream's work flushed, NCCL's threads stopped) under the timeout, then
  // destroyed; one that does not finalize in time (a sum stuck on a rank that died) is aborted instead.
  void release() noexcept {
    if (comm_) {
      if (op_float_ != ncclSum) ncclRedOpDestroy(op_float_, comm_);
      if (op_double_ != ncclSum) ncclRedOpDestroy(op_double_, comm_);
      op_float_ = op_double_ = ncclSum;
      try {
        call("freeing the NCCL communicator (ncclCommFinalize)", ncclCommFinalize(comm_));
      } catch (...) {  // aborted: comm_ is null
      }
      if (comm_) ncclCommDestroy(std::exchange(comm_, nullptr));
    }
    if (ready_) cudaEventDestroy(ready_);
    if (stream_) cudaStreamDestroy(stream_);
    comm_ = nullptr;
    ready_ = nullptr;
    stream_ = nullptr;
  }

  Bootstrap bootstrap_;
  NcclOptions options_;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr;  // all_reduce_sum_group_after: where the caller's stream stood
  ncclComm_t comm_ = nullptr;
  ncclRedOp_t op_float_ = ncclSum, op_double_ = ncclSum;  // NcclOptions::premultiply's PreMulSum, else ncclSum
};
}  // namespace vidlora::comm
