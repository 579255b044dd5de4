#include <catch2/catch.hpp>

#include <vidlora/train/progress.hpp>

#include <cmath>

using namespace vidlora;

TEST_CASE("progress line shows stage epoch step loss lr throughput and eta", "[train][progress]") {
  const train::ProgressState s{.stage = 2,
                               .stages = 2,
                               .epoch = 3,
                               .epochs = 5,
                               .step = 120,
                               .total_steps = 400,
                               .steps_this_run = 20,
                               .elapsed_s = 30.0,
                               .loss = 2.345678,
                               .lr = 1e-4,
                               .tokens_per_s = 1234.5};
  // 30 s / 20 steps * 280 steps left = 420 s
  CHECK(train::format_progress(s) ==
        "stage 2/2 | epoch 3/5 | step 120/400  30% | loss 2.3457 | lr 1.00e-04 | 1.2k tok/s | ETA 7m00s");
}

TEST_CASE("progress eta waits for a first step and uses only this run's steps", "[train][progress]") {
  train::ProgressState s{.step = 50, .total_steps = 100, .steps_this_run = 0, .elapsed_s = 0};
  CHECK(std::isnan(train::eta_seconds(s)));
  CHECK_THAT(train::format_progress(s), Catch::EndsWith("ETA --"));
  s.steps_this_run = 10;  // resumed at step 40: 10 steps in 5 s, 50 left
  s.elapsed_s = 5;
  CHECK(train::eta_seconds(s) == Approx(25.0));
  s.loss = std::nan("");
  CHECK_THAT(train::format_progress(s), Catch::Contains("loss nan"));
}

TEST_CASE("durations and counts are formatted compactly", "[train][progress]") {
  CHECK(train::format_duration(0.4) == "0s");
  CHECK(train::format_duration(45) == "45s");
  CHECK(train::format_duration(245) == "4m05s");
  CHECK(train::format_duration(3725) == "1h02m");
  CHECK(train::format_duration(-1) == "--");
  CHECK(train::format_count(950) == "950");
  CHECK(train::format_count(34567) == "35k");
  CHECK(train::format_count(1.25e6) == "1.2M");
  CHECK(train::format_count(4.2e7) == "42M");
}
