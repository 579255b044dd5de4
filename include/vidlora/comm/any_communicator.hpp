#pragma once
// comm::AnyCommunicator: any Communicator chosen at run time (a program that runs as one process, under mpirun
// on CPUs or under mpirun on GPUs holds Single, Mpi or Nccl in the same Trainer type). One virtual call per
// collective. Its own buffers are the host's: a device-buffer communicator (comm::Nccl) is held with its host
// collectives going to its bootstrap() communicator, and its device sums offered through device_sum()
// (comm/device_sum.hpp), which the CUDA trainer's steps use for the gradients.

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <vidlora/comm/communicator.hpp>
#include <vidlora/comm/device_sum.hpp>
#include <vidlora/comm/single.hpp>

namespace vidlora::comm {

class AnyCommunicator {
 public:
  static constexpr Buffers buffers = Buffers::Host;

  AnyCommunicator() : AnyCommunicator(Single{}) {}
  template <Communicator C>
  requires(!std::is_same_v<std::remove_cvref_t<C>, AnyCommunicator>) AnyCommunicator(C c)
      : self_(std::make_unique<Model<C>>(std::move(c))) {  // NOLINT: implicit by design
    static_assert(C::buffers == Buffers::Host || DeviceGroupSum<C>,
                  "AnyCommunicator holds host-buffer communicators (Single, Mpi), or device-buffer ones (Nccl) with "
                  "all_reduce_sum_group and a bootstrap() communicator for the host's collectives");
  }

  int rank() const { return self_->rank(); }
  int size() const { return self_->size(); }
  void all_reduce_sum(std::span<float> x, std::string_view what) { self_->all_reduce_sum(x, what); }
  void all_reduce_sum(std::span<double> x, std::string_view what) { self_->all_reduce_sum(x, what); }
  void broadcast(std::string& s, std::string_view what) { self_->broadcast(s, what); }
  std::vector<std::string> gather(const std::string& s, std::string_view what) { return self_->gather(s, what); }
  void barrier(std::string_view what) { self_->barrier(what); }
  // The held communicator's device sums (a device-buffer one's), else empty.
  DeviceSum device_sum() { return self_->device_sum(); }

 private:
  struct Concept {
    virtual ~Concept() = default;
    virtual int rank() const = 0;
    virtual int size() const = 0;
    virtual void all_reduce_sum(std::span<float>, std::string_view) = 0;
    virtual void all_reduce_sum(std::span<double>, std::string_view) = 0;
    virtual void broadcast(std::string&, std::string_view) = 0;
    virtual std::vector<std::string> gather(const std::string&, std::string_view) = 0;
    virtual void barrier(std::string_view) = 0;
    virtual DeviceSum device_sum() = 0;
  };
  template <class C>
  struct Model final : Concept {
    explicit Model(C c) : c_(std::move(c)) {}
    int rank() const override { return c_.rank(); }
    int size() const override { return c_.size(); }
    void all_reduce_sum(std::span<float> x, std::string_view w) override { host_collectives(c_).all_reduce_sum(x, w); }
    void all_reduce_sum(std::span<double> x, std::string_view w) override { host_collectives(c_).all_reduce_sum(x, w); }
    void broadcast(std::string& s, std::string_view w) override { host_collectives(c_).broadcast(s, w); }
    std::vector<std::string> gather(const std::string& s, std::string_view w) override {
      return host_collectives(c_).gather(s, w);
    }
    void barrier(std::string_view w) override { host_collectives(c_).barrier(w); }
    DeviceSum device_sum() override { return device_sum_of(c_); }
    C c_;
  };
  std::unique_ptr<Concept> self_;
};
static_assert(Communicator<AnyCommunicator>);

}  // namespace vidlora::comm
