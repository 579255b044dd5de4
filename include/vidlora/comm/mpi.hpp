#pragma once
// comm::Mpi: data-parallel ranks started by mpirun (or Slurm's srun), host buffers; link vidlora::mpi.
//
// Every collective is a non-blocking MPI call polled until it completes or `MpiOptions::timeout` passes: then
// CommError names the rank, the operation ("step 12 gradients") and the timeout, instead of a silent hang when
// another rank died or hangs. The program that catches it calls MpiSession::abort(), which ends every rank
// (MPI_Abort). MPI errors are returned (MPI_ERRORS_RETURN on the communicator), not fatal, and turned into
// CommError with MPI's error string.
//
// MpiSession owns MPI_Init_thread / MPI_Finalize (one per process); Mpi is a duplicate of MPI_COMM_WORLD.

#include <mpi.h>

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <vidlora/comm/communicator.hpp>

namespace vidlora::comm {

// The number of processes the launcher started, from its environment (OpenMPI's mpirun, a PMI / PMIx launcher
// such as srun --mpi=pmix), or 1 when none: a program picks Mpi when this is > 1 without initialising MPI.
inline int launched_world_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"}) {
    if (const char* v = std::getenv(name)) {
      const int n = std::atoi(v);
      if (n > 0) return n;
    }
  }
  return 1;
}

inline std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return detail::message("MPI error {}", code);
  return std::string(text, static_cast<std::size_t>(length));
}

// MPI_Init_thread (MPI_THREAD_FUNNELED: only the main thread calls MPI) and MPI_Finalize. A session destroyed
// while an exception propagates aborts every rank instead of finalizing (the others may wait in a collective).
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized) throw CommError("MpiSession: MPI is already initialised in this process");
    int provided = 0;
    if (const int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided); rc != MPI_SUCCESS)
      throw CommError(detail::message("MPI_Init_thread failed: {}", mpi_error_string(rc)));
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    exceptions_ = std::uncaught_exceptions();
  }
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  ~MpiSession() {
    if (std::uncaught_exceptions() > exceptions_ && size_ > 1) MPI_Abort(MPI_COMM_WORLD, 1);
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }

  int rank() const { return rank_; }
  int size() const { return size_; }
  // Ends every rank of the job with `code` (MPI_Abort): after an error on one rank, the others may be blocked
  // in a collective that will never complete.
  [[noreturn]] void abort(int code) const {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);  // MPI_Abort does not return; in case an implementation does
  }

 private:
  int rank_ = 0, size_ = 1, exceptions_ = 0;
};

struct MpiOptions {
  // How long a collective may wait for the other ranks. Ranks wait for the slowest one at every step (and for
  // rank 0 while it writes a checkpoint or scores an evaluation), so this must exceed the worst imbalance.
  std::chrono::duration<double> timeout = std::chrono::seconds(600);
};

class Mpi {
 public:
  static constexpr Buffers buffers = Buffers::Host;

  // A duplicate of `parent` (MPI must be initialised: MpiSession), with errors returned rather than fatal.
  explicit Mpi(MpiOptions options = {}, MPI_Comm parent = MPI_COMM_WORLD) : options_(options) {
    check(MPI_Comm_dup(parent, &comm_), "MPI_Comm_dup");
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  Mpi(const Mpi&) = delete;
  Mpi& operator=(const Mpi&) = delete;
  Mpi(Mpi&& o) noexcept
      : options_(o.options_), comm_(std::exchange(o.comm_, MPI_COMM_NULL)), rank_(o.rank_), size_(o.size_) {}
  Mpi& operator=(Mpi&& o) noexcept {
    if (this != &o) {
      release();
      options_ = o.options_;
      comm_ = std::exchange(o.comm_, MPI_COMM_NULL);
      rank_ = o.rank_;
      size_ = o.size_;
    }
    return *this;
  }
  ~Mpi() { release(); }

  int rank() const { return rank_; }
  int size() const { return size_; }
  const MpiOptions& options() const { return options_; }
  MPI_Comm handle() const { return comm_; }

  void all_reduce_sum(std::span<float> x, std::string_view what) { all_reduce(x.data(), x.size(), MPI_FLOAT, what); }
  void all_reduce_sum(std::span<double> x, std::string_view what) { all_reduce(x.data(), x.size(), MPI_DOUBLE, what); }

  void broadcast(std::string& s, std::string_view what) {
    long long n = static_cast<long long>(s.size());
    MPI_Request req = MPI_REQUEST_NULL;
    check(MPI_Ibcast(&n, 1, MPI_LONG_LONG, 0, comm_, &req), what);
    wait(req, what);
    if (n > INT_MAX) throw CommError(detail::message("{}: {} bytes to broadcast exceed MPI's int count", what, n));
    s.resize(static_cast<std::size_t>(n));
    check(MPI_Ibcast(s.data(), static_cast<int>(n), MPI_CHAR, 0, comm_, &req), what);
    wait(req, what);
  }

  std::vector<std::string> gather(const std::string& mine, std::string_view what) {
    const int n = checked_count(mine.size(), what);
    std::vector<int> sizes(rank_ == 0 ? static_cast<std::size_t>(size_) : 0);
    MPI_Request req = MPI_REQUEST_NULL;
    check(MPI_Igather(&n, 1, MPI_INT, sizes.data(), 1, MPI_INT, 0, comm_, &req), what);
    wait(req, what);
    std::vector<int> displs(sizes.size());
    long long total = 0;
    for (std::size_t r = 0; r < sizes.size(); ++r) {
      displs[r] = static_cast<int>(total);
      total += sizes[r];
      if (total > INT_MAX) throw CommError(detail::message("{}: the gathered bytes exceed MPI's int count", what));
    }
    std::string all(static_cast<std::size_t>(total), '\0');
    check(MPI_Igatherv(mine.data(), n, MPI_CHAR, all.data(), sizes.data(), displs.data(), MPI_CHAR, 0, comm_, &req),
          what);
    wait(req, what);
    std::vector<std::string> out;
    for (std::size_t r = 0; r < sizes.size(); ++r)
      out.push_back(all.substr(static_cast<std::size_t>(displs[r]), static_cast<std::size_t>(sizes[r])));
    return out;
  }

  void barrier(std::string_view what) {
    MPI_Request req = MPI_REQUEST_NULL;
    check(MPI_Ibarrier(comm_, &req), what);
    wait(req, what);
  }

 private:
  void release() noexcept {
    if (comm_ == MPI_COMM_NULL) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
    comm_ = MPI_COMM_NULL;
  }

  int checked_count(std::size_t n, std::string_view what) const {
    if (n > static_cast<std::size_t>(INT_MAX))
      throw CommError(detail::message("{}: {} elements exceed MPI's int count", what, n));
    return static_cast<int>(n);
  }

  void all_reduce(void* data, std::size_t n, MPI_Datatype type, std::string_view what) {
    int bytes = 0;
    MPI_Type_size(type, &bytes);
    constexpr std::size_t kChunk = std::size_t{1} << 30;  // elements per call, within MPI's int count
    for (std::size_t off = 0; off < n; off += kChunk) {
      const int count = static_cast<int>(std::min(kChunk, n - off));
      MPI_Request req = MPI_REQUEST_NULL;
      check(MPI_Iallreduce(MPI_IN_PLACE, static_cast<char*>(data) + off * static_cast<std::size_t>(bytes), count, type,
                           MPI_SUM, comm_, &req),
            what);
      wait(req, what);
    }
  }

  void check(int rc, std::string_view what) const {
    if (rc != MPI_SUCCESS)
      throw CommError(detail::message("rank {} of {}: {} failed: {}", rank_, size_, what, mpi_error_string(rc)));
  }

  // Polls `req` until it completes: spinning briefly (a fast collective), then yielding, then sleeping up to a
  // millisecond between tests (a rank waiting on a slow one leaves the cores to it).
  void wait(MPI_Request& req, std::string_view what) {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    const auto deadline = start + std::chrono::duration_cast<clock::duration>(options_.timeout);
    auto nap = std::chrono::microseconds(1);
    for (long polls = 0;; ++polls) {
      int done = 0;
      check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), what);
      if (done) return;
      const auto now = clock::now();
      if (now >= deadline)
        throw CommError(detail::message(
            "rank {} of {}: {} did not complete within {:g} s: another rank died, hangs or is that far behind "
            "(its own error, if any, is in its output); raise the timeout if ranks are just slow",
            rank_, size_, what, options_.timeout.count()));
      if (polls < 100) continue;
      if (polls < 1000) {
        sched_yield();
        continue;
      }
      std::this_thread::sleep_for(nap);
      nap = std::min(nap * 2, std::chrono::microseconds(1000));
    }
  }

  MpiOptions options_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
};
static_assert(Communicator<Mpi>);

}  // namespace vidlora::comm
