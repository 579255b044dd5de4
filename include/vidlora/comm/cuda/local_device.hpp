#pragma once
// comm::local_device: the GPU a rank of a data-parallel run takes on its node (comm::Nccl's, and a CUDA program's under
// comm::Mpi): one GPU per rank, chosen by the launcher's local rank.

#include <cuda_runtime.h>

#include <cstdlib>
#include <string>

#include <vidlora/comm/communicator.hpp>

namespace vidlora::comm {

// The GPU of this rank: `requested` when >= 0 (NcclOptions::device), else the launcher's local rank
// (OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID, SLURM_LOCALID, LOCAL_RANK) modulo the visible devices, else 0.
inline int local_device(int requested) {
  if (requested >= 0) return requested;
  int count = 0;
  if (const cudaError_t rc = cudaGetDeviceCount(&count); rc != cudaSuccess)
    throw CommError(std::string("cudaGetDeviceCount: ") + cudaGetErrorString(rc));
  if (count <= 0) throw CommError("comm::local_device: no CUDA device");
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "LOCAL_RANK"})
    if (const char* v = std::getenv(name)) return std::atoi(v) % count;
  return 0;
}

}  // namespace vidlora::comm
