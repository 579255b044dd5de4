#pragma once
// comm::Nccl: comm::BasicNccl (comm/cuda/basic_nccl.hpp) over comm::Mpi: data-parallel ranks on GPUs, one GPU per
// rank, started and bootstrapped by MPI (mpirun / srun): rank 0's ncclUniqueId is broadcast over comm::Mpi, which also
// carries the host-side operations. Link vidlora::nccl (CUDA runtime, NCCL, MPI).

#include <vidlora/comm/communicator.hpp>
#include <vidlora/comm/cuda/basic_nccl.hpp>
#include <vidlora/comm/mpi.hpp>

namespace vidlora::comm {

using Nccl = BasicNccl<Mpi>;
static_assert(Communicator<Nccl>);

}  // namespace vidlora::comm
