#pragma once
// comm::Single: one process, no communication; the Trainer's default (every operation compiles to nothing).

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <vidlora/comm/communicator.hpp>

namespace vidlora::comm {

struct Single {
  static constexpr Buffers buffers = Buffers::Host;
  static constexpr int rank() { return 0; }
  static constexpr int size() { return 1; }
  void all_reduce_sum(std::span<float>, std::string_view) {}
  void all_reduce_sum(std::span<double>, std::string_view) {}
  void broadcast(std::string&, std::string_view) {}
  std::vector<std::string> gather(const std::string& mine, std::string_view) { return {mine}; }
  void barrier(std::string_view) {}
};
static_assert(Communicator<Single>);

}  // namespace vidlora::comm
