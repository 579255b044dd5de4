#include <catch2/catch.hpp>

#include <vidlora/video.hpp>

#include <algorithm>
#include <cstdint>
#include <map>
#include <vector>

#include "clips.hpp"

using namespace vidlora;

namespace {
std::vector<std::int64_t> indices_of(const std::vector<video::SampledFrame>& frames) {
  std::vector<std::int64_t> out;
  for (const auto& f : frames) out.push_back(f.index);
  return out;
}

bool strictly_increasing(const std::vector<std::int64_t>& v) {
  return std::adjacent_find(v.begin(), v.end(), [](auto a, auto b) { return a >= b; }) == v.end();
}

std::int64_t count_in(const std::vector<std::int64_t>& v, std::int64_t lo, std::int64_t hi) {
  return std::count_if(v.begin(), v.end(), [&](auto i) { return i >= lo && i < hi; });
}
}  // namespace

TEST_CASE("uniform indices equal numpy linspace truncated to int", "[video][sampler][uniform]") {
  // np.linspace(0, n - 1, k).astype(int), numpy 2.4
  const std::map<std::pair<int, int>, std::vector<std::int64_t>> expected{
      {{120, 8}, {0, 17, 34, 51, 68, 85, 102, 119}},
      {{100, 16}, {0, 6, 13, 19, 26, 33, 39, 46, 52, 59, 66, 72, 79, 85, 92, 99}},
      {{7, 7}, {0, 1, 2, 3, 4, 5, 6}},
      {{1000, 4}, {0, 333, 666, 999}},
      {{33, 6}, {0, 6, 12, 19, 25, 32}},
      {{10, 1}, {0}},
      {{301, 16}, {0, 20, 40, 60, 80, 100, 120, 140, 160, 180, 200, 220, 240, 260, 280, 300}}};
  for (const auto& [nk, want] : expected) CHECK(video::uniform_indices(nk.first, nk.second) == want);
}

TEST_CASE("uniform sampling by keyframe seeking returns the frames decoding everything returns",
          "[video][sampler][uniform]") {
  const auto path = test::gop_clip();
  for (int k : {4, 8, 16}) {
    SamplerOptions o{.num_frames = k, .width = 64, .height = 48};
    const auto seeked = Sampler<Uniform>(o).sample_with_report(path);
    o.seek = false;
    const auto full = Sampler<Uniform>(o).sample_with_report(path);
    CHECK(seeked.report.seeked);
    CHECK_FALSE(full.report.seeked);
    CHECK(full.report.frames_decoded == 150);
    CHECK(seeked.report.frames_decoded < 150);  // keyframes every 12 frames: most frames never decoded
    CHECK(indices_of(seeked.frames) == video::uniform_indices(150, k));
    REQUIRE(indices_of(full.frames) == indices_of(seeked.frames));
    for (std::size_t j = 0; j < seeked.frames.size(); ++j) {
      CHECK(seeked.frames[j].timestamp == Approx(full.frames[j].timestamp));
      CHECK(seeked.frames[j].timestamp == Approx(seeked.frames[j].index / 30.0).margin(1e-6));
      CHECK(seeked.frames[j].rgb.data == full.frames[j].rgb.data);  // bit-identical pixels
    }
  }
}

TEST_CASE("scene cuts of concatenated segments are found within one frame", "[video][sampler][scene]") {
  const auto cuts = video::detect_scene_changes(test::cuts_clip());
  REQUIRE(cuts.size() == test::known_cuts.size());
  for (std::size_t i = 0; i < cuts.size(); ++i) CHECK(std::abs(cuts[i] - test::known_cuts[i]) <= 1);
}

TEST_CASE("minimum scene length drops cuts closer than it to the previous cut", "[video][sampler][scene]") {
  // Scenes are 40, 35, 45, 30 frames. With min_scene_len 38 the cut at 75 (35 after the cut at 40)
  // is dropped; the one at 120 counts from the last kept cut (80 frames) and stays.
  const auto cuts = video::detect_scene_changes(test::cuts_clip(), SceneChangeOptions{.min_scene_len = 38});
  REQUIRE(cuts.size() == 2);
  CHECK(std::abs(cuts[0] - 40) <= 1);
  CHECK(std::abs(cuts[1] - 120) <= 1);
  CHECK(video::detect_scene_changes(test::cuts_clip(), SceneChangeOptions{.threshold = 1.0}).empty());
}

TEST_CASE("decoding without the deblocking filter finds the same cuts", "[video][sampler][scene]") {
  const auto full = video::detect_scene_changes(test::cuts_clip());
  CHECK(full.size() == 3);
  CHECK(video::detect_scene_changes(test::cuts_clip(), SceneChangeOptions{.skip_loop_filter = true}) == full);
}

TEST_CASE("scene change sampler puts at least one frame in every scene", "[video][sampler][scene]") {
  for (int k : {4, 5, 8, 16}) {
    const auto s = Sampler<SceneChange>(SamplerOptions{.num_frames = k, .width = 32, .height = 24})
                       .sample_with_report(test::cuts_clip());
    const auto idx = indices_of(s.frames);
    REQUIRE(static_cast<int>(idx.size()) == k);
    CHECK(strictly_increasing(idx));
    REQUIRE(s.report.scene_starts.size() == 4);
    const std::vector<std::int64_t> bounds{0, s.report.scene_starts[1], s.report.scene_starts[2],
                                           s.report.scene_starts[3], 150};
    for (int scene = 0; scene < 4; ++scene) CHECK(count_in(idx, bounds[scene], bounds[scene + 1]) >= 1);
    for (const auto& f : s.frames) CHECK(f.timestamp == Approx(f.index / 30.0).margin(1e-6));
  }
  // With fewer slots than scenes, the longest scenes (45 and 40 frames) are the ones kept.
  const auto two = indices_of(
      Sampler<SceneChange>(SamplerOptions{.num_frames = 2, .width = 8, .height = 8}).sample(test::cuts_clip()));
  REQUIRE(two.size() == 2);
  CHECK(count_in(two, 0, 40) == 1);
  CHECK(count_in(two, 75, 120) == 1);
}

TEST_CASE("motion sampler puts most frames inside the burst of motion", "[video][sampler][motion]") {
  const auto path = test::burst_clip();  // 210 frames, motion only in 90..119
  const auto motion =
      indices_of(Sampler<Motion>(SamplerOptions{.num_frames = 8, .width = 32, .height = 24}).sample(path));
  const auto uniform =
      indices_of(Sampler<Uniform>(SamplerOptions{.num_frames = 8, .width = 32, .height = 24}).sample(path));
  REQUIRE(motion.size() == 8);
  CHECK(strictly_increasing(motion));
  CHECK(count_in(uniform, 90, 121) <= 2);
  CHECK(count_in(motion, 90, 121) >= 5);
  // floor = 0: only motion counts, so every frame lands in the burst.
  SamplerOptions only_motion{.num_frames = 8, .width = 32, .height = 24};
  only_motion.motion.floor = 0.0;
  CHECK(count_in(indices_of(Sampler<Motion>(only_motion).sample(path)), 90, 121) == 8);
}

TEST_CASE("a still clip has no cuts and the motion sampler spreads its frames evenly", "[video][sampler][motion]") {
  const auto path = test::still_clip();  // 60 frames
  CHECK(video::detect_scene_changes(path).empty());
  const auto motion =
      indices_of(Sampler<Motion>(SamplerOptions{.num_frames = 6, .width = 32, .height = 24}).sample(path));
  // no motion at all: targets at the middle of 6 equal stretches of 10 frames
  CHECK(motion == std::vector<std::int64_t>{4, 14, 24, 34, 44, 54});
  const auto scene =
      indices_of(Sampler<SceneChange>(SamplerOptions{.num_frames = 6, .width = 32, .height = 24}).sample(path));
  CHECK(scene == std::vector<std::int64_t>{5, 15, 25, 35, 45, 55});
}

TEST_CASE("a video shorter than num_frames returns all its frames and says so", "[video][sampler]") {
  const auto path = test::red_clip();  // 10 frames
  for (auto frames_and_report :
       {Sampler<Uniform>(SamplerOptions{.num_frames = 16, .width = 8, .height = 8}).sample_with_report(path),
        Sampler<SceneChange>(SamplerOptions{.num_frames = 16, .width = 8, .height = 8}).sample_with_report(path),
        Sampler<Motion>(SamplerOptions{.num_frames = 16, .width = 8, .height = 8}).sample_with_report(path)}) {
    CHECK(frames_and_report.report.short_video);
    CHECK(frames_and_report.report.frame_count == 10);
    CHECK(indices_of(frames_and_report.frames) == std::vector<std::int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  }
  const auto exact =
      Sampler<Motion>(SamplerOptions{.num_frames = 10, .width = 8, .height = 8}).sample_with_report(path);
  CHECK_FALSE(exact.report.short_video);
  CHECK(exact.frames.size() == 10);
}

TEST_CASE("a small frame buffer thins held frames but still returns distinct frames near the choice",
          "[video][sampler]") {
  const auto path = test::gop_clip();  // 150 frames
  SamplerOptions o{.num_frames = 8, .width = 16, .height = 12, .seek = false};
  o.buffer_bytes = 1;  // hold only the minimum (max(4k, 16) = 32 frames): stride 8 over 150 frames
  const auto thinned = Sampler<Uniform>(o).sample_with_report(path);
  CHECK(thinned.report.hold_stride == 8);
  const auto idx = indices_of(thinned.frames);
  REQUIRE(idx.size() == 8);
  CHECK(strictly_increasing(idx));
  const auto want = video::uniform_indices(150, 8);
  for (std::size_t j = 0; j < idx.size(); ++j) {
    CHECK(std::abs(idx[j] - want[j]) <= thinned.report.hold_stride / 2);
    CHECK(thinned.frames[j].timestamp == Approx(idx[j] / 30.0).margin(1e-6));
  }
}

TEST_CASE("policies and samplers model their concepts", "[video][sampler]") {
  STATIC_REQUIRE(SamplingPolicy<Uniform>);
  STATIC_REQUIRE(SamplingPolicy<SceneChange>);
  STATIC_REQUIRE(SamplingPolicy<Motion>);
  STATIC_REQUIRE_FALSE(SamplingPolicy<int>);
  STATIC_REQUIRE(video::FrameSampler<Sampler<Uniform>>);
  STATIC_REQUIRE(video::FrameSampler<Sampler<Motion>>);
  STATIC_REQUIRE_FALSE(video::FrameSampler<video::SampledFrame>);
  SamplerOptions o{};
  o.num_frames = 16;
  CHECK(Sampler<SceneChange>(o).options().num_frames == 16);
  CHECK(Sampler<SceneChange>().options().scene.threshold == 0.30);
  CHECK(Sampler<Uniform>::policy_type::name == "uniform");
}

TEST_CASE("a raw H.264 stream without packet timestamps is sampled by decoding every frame",
          "[video][sampler][uniform]") {
  const auto s = Sampler<Uniform>(SamplerOptions{.num_frames = 8, .width = 16, .height = 12})
                     .sample_with_report(test::raw_h264_clip());
  CHECK_FALSE(s.report.seeked);
  CHECK(s.report.frame_count == 60);
  CHECK(indices_of(s.frames) == video::uniform_indices(60, 8));
  CHECK(strictly_increasing(indices_of(s.frames)));
}

TEST_CASE("the sampling policy table maps each run-time name to its policy type", "[video][sampler][policy]") {
  CHECK(video::sampling_policy_names() == "uniform, scene_change, motion");
  for (std::string_view name : {"uniform", "scene_change", "motion"})
    CHECK(video::with_sampling_policy(name, [](auto p) { return std::string(decltype(p)::name); }) == name);
  CHECK(video::with_sampling_policy("motion", [](auto p) { return std::is_same_v<decltype(p), video::Motion>; }));
  CHECK_THROWS_WITH(video::with_sampling_policy("scenechange", [](auto) {}),
                    Catch::Contains("unknown sampler 'scenechange' (uniform, scene_change, motion)"));
}
