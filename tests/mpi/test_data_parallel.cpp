// Data-parallel training under mpiexec -np 2 (comm::Mpi): two ranks with batch b train exactly as one rank
// with batch 2b, and checkpoints move between rank counts. Run by tests/mpi/CMakeLists.txt; main.cpp holds
// MPI_Init and the fault programs. Built with VIDLORA_TEST_TCP (vidlora_tcp_tests), the same tests over comm::Tcp,
// the ranks started by tcp_run.sh.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <clip_features.hpp>  // examples/: demo::encode_clips_up_front
#if defined(VIDLORA_TEST_TCP)
#include <vidlora/comm/single.hpp>
#include <vidlora/comm/tcp.hpp>
#else
#include <vidlora/comm/mpi.hpp>
#endif
#include <vidlora/train/feature_cache.hpp>

#include "tiny_run.hpp"

namespace fs = std::filesystem;
using namespace vidlora;
using namespace vidlora::test;

namespace {

// The ranks' communicator: a new one per call, collectively (every rank makes the same calls in the same order).
#if defined(VIDLORA_TEST_TCP)
using World = comm::Tcp;
World make_world(double seconds) { return comm::Tcp::from_environment(std::chrono::duration<double>(seconds)); }
#else
using World = comm::Mpi;
World make_world(double seconds) { return comm::Mpi({.timeout = std::chrono::duration<double>(seconds)}); }
#endif

// The same directory on every rank (they share this machine's file system), emptied by rank 0.
fs::path fresh_dir(World& world, const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("vidlora_mpi_" + name);
  if (world.rank() == 0) fs::remove_all(dir);
  world.barrier("fresh_dir");
  return dir;
}

// `count` clips clip_0, clip_1, ... whose "videos" under dir/videos are files holding their ids (rank 0 writes them;
// the feature cache keys entries on a file's size and time), for the up-front encoding tests.
std::vector<train::Clip> stand_in_clips(World& world, const fs::path& dir, std::size_t count) {
  std::vector<train::Clip> clips(count);
  for (std::size_t i = 0; i < clips.size(); ++i) {
    clips[i].id = "clip_" + std::to_string(i);
    clips[i].video = dir / "videos" / (clips[i].id + ".mp4");
  }
  if (world.rank() == 0) {
    fs::create_directories(dir / "videos");
    for (const auto& c : clips) std::ofstream(c.video) << c.id;
  }
  world.barrier("the videos");
  return clips;
}

std::string bytes_of(const std::vector<Matrix>& tensors) {
  std::string s;
  for (const auto& m : tensors)
    s.append(reinterpret_cast<const char*>(m.data()), sizeof(float) * static_cast<std::size_t>(m.size()));
  return s;
}

void check_losses(const std::vector<double>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    INFO("step " << i + 1 << ": " << got[i] << " vs " << want[i]);
    CHECK(std::abs(got[i] - want[i]) <= 1e-6 * std::abs(want[i]));
  }
}

}  // namespace

TEST_CASE("two ranks with batch b train as one rank with batch 2b: losses, parameters, evaluations", "[equivalence]") {
  World world = make_world(120);
  REQUIRE(world.size() == 2);
  const fs::path dir = fresh_dir(world, "equivalence");
  // 10 clips, 4 a step: the third step of each epoch gives rank 0 two clips and rank 1 none; 3 val clips: 2 + 1.
  // One epoch per stage: 6 steps (3 of the projector, 3 with LoRA).
  const auto config = [&](const char* name, int batch, int accumulation, bool batch_invariant = true) {
    TrainerConfig c = tiny_config(dir / name, batch, accumulation);
    c.stages[0].epochs = c.stages[1].epochs = 1;
    c.batch_invariant = batch_invariant;
    return c;
  };
  auto parallel = make_tiny(config("parallel", 1, 2), make_world(60));
  const TrainResult p = parallel.train(tiny::clips(10), tiny::clips(3, 10));
  const auto p_params = trainable_tensors(parallel);
  CHECK(p.steps == 6);
  // The same split with each micro-batch's gradients summed in float32 (batch_invariant = false).
  auto parallel_f32 = make_tiny(config("parallel_f32", 1, 2, false), make_world(60));
  const TrainResult pf = parallel_f32.train(tiny::clips(10), tiny::clips(3, 10));
  const auto pf_params = trainable_tensors(parallel_f32);

  // Every rank holds the same parameters, bit for bit.
  const auto all = world.gather(bytes_of(p_params) + bytes_of(pf_params), "parameters");
  if (world.rank() == 0) {
    REQUIRE(all.size() == 2);
    CHECK(all[0] == all[1]);
  }

  if (world.rank() == 0) {
    // One rank with the step's 4 clips as 2 micro-batches of 2 (the doubled batch the issue names), 4 of 1 and 1
    // of 4. With batch_invariant (the default) each clip's gradient is the same float32 products wherever the
    // clip sits and the step sums them in float64 (exact here), so every split gives the ranks' parameters bit
    // for bit. Summed in float32 instead, the splits differ by rounding that AdamW's division by sqrt(v) turns
    // into parameter differences on a LoRA A whose gradient is tiny while B is near zero (1e-5 normwise here).
    auto single = make_tiny(config("single", 2, 2));
    const TrainResult s = single.train(tiny::clips(10), tiny::clips(3, 10));
    check_losses(p.losses, s.losses);
    const auto s_params = trainable_tensors(single);
    for (const auto& [batch, accumulation] : {std::pair{1, 4}, std::pair{4, 1}}) {
      INFO("1 rank, " << batch << " x " << accumulation);
      auto other = make_tiny(config("single_other", batch, accumulation));
      const TrainResult o = other.train(tiny::clips(10), tiny::clips(3, 10));
      CHECK(o.losses == s.losses);
      CHECK(bytes_of(trainable_tensors(other)) == bytes_of(s_params));
    }
    auto single_f32 = make_tiny(config("single_f32", 2, 2, false));
    const TrainResult sf = single_f32.train(tiny::clips(10), tiny::clips(3, 10));
    check_losses(pf.losses, sf.losses);
    const double d = normwise_difference(p_params, s_params);
    const double df = normwise_difference(pf_params, trainable_tensors(single_f32));
    fmt::print(
        "2 ranks x batch 1 x accumulation 2 against 1 rank x batch 2 x accumulation 2: parameters differ by {:.2e} "
        "normwise, {} (batch_invariant); {:.2e} with float32 sums per micro-batch\n",
        d, bytes_of(p_params) == bytes_of(s_params) ? "bit-identical" : "not bit-identical", df);
    CHECK(d <= 1e-6);
    CHECK(bytes_of(p_params) == bytes_of(s_params));
    CHECK(df <= 1e-4);  // float32 sums: rounding, not a different training
    REQUIRE(p.evals.size() == s.evals.size());
    for (std::size_t e = 0; e < s.evals.size(); ++e) {
      CHECK(std::abs(p.evals[e].eval_loss - s.evals[e].eval_loss) <= 1e-6 * std::abs(s.evals[e].eval_loss));
      CHECK(p.evals[e].captions == s.evals[e].captions);  // gathered in clip order
      CHECK(p.evals[e].clip_index == s.evals[e].clip_index);
      CHECK(p.evals[e].metrics.meteor == Approx(s.evals[e].metrics.meteor).margin(1e-12));
    }
    // Rank 0 wrote the outputs and the log.
    CHECK(fs::exists(dir / "parallel" / "adapter" / "adapter_model.safetensors"));
    CHECK(fs::exists(dir / "parallel" / "checkpoints" / "last.safetensors"));
    CHECK(fs::exists(dir / "parallel" / "train_log.jsonl"));
  } else {
    CHECK(p.evals.size() == 2);  // rank 0's evaluations, broadcast
  }
  world.barrier("end of the equivalence test");
}

TEST_CASE("with batch_invariant, LoRA dropout masks do not depend on the split either", "[equivalence]") {
  World world = make_world(120);
  REQUIRE(world.size() == 2);
  const fs::path dir = fresh_dir(world, "dropout");
  const auto config = [&](const char* name, int batch, int accumulation) {
    TrainerConfig c = tiny_config(dir / name, batch, accumulation);
    c.stages[0].epochs = 0;  // stage 2 only: LoRA in every step
    c.stages[1].epochs = 1;
    c.lora_dropout = 0.25;
    return c;
  };
  auto parallel = make_tiny(config("parallel", 1, 2), make_world(60));
  const TrainResult p = parallel.train(tiny::clips(10), {});
  const auto p_params = trainable_tensors(parallel);
  if (world.rank() == 0) {
    auto single = make_tiny(config("single", 2, 2));
    const TrainResult s = single.train(tiny::clips(10), {});
    check_losses(p.losses, s.losses);
    CHECK(bytes_of(p_params) == bytes_of(trainable_tensors(single)));
    // The masks are drawn: without dropout the run differs (by more than any rounding).
    auto c = config("no_dropout", 2, 2);
    c.lora_dropout = 0.0;
    auto plain = make_tiny(c);
    plain.train(tiny::clips(10), {});
    CHECK(normwise_difference(trainable_tensors(plain), p_params) > 1e-4);
  }
  world.barrier("end of the dropout test");
}

TEST_CASE("a checkpoint written by two ranks resumes on one, and one written by one resumes on two", "[resume]") {
  World world = make_world(120);
  REQUIRE(world.size() == 2);
  const fs::path dir = fresh_dir(world, "resume");
  const auto train = tiny::clips(10), val = tiny::clips(3, 10);
  std::vector<double> straight;
  std::vector<Matrix> straight_params;
  if (world.rank() == 0) {
    auto single = make_tiny(tiny_config(dir / "straight", 1, 4));
    straight = single.train(train, val).losses;
    straight_params = trainable_tensors(single);
  }
  world.barrier("the straight run");

  // 2 -> 1: two ranks stop after 5 steps (inside stage 1); one rank with the doubled batch finishes.
  auto c2 = tiny_config(dir / "two_to_one", 1, 2);
  c2.max_steps_this_run = 5;
  std::vector<double> first;
  {
    auto t = make_tiny(c2, make_world(60));
    const auto r = t.train(train, val);
    CHECK(r.status == train::TrainStatus::Interrupted);
    first = r.losses;
  }
  world.barrier("the two-rank part");
  if (world.rank() == 0) {
    auto t = make_tiny(tiny_config(dir / "two_to_one", 2, 2));
    const auto r = t.train(train, val, /*resume=*/true);
    CHECK(r.status == train::TrainStatus::Finished);
    std::vector<double> all = first;
    all.insert(all.end(), r.losses.begin(), r.losses.end());
    check_losses(all, straight);
    CHECK(normwise_difference(trainable_tensors(t), straight_params) <= 1e-6);
    CHECK(bytes_of(trainable_tensors(t)) == bytes_of(straight_params));  // batch_invariant: see the equivalence test
  }

  // 1 -> 2: one rank stops after 7 steps (inside stage 2); two ranks finish.
  first.clear();
  if (world.rank() == 0) {
    auto c1 = tiny_config(dir / "one_to_two", 1, 4);
    c1.max_steps_this_run = 7;
    auto t = make_tiny(c1);
    first = t.train(train, val).losses;
  }
  world.barrier("the one-rank part");
  auto t = make_tiny(tiny_config(dir / "one_to_two", 1, 2), make_world(60));
  const auto r = t.train(train, val, /*resume=*/true);
  CHECK(r.status == train::TrainStatus::Finished);
  if (world.rank() == 0) {
    std::vector<double> all = first;
    all.insert(all.end(), r.losses.begin(), r.losses.end());
    check_losses(all, straight);
    CHECK(normwise_difference(trainable_tensors(t), straight_params) <= 1e-6);
    CHECK(bytes_of(trainable_tensors(t)) == bytes_of(straight_params));  // batch_invariant: see the equivalence test
  }
  world.barrier("end of the resume test");
}

TEST_CASE("the up-front clip encoding splits the clips over the ranks: on a shared cache each is encoded once",
          "[features]") {
  // demo::encode_clips_up_front, what a GPU build's train_captioner runs before training: rank r encodes clips
  // r, r + N, ...; after a barrier every rank checks all of them. On one cache directory the ranks share, no clip is
  // encoded (or written) by two ranks; with a cache per rank (per node), each also encodes the others' share.
  World world = make_world(60);
  REQUIRE(world.size() == 2);
  const fs::path dir = fresh_dir(world, "upfront");
  const std::vector<train::Clip> clips = stand_in_clips(world, dir, 11);
  std::vector<const train::Clip*> all;
  for (const auto& c : clips) all.push_back(&c);

  for (const bool shared : {true, false}) {
    INFO((shared ? "one shared cache" : "a cache per rank"));
    const fs::path cache_dir = dir / (shared ? "cache" : "cache_" + std::to_string(world.rank()));
    auto cache = std::make_shared<train::FeatureCache>(cache_dir);
    std::vector<std::string> computed;
    const auto feats = demo::cached_clip_features(cache, "uniform", 4, "test-encoder", [&](const fs::path& video) {
      computed.push_back(video.stem().string());
      return Matrix::Constant(2, 3, static_cast<float>(video.stem().string().size()));
    });
    const demo::UpFrontEncoding up_front = demo::encode_clips_up_front(feats, all, world, nullptr);
    CHECK_FALSE(up_front.interrupted);
    const std::size_t encoded = up_front.encoded;
    CHECK(encoded == computed.size());
    // the share first: clips rank, rank + 2, ... (6 on rank 0, 5 on rank 1)
    const std::size_t share = world.rank() == 0 ? 6 : 5;
    REQUIRE(computed.size() >= share);
    for (std::size_t k = 0; k < share; ++k)
      CHECK(computed[k] == "clip_" + std::to_string(2 * k + static_cast<std::size_t>(world.rank())));
    std::array<double, 1> total{static_cast<double>(computed.size())};
    world.all_reduce_sum(std::span<double>(total), "the encode counts");
    if (shared) {
      CHECK(computed.size() == share);  // the other rank's share was in the cache after the barrier
      CHECK(total[0] == 11.0);          // each clip once over both ranks
    } else {
      CHECK(computed.size() == 11);  // a cache of its own: every clip
      CHECK(total[0] == 22.0);
    }
    // Every clip is readable now without encoding.
    const std::size_t before = computed.size();
    for (const auto& c : clips) CHECK(feats(c.video)(0, 0) == static_cast<float>(c.id.size()));
    CHECK(computed.size() == before);
    world.barrier("the next cache layout");
  }
}

namespace {
struct DeviceFault : std::runtime_error {  // stands in for a CUDA error or the memory cap
  using std::runtime_error::runtime_error;
};
}  // namespace

TEST_CASE("the up-front clip encoding stops at the device's error and counts the clips' own failures", "[features]") {
  // train_captioner passes a predicate for the errors that are the device's (a CUDA error, the memory cap): such an
  // error ends the encoding at the clip it happens at, where a clip's own error (a corrupt video) is counted, named
  // and skipped. Per rank on its own cache, one process's encoding (comm::Single).
  World world = make_world(60);
  const fs::path dir = fresh_dir(world, "upfront_fatal");
  const std::vector<train::Clip> clips = stand_in_clips(world, dir, 6);
  std::vector<const train::Clip*> all;
  for (const auto& c : clips) all.push_back(&c);
  const demo::FatalError device_fault = [](const std::exception& e) {
    return dynamic_cast<const DeviceFault*>(&e) != nullptr;
  };
  comm::Single one;
  for (const bool fault : {false, true}) {
    INFO((fault ? "a device error at clip_3" : "clip_1's own error only"));
    auto cache = std::make_shared<train::FeatureCache>(
        dir / ("cache_" + std::to_string(world.rank()) + (fault ? "_fault" : "")));
    std::vector<std::string> computed;
    const auto feats = demo::cached_clip_features(cache, "uniform", 4, "test-encoder", [&](const fs::path& video) {
      const std::string id = video.stem().string();
      computed.push_back(id);
      if (id == "clip_1") throw Error(id + ": no decodable frames");
      if (fault && id == "clip_3") throw DeviceFault("cudaErrorIllegalAddress");
      return Matrix::Constant(2, 3, 1.0f);
    });
    if (fault) {
      CHECK_THROWS_AS(demo::encode_clips_up_front(feats, all, one, nullptr, nullptr, device_fault), DeviceFault);
      CHECK(computed == std::vector<std::string>{"clip_0", "clip_1", "clip_2", "clip_3"});  // none after it
    } else {
      const demo::UpFrontEncoding r = demo::encode_clips_up_front(feats, all, one, nullptr, nullptr, device_fault);
      CHECK(r.encoded == 5);
      CHECK(r.failed == 1);
      CHECK_FALSE(r.interrupted);
    }
  }
  world.barrier("the fatal-error case");
}

TEST_CASE("a stop on one rank during the up-front clip encoding stops every rank after its share, none waiting",
          "[features]") {
  // Ctrl-C on rank 0 after its second clip: rank 0 encodes no more, rank 1 finishes its share, the ranks' stops are
  // summed, and both return interrupted without the pass that checks every clip (which would encode rank 0's rest).
  World world = make_world(60);
  REQUIRE(world.size() == 2);
  const fs::path dir = fresh_dir(world, "upfront_stop");
  const std::vector<train::Clip> clips = stand_in_clips(world, dir, 11);
  std::vector<const train::Clip*> all;
  for (const auto& c : clips) all.push_back(&c);
  auto cache = std::make_shared<train::FeatureCache>(dir / "cache");
  std::atomic<bool> stop{false};
  std::vector<std::string> computed;
  const auto feats = demo::cached_clip_features(cache, "uniform", 4, "test-encoder", [&](const fs::path& video) {
    computed.push_back(video.stem().string());
    if (world.rank() == 0 && computed.size() == 2) stop = true;  // the signal arrives while clip 2 is encoded
    return Matrix::Constant(2, 3, 1.0f);
  });
  const demo::UpFrontEncoding r = demo::encode_clips_up_front(feats, all, world, nullptr, &stop);
  CHECK(r.interrupted);
  CHECK(r.encoded == computed.size());
  if (world.rank() == 0)
    CHECK(computed == std::vector<std::string>{"clip_0", "clip_2"});
  else
    CHECK(computed.size() == 5);  // its whole share (clips 1, 3, ..., 9), then no check pass
  // What was encoded is in the cache: a rerun reads it.
  const std::size_t before = computed.size();
  CHECK(feats(clips[world.rank() == 0 ? 2 : 9].video)(0, 0) == 1.0f);
  CHECK(computed.size() == before);
  world.barrier("end of the stop test");
}
