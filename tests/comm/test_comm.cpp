// The communicator pieces that need no MPI: the data shards, the gradient buckets, the policies' contracts.
#include <catch2/catch.hpp>

#include <cstddef>
#include <memory>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include <vidlora/comm.hpp>

using namespace vidlora;

namespace {

// A second rank simulated: all_reduce_sum adds that rank's values (the concatenation `peer` of its tensors,
// consumed in order) and records each call's length.
struct PeerSum {
  static constexpr comm::Buffers buffers = comm::Buffers::Host;
  std::vector<float> peer;
  std::size_t cursor = 0;
  std::vector<std::size_t> calls;
  int rank() const { return 0; }
  int size() const { return 2; }
  void all_reduce_sum(std::span<float> x, std::string_view) {
    for (std::size_t i = 0; i < x.size(); ++i) x[i] += peer.at(cursor + i);
    cursor += x.size();
    calls.push_back(x.size());
  }
  void all_reduce_sum(std::span<double>, std::string_view) {}
  void broadcast(std::string&, std::string_view) {}
  std::vector<std::string> gather(const std::string& s, std::string_view) { return {s}; }
  void barrier(std::string_view) {}
};
static_assert(comm::Communicator<PeerSum>);
static_assert(!comm::Communicator<int>);

// A device-buffer communicator as comm::Nccl is one (grouped sums of device buffers, host collectives through its
// bootstrap), its buffers plain memory: each group sum adds `peer` to every element and records the group's sizes.
// Its own all_reduce_sum (device buffers) must never see the host's collectives.
struct DeviceLike {
  static constexpr comm::Buffers buffers = comm::Buffers::Device;
  struct Log {
    std::vector<std::vector<std::size_t>> groups;
    std::vector<std::string> whats;
    int own_sums = 0;
  };
  std::shared_ptr<Log> log = std::make_shared<Log>();
  PeerSum host{{10.0f}, 0, {}};
  double peer = 0.5;
  int rank() const { return 0; }
  int size() const { return 2; }
  void all_reduce_sum(std::span<float>, std::string_view) { ++log->own_sums; }
  void all_reduce_sum(std::span<double>, std::string_view) { ++log->own_sums; }
  template <class T>
  void all_reduce_sum_group(std::span<const std::span<T>> buffers, std::string_view what) {
    std::vector<std::size_t> sizes;
    for (const auto& b : buffers) {
      for (T& x : b) x += static_cast<T>(peer);
      sizes.push_back(b.size());
    }
    log->groups.push_back(sizes);
    log->whats.emplace_back(what);
  }
  PeerSum& bootstrap() { return host; }
  void broadcast(std::string& s, std::string_view w) { host.broadcast(s, w); }
  std::vector<std::string> gather(const std::string& s, std::string_view w) { return host.gather(s, w); }
  void barrier(std::string_view w) { host.barrier(w); }
};
static_assert(comm::Communicator<DeviceLike>);
static_assert(comm::DeviceGroupSum<DeviceLike>);
static_assert(!comm::DeviceGroupSum<PeerSum>);
static_assert(!comm::DeviceGroupSumAfter<DeviceLike>);

// ... that also starts its group sums after a stream's work without waiting, as comm::Nccl does: a group enqueued
// after `stream` is recorded with that stream and added only at wait(), in the order enqueued.
struct DeviceLikeAfter : DeviceLike {
  struct Pending {
    std::vector<std::span<double>> f64;
    std::vector<std::span<float>> f32;
  };
  std::shared_ptr<std::vector<Pending>> pending = std::make_shared<std::vector<Pending>>();
  std::shared_ptr<std::vector<void*>> afters = std::make_shared<std::vector<void*>>();
  std::shared_ptr<std::vector<std::string>> waits = std::make_shared<std::vector<std::string>>();
  void all_reduce_sum_group_after(std::span<const std::span<double>> b, void* after, std::string_view what) {
    pending->push_back({{b.begin(), b.end()}, {}});
    afters->push_back(after);
    log->whats.emplace_back(what);
  }
  void all_reduce_sum_group_after(std::span<const std::span<float>> b, void* after, std::string_view what) {
    pending->push_back({{}, {b.begin(), b.end()}});
    afters->push_back(after);
    log->whats.emplace_back(what);
  }
  void wait(std::string_view what) {
    for (Pending& p : *pending) {
      all_reduce_sum_group(std::span<const std::span<double>>(p.f64), "");
      all_reduce_sum_group(std::span<const std::span<float>>(p.f32), "");
    }
    pending->clear();
    waits->emplace_back(what);
  }
};
static_assert(comm::DeviceGroupSumAfter<DeviceLikeAfter>);

}  // namespace

TEST_CASE("N ranks with b clips each read, per step, the clips one rank with N·b reads", "[comm]") {
  const std::size_t total = 23;  // an epoch whose last step is partial
  for (int ranks : {1, 2, 3, 4}) {
    for (std::size_t per_rank : {1u, 2u, 5u}) {
      const std::size_t steps = (total + per_rank * ranks - 1) / (per_rank * ranks);
      std::vector<std::size_t> seen;
      for (std::size_t k = 0; k < steps; ++k) {
        const comm::IndexRange whole = comm::step_shard(k, per_rank * static_cast<std::size_t>(ranks), 0, 1, total);
        std::vector<std::size_t> step;
        for (int r = 0; r < ranks; ++r) {
          const comm::IndexRange s = comm::step_shard(k, per_rank, r, ranks, total);
          CHECK(s.size() <= per_rank);
          for (std::size_t i = s.begin; i < s.end; ++i) step.push_back(i);
        }
        std::vector<std::size_t> want(whole.size());
        std::iota(want.begin(), want.end(), whole.begin);
        CHECK(step == want);
        seen.insert(seen.end(), step.begin(), step.end());
      }
      CHECK(seen.size() == total);  // every position once per epoch
    }
  }
  // The last step of 23 positions at 2 ranks × 5: rank 0 reads 20..22, rank 1 nothing.
  CHECK(comm::step_shard(2, 5, 0, 2, 23).size() == 3);
  CHECK(comm::step_shard(2, 5, 1, 2, 23).empty());
}

TEST_CASE("evaluation clips are dealt round-robin, each to exactly one rank", "[comm]") {
  for (int ranks : {1, 2, 3})
    for (std::size_t i = 0; i < 10; ++i) {
      int owners = 0;
      for (int r = 0; r < ranks; ++r) owners += comm::owns_eval_clip(i, r, ranks) ? 1 : 0;
      CHECK(owners == 1);
    }
  CHECK(comm::owns_eval_clip(4, 1, 3));
}

TEST_CASE("gradient buckets sum the tensors in fixed-size flat buffers, a tensor spanning two buckets", "[comm]") {
  std::vector<float> a(5), b(7), c(2);  // 14 floats; buckets of 4: 4 + 4 + 4 + 2, b spans three of them
  std::iota(a.begin(), a.end(), 1.0f);
  std::iota(b.begin(), b.end(), 10.0f);
  std::iota(c.begin(), c.end(), 100.0f);
  PeerSum peer;
  for (int i = 0; i < 14; ++i) peer.peer.push_back(0.5f * static_cast<float>(i));
  comm::GradientBuckets buckets({a, b, c}, 4 * sizeof(float));
  CHECK(buckets.elements() == 14);
  CHECK(buckets.bytes() == 56);
  CHECK(buckets.bucket_count() == 4);
  buckets.all_reduce_sum(peer, "test");
  CHECK(peer.calls == std::vector<std::size_t>{4, 4, 4, 2});
  std::vector<float> flat;
  for (const auto* t : {&a, &b, &c}) flat.insert(flat.end(), t->begin(), t->end());
  for (int i = 0; i < 14; ++i) {
    const float mine = i < 5    ? 1.0f + static_cast<float>(i)
                       : i < 12 ? 10.0f + static_cast<float>(i - 5)
                                : 100.0f + static_cast<float>(i - 12);
    CHECK(flat[static_cast<std::size_t>(i)] == mine + 0.5f * static_cast<float>(i));
  }
}

TEST_CASE("one rank reduces nothing: Single, and buckets over a one-rank communicator", "[comm]") {
  std::vector<float> g{1.0f, 2.0f};
  comm::Single single;
  comm::GradientBuckets({g}).all_reduce_sum(single, "test");
  CHECK(g == std::vector<float>{1.0f, 2.0f});
  STATIC_REQUIRE(comm::Single::size() == 1);
  comm::AnyCommunicator any;  // Single
  CHECK(any.rank() == 0);
  CHECK(any.size() == 1);
  CHECK(any.gather("x", "test") == std::vector<std::string>{"x"});
  std::string s = "kept";
  any.broadcast(s, "test");
  CHECK(s == "kept");
  comm::AnyCommunicator two(PeerSum{{3.0f}, 0, {}});
  CHECK(two.size() == 2);
  std::vector<float> x{1.0f};
  two.all_reduce_sum(std::span<float>(x), "test");
  CHECK(x[0] == 4.0f);
}

TEST_CASE("device sums: a device-buffer communicator's, directly and through AnyCommunicator, none for host ones",
          "[comm]") {
  comm::Single single;
  CHECK_FALSE(comm::device_sum_of(single));
  PeerSum peer{{1.0f}, 0, {}};
  CHECK_FALSE(comm::device_sum_of(peer));
  CHECK(&comm::host_collectives(peer) == &peer);
  comm::AnyCommunicator any_host(PeerSum{{1.0f}, 0, {}});
  CHECK_FALSE(comm::device_sum_of(any_host));

  DeviceLike direct;
  CHECK(&comm::host_collectives(direct) == &direct.host);  // the host's collectives go to the bootstrap
  const comm::DeviceSum sum = comm::device_sum_of(direct);
  REQUIRE(sum);
  std::vector<double> a{1.0, 2.0, 3.0}, b{4.0};
  const std::vector<std::span<double>> group{a, std::span<double>(), b};
  sum(std::span<const std::span<double>>(group), "step 3: gradients");
  CHECK(a == std::vector<double>{1.5, 2.5, 3.5});
  CHECK(b == std::vector<double>{4.5});
  REQUIRE(direct.log->groups.size() == 1);
  CHECK(direct.log->groups[0] == std::vector<std::size_t>{3, 0, 1});
  CHECK(direct.log->whats[0] == "step 3: gradients");
  std::vector<float> f{1.0f};
  const std::vector<std::span<float>> fgroup{f};
  sum(std::span<const std::span<float>>(fgroup), "float32");
  CHECK(f[0] == 1.5f);

  // Held by AnyCommunicator: host buffers summed by the bootstrap (+10 from its peer), never by the device sums.
  DeviceLike held;
  const auto log = held.log;
  comm::AnyCommunicator any(std::move(held));
  std::vector<float> counts{1.0f};
  any.all_reduce_sum(std::span<float>(counts), "token counts");
  CHECK(counts[0] == 11.0f);
  CHECK(log->own_sums == 0);
  CHECK(any.size() == 2);
  CHECK(any.gather("x", "captions") == std::vector<std::string>{"x"});
  const comm::DeviceSum through = comm::device_sum_of(any);
  REQUIRE(through);
  std::vector<double> g{2.0};
  const std::vector<std::span<double>> ggroup{g};
  through(std::span<const std::span<double>>(ggroup), "step 1: gradients (LoRA)");
  CHECK(g[0] == 2.5);
  REQUIRE(log->groups.size() == 1);
  CHECK(log->whats[0] == "step 1: gradients (LoRA)");
}

TEST_CASE("device sums enqueued after a stream: started without waiting where the communicator can, complete at wait",
          "[comm]") {
  int stream_tag = 0;
  void* const stream = &stream_tag;  // stands for a cudaStream_t
  // A communicator without an asynchronous group sum: enqueue sums at once, wait has nothing to do.
  DeviceLike plain;
  const comm::DeviceSum now = comm::device_sum_of(plain);
  CHECK_FALSE(now.overlaps());
  std::vector<double> a{1.0, 2.0};
  const std::vector<std::span<double>> ga{a};
  now.enqueue(std::span<const std::span<double>>(ga), stream, "layer 1");
  CHECK(a == std::vector<double>{1.5, 2.5});
  now.wait("all");
  CHECK(a == std::vector<double>{1.5, 2.5});

  // One that can: nothing summed until wait, then every group once, in the order enqueued, after the given stream.
  DeviceLikeAfter after;
  const auto pending = after.pending;
  const auto afters = after.afters;
  const auto waits = after.waits;
  const auto log = after.log;
  comm::AnyCommunicator any(std::move(after));  // as train_captioner holds comm::Nccl
  const comm::DeviceSum sum = comm::device_sum_of(any);
  REQUIRE(sum);
  CHECK(sum.overlaps());
  std::vector<double> top{1.0}, bottom{2.0, 3.0};
  std::vector<float> f{4.0f};
  const std::vector<std::span<double>> g1{top}, g0{bottom};
  const std::vector<std::span<float>> gf{f};
  sum.enqueue(std::span<const std::span<double>>(g1), stream, "step 2: gradients (LoRA), layer 1");
  sum.enqueue(std::span<const std::span<double>>(g0), stream, "step 2: gradients (LoRA), layer 0");
  sum.enqueue(std::span<const std::span<float>>(gf), nullptr, "float32");
  CHECK(top == std::vector<double>{1.0});  // not yet
  CHECK(pending->size() == 3);
  CHECK(*afters == std::vector<void*>{stream, stream, nullptr});
  sum.wait("step 2: gradients (LoRA)");
  CHECK(top == std::vector<double>{1.5});
  CHECK(bottom == std::vector<double>{2.5, 3.5});
  CHECK(f == std::vector<float>{4.5f});
  CHECK(pending->empty());
  CHECK(*waits == std::vector<std::string>{"step 2: gradients (LoRA)"});
  CHECK(std::vector<std::string>(log->whats.begin(), log->whats.begin() + 2) ==
        std::vector<std::string>{"step 2: gradients (LoRA), layer 1", "step 2: gradients (LoRA), layer 0"});
  // The synchronous group sum stays what it was.
  std::vector<double> s{0.0};
  const std::vector<std::span<double>> gs{s};
  sum(std::span<const std::span<double>>(gs), "projector");
  CHECK(s == std::vector<double>{0.5});
}
