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
//
// Overlapped with the backward pass: enqueue(buffers, after, what) starts a group's sums once the work already
// enqueued on the CUDA stream `after` (a cudaStream_t, passed as void* so that this header needs no CUDA) is done, and
// returns at once; wait(what) completes every group enqueued. A device step enqueues each block's gradients as soon as
// its backward has written them, while the blocks below still run (train/cuda/decoder_step.cuh). A communicator offers
// that with all_reduce_sum_group_after and wait (DeviceGroupSumAfter: comm::Nccl, on a stream of its own); with only
// all_reduce_sum_group, enqueue sums at once (complete on return) and wait does nothing. Every rank must enqueue the
// same groups in the same order, as for any collective.

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

// ... that can also start a group's sums after the work on a given CUDA stream, without waiting (wait completes them).
template <class C>
concept DeviceGroupSumAfter = DeviceGroupSum<C> &&
    requires(C& c, std::span<const std::span<float>> f, std::span<const std::span<double>> d, void* stream,
             std::string_view what) {
  c.all_reduce_sum_group_after(f, stream, what);
  c.all_reduce_sum_group_after(d, stream, what);
  c.wait(what);
};

class DeviceSum {
 public:
  DeviceSum() = default;
  // Sums through `c`, which must outlive this.
  template <DeviceGroupSum C>
  explicit DeviceSum(C& c)
      : f32_([&c](std::span<const std::span<float>> b, std::string_view what) { c.all_reduce_sum_group(b, what); }),
        f64_([&c](std::span<const std::span<double>> b, std::string_view what) { c.all_reduce_sum_group(b, what); }) {
    if constexpr (DeviceGroupSumAfter<C>) {
      f32_after_ = [&c](std::span<const std::span<float>> b, void* s, std::string_view w) {
        c.all_reduce_sum_group_after(b, s, w);
      };
      f64_after_ = [&c](std::span<const std::span<double>> b, void* s, std::string_view w) {
        c.all_reduce_sum_group_after(b, s, w);
      };
      wait_ = [&c](std::string_view w) { c.wait(w); };
    }
  }

  explicit operator bool() const { return static_cast<bool>(f64_); }
  // Whether enqueue returns before the sums are done (the communicator runs them on its own stream).
  bool overlaps() const { return static_cast<bool>(wait_); }

  // Each buffer (device memory; empty ones allowed) summed over the ranks in place; complete on return. Work on the
  // buffers enqueued on any stream before the call is finished first.
  void operator()(std::span<const std::span<float>> buffers, std::string_view what) const { f32_(buffers, what); }
  void operator()(std::span<const std::span<double>> buffers, std::string_view what) const { f64_(buffers, what); }

  // The same sums, started once the work enqueued on the CUDA stream `after` so far is done; complete after wait()
  // (or on return, when !overlaps()). The buffers must not be read or written before wait() returns.
  void enqueue(std::span<const std::span<float>> buffers, void* after, std::string_view what) const {
    if (f32_after_)
      f32_after_(buffers, after, what);
    else
      f32_(buffers, what);
  }
  void enqueue(std::span<const std::span<double>> buffers, void* after, std::string_view what) const {
    if (f64_after_)
      f64_after_(buffers, after, what);
    else
      f64_(buffers, what);
  }
  // Every group enqueued so far is complete (a rank that does not take part within the communicator's timeout is an
  // error naming `what`).
  void wait(std::string_view what) const {
    if (wait_) wait_(what);
  }

 private:
  std::function<void(std::span<const std::span<float>>, std::string_view)> f32_;
  std::function<void(std::span<const std::span<double>>, std::string_view)> f64_;
  std::function<void(std::span<const std::span<float>>, void*, std::string_view)> f32_after_;
  std::function<void(std::span<const std::span<double>>, void*, std::string_view)> f64_after_;
  std::function<void(std::string_view)> wait_;
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
