// ClipGradientSum: a step's per-clip float32 gradients summed in float64 give the same float32 bits however the
// clips are ordered, grouped into ranks and cut into buckets; float32 sums of the same addends do not.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include <vidlora/comm/communicator.hpp>
#include <vidlora/core/rng.hpp>
#include <vidlora/train/clip_gradient_sum.hpp>

using namespace vidlora;

namespace {

// A second rank simulated: all_reduce_sum(double) adds that rank's float64 sums (consumed in order) and records
// each call's length.
struct PeerSum {
  static constexpr comm::Buffers buffers = comm::Buffers::Host;
  std::vector<double> peer;
  std::size_t cursor = 0;
  std::vector<std::size_t> calls;
  int rank() const { return 0; }
  int size() const { return 2; }
  void all_reduce_sum(std::span<float>, std::string_view) { FAIL("float32 reduction"); }
  void all_reduce_sum(std::span<double> x, std::string_view) {
    for (std::size_t i = 0; i < x.size(); ++i) x[i] += peer.at(cursor + i);
    cursor += x.size();
    calls.push_back(x.size());
  }
  void broadcast(std::string&, std::string_view) {}
  std::vector<std::string> gather(const std::string& s, std::string_view) { return {s}; }
  void barrier(std::string_view) {}
};
static_assert(comm::Communicator<PeerSum>);

// Four clips' gradients of two tensors (7 and 5 elements): values of mixed signs over six decades, as the
// gradients of a LoRA A whose B is near zero next to a projector's.
std::vector<std::vector<float>> clip_gradients(std::size_t n) {
  CounterRng rng(42, 0);
  std::vector<std::vector<float>> g(4, std::vector<float>(n));
  for (auto& clip : g)
    for (float& x : clip) x = static_cast<float>((rng.uniform() - 0.5) * std::pow(10.0, -6.0 * rng.uniform()));
  return g;
}

// The float32 tensors [7] and [5] as ClipGradientSum sees them, filled with one clip's gradient.
struct Tensors {
  std::vector<float> a = std::vector<float>(7), b = std::vector<float>(5);
  std::vector<std::span<float>> spans() { return {std::span<float>(a), std::span<float>(b)}; }
  void fill(const std::vector<float>& g) {
    std::copy(g.begin(), g.begin() + 7, a.begin());
    std::copy(g.begin() + 7, g.end(), b.begin());
  }
  std::vector<float> joined() const {
    std::vector<float> out(a);
    out.insert(out.end(), b.begin(), b.end());
    return out;
  }
};

// Sums the clips `order` on one rank.
std::vector<float> one_rank(const std::vector<std::vector<float>>& g, std::initializer_list<int> order) {
  Tensors t;
  train::ClipGradientSum s;
  s.reset(t.spans());
  for (int c : order) {
    t.fill(g[static_cast<std::size_t>(c)]);
    s.take();
    CHECK(t.joined() == std::vector<float>(12, 0.0f));  // zeroed for the next clip
  }
  s.store();
  return t.joined();
}

bool same_bits(const std::vector<float>& x, const std::vector<float>& y) {
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), sizeof(float) * x.size()) == 0;
}

}  // namespace

TEST_CASE("clip gradients summed in float64 round to the same float32 bits in any order or rank split", "[train]") {
  const auto g = clip_gradients(12);
  const std::vector<float> forward = one_rank(g, {0, 1, 2, 3});
  CHECK(same_bits(one_rank(g, {3, 2, 1, 0}), forward));
  CHECK(same_bits(one_rank(g, {2, 0, 3, 1}), forward));

  // The float64 reference: each element's exact sum, rounded once.
  for (std::size_t i = 0; i < 12; ++i) {
    const double exact = static_cast<double>(g[0][i]) + g[1][i] + g[2][i] + g[3][i];
    CHECK(forward[i] == static_cast<float>(exact));
  }

  // Two ranks: clips {2, 3} on the peer, {0, 1} here; buckets of 5 doubles (3 calls for 12 elements).
  std::vector<double> peer_sums(12, 0.0);
  for (int c : {2, 3})
    for (std::size_t i = 0; i < 12; ++i) peer_sums[i] += static_cast<double>(g[static_cast<std::size_t>(c)][i]);
  PeerSum peer{.peer = peer_sums, .cursor = 0, .calls = {}};
  Tensors t;
  train::ClipGradientSum s;
  s.reset(t.spans());
  REQUIRE(s.elements() == 12);
  for (int c : {1, 0}) {
    t.fill(g[static_cast<std::size_t>(c)]);
    s.take();
  }
  s.all_reduce_sum(peer, "test", 5 * sizeof(double));
  CHECK(peer.calls == std::vector<std::size_t>{5, 5, 2});
  s.store();
  CHECK(same_bits(t.joined(), forward));

  // What the float64 sums avoid: float32 sums of the same addends depend on the order.
  std::vector<float> f32_forward(12, 0.0f), f32_split(12, 0.0f);
  for (std::size_t i = 0; i < 12; ++i) {
    for (int c : {0, 1, 2, 3}) f32_forward[i] += g[static_cast<std::size_t>(c)][i];
    f32_split[i] = (g[0][i] + g[1][i]) + (g[2][i] + g[3][i]);
  }
  CHECK_FALSE(same_bits(f32_forward, f32_split));
}

TEST_CASE("ClipGradientSum on one rank reduces nothing and refuses buckets that hold no double", "[train]") {
  struct One : PeerSum {
    int size() const { return 1; }
  };
  Tensors t;
  train::ClipGradientSum s;
  s.reset(t.spans());
  t.fill(std::vector<float>(12, 0.5f));
  s.take();
  One one;
  s.all_reduce_sum(one, "test");
  CHECK(one.calls.empty());
  PeerSum two{.peer = std::vector<double>(12, 0.25), .cursor = 0, .calls = {}};
  CHECK_THROWS_WITH(s.all_reduce_sum(two, "test", 4), Catch::Contains("bucket_bytes 4 holds no double"));
  s.store();
  CHECK(t.joined() == std::vector<float>(12, 0.5f));
}

TEST_CASE("a tensor summed elsewhere (a device step's) is left to its owner, who adds into sums_of", "[train]") {
  // Tensor b is external: take() neither reads nor zeroes it; its owner adds its own float64 sums through sums_of,
  // and store() rounds both: the same bits as taking every clip here.
  const auto g = clip_gradients(12);
  const std::vector<float> all_here = one_rank(g, {0, 1, 2, 3});
  Tensors t;
  train::ClipGradientSum s;
  s.reset(t.spans(), [&t](std::span<float> x) { return x.data() == t.b.data(); });
  std::vector<double> device(5, 0.0);  // the owner's sums of b
  for (int c : {0, 1, 2, 3}) {
    t.fill(g[static_cast<std::size_t>(c)]);
    for (std::size_t i = 0; i < 5; ++i) device[i] += static_cast<double>(t.b[i]);
    s.take();
    CHECK(t.a == std::vector<float>(7, 0.0f));
    CHECK(t.b == std::vector<float>(g[static_cast<std::size_t>(c)].begin() + 7, g[static_cast<std::size_t>(c)].end()));
  }
  std::span<double> b_sums = s.sums_of(t.b.data());
  REQUIRE(b_sums.size() == 5);
  CHECK(std::all_of(b_sums.begin(), b_sums.end(), [](double v) { return v == 0.0; }));
  for (std::size_t i = 0; i < 5; ++i) b_sums[i] += device[i];
  s.store();
  CHECK(same_bits(t.joined(), all_here));
  CHECK(s.sums_of(t.a.data()).size() == 7);
  const float elsewhere = 0.0f;
  CHECK(s.sums_of(&elsewhere).empty());  // not one of its tensors
}

TEST_CASE("ClipGradientSum spreads tensors of several blocks over the threads with each element's own sum", "[train]") {
  // 150,001 and 70,000 elements: blocks of 64 Ki with a short last one. Three clips taken, then stored: each element
  // is float(double(x1) + x2 + x3), computed here one element at a time.
  CounterRng rng(7, 0);
  std::vector<std::vector<float>> clips(3, std::vector<float>(220001));
  for (auto& c : clips)
    for (float& x : c) x = static_cast<float>((rng.uniform() - 0.5) * std::pow(10.0, -4.0 * rng.uniform()));
  std::vector<float> a(150001), b(70000);
  train::ClipGradientSum s;
  s.reset({std::span<float>(a), std::span<float>(b)});
  for (const auto& c : clips) {
    std::copy(c.begin(), c.begin() + 150001, a.begin());
    std::copy(c.begin() + 150001, c.end(), b.begin());
    s.take();
    CHECK(std::all_of(a.begin(), a.end(), [](float x) { return x == 0.0f; }));
    CHECK(std::all_of(b.begin(), b.end(), [](float x) { return x == 0.0f; }));
  }
  s.store();
  std::vector<float> got(a);
  got.insert(got.end(), b.begin(), b.end());
  std::vector<float> want(got.size());
  for (std::size_t i = 0; i < want.size(); ++i)
    want[i] = static_cast<float>(static_cast<double>(clips[0][i]) + static_cast<double>(clips[1][i]) +
                                 static_cast<double>(clips[2][i]));
  CHECK(same_bits(got, want));
}
