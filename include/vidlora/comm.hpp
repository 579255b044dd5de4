#pragma once
// vidlora comm: data-parallel training's communicator policies (Single and Tcp here; Mpi in <vidlora/comm/mpi.hpp>,
// link vidlora::mpi; Nccl in <vidlora/comm/cuda/nccl.hpp>, link vidlora::nccl), the device sums a device step uses,
// gradient buckets, data shards.

#include <vidlora/comm/any_communicator.hpp>
#include <vidlora/comm/communicator.hpp>
#include <vidlora/comm/device_sum.hpp>
#include <vidlora/comm/gradient_buckets.hpp>
#include <vidlora/comm/shard.hpp>
#include <vidlora/comm/single.hpp>
#include <vidlora/comm/tcp.hpp>
