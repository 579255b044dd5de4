#pragma once
// comm::DeviceSum: what a device training step sees of a device-buffer communicator (comm::Nccl): a call that sums
// a group of buffers in device memory over the ranks, in place, complete when it returns. The CUDA trainer's steps
// (train::DecoderStep<Cuda>, model::cuda::CudaMlp2xGelu) keep a training step's gradients on the device; given a
// DeviceSum they sum them over the ranks there, before they hand them to the host, so the host never sums gradients.
// An empty DeviceSum (false) means the ranks' gradients are summed on the host (comm::Single, comm::Mpi).
//
// A communicator offers it in one of two ways (device_sum_of):
//   - a device-buffer communicator (buffers == Buffers::Device) with all_reduce_sum_group over spans of device
//     memory and a bootstrap() communicator for the host's collectives (comm::Nccl: its comm::Mpi);
//   - a communicator that chooses at run time (comm::AnyCommunicator) through device_sum().
// host_collectives(c) is the communicator that sums host buffers (the token counts, the loss): c itself, or a
// device-buffer communicator's bootstrap().

#include <concepts>
#include <functional>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>

#include <vidlora/comm/communicator.hpp>

namespace vidlora::comm {

// A device-buffer communicator the Trainer can run over: grouped sums of device buffers, host collectives elsewhere.
template <class C>
concept DeviceGroupSum = requires(C& c, std::span<const std::span<float>> f, std::span<const std::span<double>> d,
                                  std::string_view what) {
  c.all_reduce_sum_group(f, what);
  c.all_reduce_sum_group(d, what);
  requires Communicator<std::remove_cvref_t<decltype(c.bootstrap())>>;
};

class DeviceSum {
 public:
  DeviceSum() = default;
  // Sums through `c`, which must outlive this.
  template <DeviceGroupSum C>
  explicit DeviceSum(C& c)
      : f32_([&c](std::span<const std::span<float>> b, std::string_view what) { c.all_reduce_sum_group(b, what); }),
        f64_([&c](std::span<const std::span<double>> b, std::string_view what) { c.all_reduce_sum_group(b, what); }) {}

  explicit operator bool() const { return static_cast<bool>(f64_); }

  // Each buffer (device memory; empty ones allowed) summed over the ranks in place; complete on return. Work on the
  // buffers enqueued on any stream before the call is finished first.
  void operator()(std::span<const std::span<float>> buffers, std::string_view what) const { f32_(buffers, what); }
  void operator()(std::span<const std::span<double>> buffers, std::string_view what) const { f64_(buffers, what); }

 private:
  std::function<void(std::span<const std::span<float>>, std::string_view)> f32_;
  std::function<void(std::span<const std::span<double>>, std::string_view)> f64_;
};

// The device sums `c` offers: empty for a host-buffer communicator.
template <Communicator C>
DeviceSum device_sum_of(C& c) {
  if constexpr (requires {
                  { c.device_sum() } -> std::same_as<DeviceSum>;
                }) {
    return c.device_sum();
  } else if constexpr (C::buffers == Buffers::Device) {
    static_assert(DeviceGroupSum<C>,
                  "comm::device_sum_of: a device-buffer communicator needs all_reduce_sum_group (float and double "
                  "spans of device memory) and bootstrap() (a host-buffer communicator for the host's collectives)");
    return DeviceSum(c);
  } else {
    return DeviceSum{};
  }
}

// The communicator that sums host buffers: `c`, or its bootstrap() when `c` sums device buffers.
template <Communicator C>
decltype(auto) host_collectives(C& c) {
  if constexpr (C::buffers == Buffers::Device)
    return (c.bootstrap());
  else
    return (c);
}

}  // namespace vidlora::comm
