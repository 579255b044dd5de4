// Data-parallel training under mpiexec -np 2 (comm::Mpi): two ranks with batch b train exactly as one rank
// with batch 2b, and checkpoints move between rank counts. Run by tests/mpi/CMakeLists.txt; main.cpp holds
// MPI_Init and the fault programs.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <vidlora/comm/mpi.hpp>

#include "tiny_run.hpp"

namespace fs = std::filesystem;
using namespace vidlora;
using namespace vidlora::test;

namespace {

comm::MpiOptions timeout(double seconds) { return {.timeout = std::chrono::duration<double>(seconds)}; }

// The same directory on every rank (they share this machine's file system), emptied by rank 0.
fs::path fresh_dir(comm::Mpi& world, const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("vidlora_mpi_" + name);
  if (world.rank() == 0) fs::remove_all(dir);
  world.barrier("fresh_dir");
  return dir;
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
  comm::Mpi world(timeout(120));
  REQUIRE(world.size() == 2);
  const fs::path dir = fresh_dir(world, "equivalence");
  // 10 clips, 4 a step: the third step of each epoch gives rank 0 two clips and rank 1 none; 3 val clips: 2 + 1.
  // One epoch per stage: 6 steps (3 of the projector, 3 with LoRA).
  const auto config = [&](const char* name, int batch, int accumulation) {
    TrainerConfig c = tiny_config(dir / name, batch, accumulation);
    c.stages[0].epochs = c.stages[1].epochs = 1;
    return c;
  };
  auto parallel = make_tiny(config("parallel", 1, 2), comm::Mpi(timeout(60)));
  const TrainResult p = parallel.train(tiny_clips(10), tiny_clips(3, 10));
  const auto p_params = trainable_tensors(parallel);
  CHECK(p.steps == 6);

  // Every rank holds the same parameters, bit for bit.
  const auto all = world.gather(bytes_of(p_params), "parameters");
  if (world.rank() == 0) {
    REQUIRE(all.size() == 2);
    CHECK(all[0] == all[1]);
  }

  if (world.rank() == 0) {
    // One rank with the 4 clips of a step as 4 micro-batches of 1 (the ranks' per-clip products; only the order
    // of the 4-term gradient sum differs) and as 2 micro-batches of 2 (the batch the issue names). The losses
    // agree to 1e-6 at every step. The parameters agree to the float32 rounding of a re-split step: one
    // rank's own two splits differ as much (a LoRA A whose gradient is tiny while B is near zero: AdamW's
    // division by sqrt(v) turns its rounding into a parameter difference, about 1e-5 normwise here), so the
    // ranks' parameters must be within twice that spread of both (and within 1e-6 where the spread is below).
    auto per_clip = make_tiny(config("single_per_clip", 1, 4));
    const TrainResult c = per_clip.train(tiny_clips(10), tiny_clips(3, 10));
    check_losses(p.losses, c.losses);
    auto single = make_tiny(config("single", 2, 2));
    const TrainResult s = single.train(tiny_clips(10), tiny_clips(3, 10));
    check_losses(p.losses, s.losses);
    const auto c_params = trainable_tensors(per_clip), s_params = trainable_tensors(single);
    const double spread = normwise_difference(s_params, c_params);
    const double dc = normwise_difference(p_params, c_params), d = normwise_difference(p_params, s_params);
    fmt::print(
        "2 ranks x batch 1 x accumulation 2 against 1 rank: parameters differ by {:.2e} (1 rank, 1 x 4), "
        "{:.2e} (1 rank, 2 x 2); the two one-rank splits differ by {:.2e} (normwise)\n",
        dc, d, spread);
    CHECK(dc <= std::max(1e-6, 2 * spread));
    CHECK(d <= std::max(1e-6, 2 * spread));
    CHECK(spread <= 1e-4);  // rounding, not a different training
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

TEST_CASE("a checkpoint written by two ranks resumes on one, and one written by one resumes on two", "[resume]") {
  comm::Mpi world(timeout(120));
  REQUIRE(world.size() == 2);
  const fs::path dir = fresh_dir(world, "resume");
  const auto train = tiny_clips(10), val = tiny_clips(3, 10);
  std::vector<double> straight;
  std::vector<Matrix> straight_params;
  if (world.rank() == 0) {
    auto single = make_tiny(tiny_config(dir / "straight", 1, 4));
    straight = single.train(train, val).losses;
    straight_params = trainable_tensors(single);
  }
  world.barrier("the straight run");

  // 2 -> 1: two ranks stop after 5 steps (inside stage 1); one rank with the doubled batch (1 × 4 clips, the
  // ranks' per-clip micro-batches: see the equivalence test) finishes.
  auto c2 = tiny_config(dir / "two_to_one", 1, 2);
  c2.max_steps_this_run = 5;
  std::vector<double> first;
  {
    auto t = make_tiny(c2, comm::Mpi(timeout(60)));
    const auto r = t.train(train, val);
    CHECK(r.status == train::TrainStatus::Interrupted);
    first = r.losses;
  }
  world.barrier("the two-rank part");
  if (world.rank() == 0) {
    auto t = make_tiny(tiny_config(dir / "two_to_one", 1, 4));
    const auto r = t.train(train, val, /*resume=*/true);
    CHECK(r.status == train::TrainStatus::Finished);
    std::vector<double> all = first;
    all.insert(all.end(), r.losses.begin(), r.losses.end());
    check_losses(all, straight);
    CHECK(normwise_difference(trainable_tensors(t), straight_params) <= 1e-5);  // rounding: see the equivalence test
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
  auto t = make_tiny(tiny_config(dir / "one_to_two", 1, 2), comm::Mpi(timeout(60)));
  const auto r = t.train(train, val, /*resume=*/true);
  CHECK(r.status == train::TrainStatus::Finished);
  if (world.rank() == 0) {
    std::vector<double> all = first;
    all.insert(all.end(), r.losses.begin(), r.losses.end());
    check_losses(all, straight);
    CHECK(normwise_difference(trainable_tensors(t), straight_params) <= 1e-5);  // rounding: see the equivalence test
  }
  world.barrier("end of the resume test");
}
