// expect: AnyCommunicator holds host-buffer communicators
// A communicator of device buffers without a bootstrap() communicator for the host's collectives (comm::Nccl has
// its comm::Mpi) and without grouped device sums cannot be held.
#include <span>
#include <string>
#include <vector>

#include <vidlora/comm/any_communicator.hpp>

struct DeviceSum {
  static constexpr vidlora::comm::Buffers buffers = vidlora::comm::Buffers::Device;
  int rank() const { return 0; }
  int size() const { return 1; }
  void all_reduce_sum(std::span<float>, std::string_view) {}
  void all_reduce_sum(std::span<double>, std::string_view) {}
  void broadcast(std::string&, std::string_view) {}
  std::vector<std::string> gather(const std::string& s, std::string_view) { return {s}; }
  void barrier(std::string_view) {}
};

int main() {
  vidlora::comm::AnyCommunicator c(DeviceSum{});
  return c.size();
}
