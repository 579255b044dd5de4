#pragma once
// The communicator policy of data-parallel training: what the Trainer calls to combine its ranks' work.
//
// A Communicator is `size()` processes (ranks) that run the same Trainer on different shards of the data.
// Per optimizer step the Trainer sums two valid-token / clip counts before the forward pass (so the loss is
// normalised by the whole step's token count, exactly as one rank with the whole batch), then the trainable
// gradients (in GradientBuckets: flat buffers in a fixed order) and a few scalars after the backward pass.
// Evaluation gathers each rank's captions on rank 0, which computes the metrics once and broadcasts them.
//
//   Single  one process, every operation a no-op (comm/single.hpp): the Trainer's default, zero cost
//   Mpi     processes started by mpirun / srun, host buffers (comm/mpi.hpp, link vidlora::mpi)
//   Nccl    GPU buffers, bootstrapped over MPI (comm/cuda/nccl.hpp, link vidlora::nccl)
//
// Every blocking operation takes `what` (e.g. "step 12 gradients") for its error message, and a
// communicator that can wait on other processes fails with CommError naming it instead of hanging.

#include <concepts>
#include <sstream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <vidlora/core/error_type.hpp>

namespace vidlora::comm {

// Where the reduced buffers live: the CPU Trainer hands host memory; comm::Nccl reduces device memory.
enum class Buffers { Host, Device };

// A collective failed or did not complete in time (a rank died, hangs or is far behind).
class CommError : public Error {
 public:
  using Error::Error;
};

namespace detail {
// `text` with each "{...}" replaced by the next argument (operator<<; "{:g}" prints as the default does): fmt-free,
// for the communicator headers that CUDA translation units include (nvcc 13 rejects fmt's consteval format
// strings, as core/error_type.hpp notes).
inline void format_into(std::ostringstream& out, std::string_view text) { out << text; }
template <class T, class... Rest>
void format_into(std::ostringstream& out, std::string_view text, const T& first, const Rest&... rest) {
  const auto open = text.find('{'), close = text.find('}', open);
  if (open == std::string_view::npos || close == std::string_view::npos) {
    out << text;
    return;
  }
  out << text.substr(0, open) << first;
  format_into(out, text.substr(close + 1), rest...);
}
template <class... Args>
std::string message(std::string_view text, const Args&... args) {
  std::ostringstream out;
  format_into(out, text, args...);
  return out.str();
}
}  // namespace detail

// rank() in [0, size()); all_reduce_sum: element-wise sum over the ranks, in place, the same result on every
// rank; broadcast: rank 0's string on every rank; gather: rank 0 receives every rank's string in rank order
// (other ranks: an empty vector); barrier: returns once every rank reached it. Every rank calls the same
// operations in the same order (they are collectives).
template <class C>
concept Communicator = requires(C& c, const C& cc, std::span<float> f, std::span<double> d, std::string& s,
                                const std::string& cs, std::string_view what) {
  { cc.rank() } -> std::convertible_to<int>;
  { cc.size() } -> std::convertible_to<int>;
  { C::buffers } -> std::convertible_to<Buffers>;
  c.all_reduce_sum(f, what);
  c.all_reduce_sum(d, what);
  c.broadcast(s, what);
  { c.gather(cs, what) } -> std::same_as<std::vector<std::string>>;
  c.barrier(what);
};

}  // namespace vidlora::comm
