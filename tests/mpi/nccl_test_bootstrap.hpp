#pragma once
// The NCCL tests' communicator: comm::Nccl over comm::Mpi under mpiexec (vidlora::nccl), or, compiled with
// VIDLORA_NCCL_ONE_PROCESS (vidlora::nccl_core, no MPI), comm::BasicNccl over comm::Single: one process on one GPU,
// the same NCCL calls, which a machine without MPI can run. premultiply: NcclOptions::premultiply (2 makes a one-rank
// sum run NCCL's kernel, which an in-place one-rank ncclSum skips).

#include <chrono>

#include <vidlora/comm/single.hpp>

#if defined(VIDLORA_NCCL_ONE_PROCESS)
#include <vidlora/comm/cuda/basic_nccl.hpp>
#else
#include <vidlora/comm/cuda/nccl.hpp>
#endif

namespace nccl_test {

#if defined(VIDLORA_NCCL_ONE_PROCESS)
using Nccl = vidlora::comm::BasicNccl<vidlora::comm::Single>;
// Nothing to start: one process.
struct Session {
  Session(int*, char***) {}
};
inline Nccl make_nccl(double premultiply = 1.0) {
  return Nccl(vidlora::comm::Single{}, {.timeout = std::chrono::seconds(60), .premultiply = premultiply});
}
#else
using Nccl = vidlora::comm::Nccl;
using Session = vidlora::comm::MpiSession;
inline Nccl make_nccl(double premultiply = 1.0) {
  return Nccl(vidlora::comm::Mpi{}, {.timeout = std::chrono::seconds(60), .premultiply = premultiply});
}
#endif

}  // namespace nccl_test
