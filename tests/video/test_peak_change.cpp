// PeakChange (the frames around a clip's largest change), absolute_difference, and the change tokens the
// demo appends to a clip's frames (train::video_change_features).
#include <catch2/catch.hpp>

#include <vidlora/train/random_vision_weights.hpp>
#include <vidlora/train/video_features.hpp>
#include <vidlora/video.hpp>

#include <cstdint>
#include <cstdlib>
#include <vector>

#include "clips.hpp"

using namespace vidlora;

namespace {
video::FrameAnalysis analysis_of(std::vector<double> motion) {
  video::FrameAnalysis a;
  a.frame_count = static_cast<std::int64_t>(motion.size());
  a.motion = std::move(motion);
  return a;
}

std::vector<std::int64_t> select(const video::FrameAnalysis& a, int k) {
  return video::PeakChange::select(a, video::SamplerOptions{.num_frames = k});
}

model::ClipVisionConfig tiny_vision() {
  model::ClipVisionConfig c;
  c.hidden_size = 16;
  c.intermediate_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.image_size = 24;
  c.patch_size = 8;  // 3x3 patches
  return c;
}
}  // namespace

TEST_CASE("peak change picks consecutive frames around the largest change, the earliest on a tie",
          "[video][sampler][peak_change]") {
  const auto a = analysis_of({0, 1, 1, 5, 1, 9, 2, 9, 0, 0});  // frame 5 differs most from frame 4 (and 7 from 6)
  CHECK(select(a, 2) == std::vector<std::int64_t>{4, 5});
  CHECK(select(a, 3) == std::vector<std::int64_t>{4, 5, 6});
  CHECK(select(a, 4) == std::vector<std::int64_t>{3, 4, 5, 6});
  // kept inside the clip: a peak at the last frame, and a clip without any change (peak 0)
  CHECK(select(analysis_of({0, 1, 1, 1, 1, 1, 1, 1, 1, 7}), 4) == std::vector<std::int64_t>{6, 7, 8, 9});
  CHECK(select(analysis_of({0, 0, 0, 0, 0, 0}), 2) == std::vector<std::int64_t>{0, 1});
  STATIC_REQUIRE(SamplingPolicy<video::PeakChange>);
}

TEST_CASE("the peak change sampler returns the two frames of the burst clip's largest change",
          "[video][sampler][peak_change]") {
  // the square moves 4 px a frame through the burst and jumps back 116 px at its end: between decoded frames 118 and
  // 119 (the next test finds the same pair by measuring every frame)
  const auto frames = video::Sampler<video::PeakChange>(SamplerOptions{.num_frames = 2, .width = 32, .height = 24})
                          .sample(test::burst_clip());
  REQUIRE(frames.size() == 2);
  CHECK(frames[0].index == 118);
  CHECK(frames[1].index == 119);
}

TEST_CASE("absolute difference of two frames, channel by channel", "[video][peak_change]") {
  const video::RgbImage a{2, 1, {10, 200, 0, 255, 0, 7}}, b{2, 1, {30, 100, 0, 0, 255, 7}};
  const auto d = video::absolute_difference(a, b);
  CHECK(d.width == 2);
  CHECK(d.height == 1);
  CHECK(d.data == std::vector<std::uint8_t>{20, 100, 0, 255, 255, 0});
  CHECK(video::absolute_difference(b, a).data == d.data);
  CHECK_THROWS_WITH(video::absolute_difference(a, video::RgbImage{1, 2, {0, 0, 0, 0, 0, 0}}),
                    Catch::Contains("frames of different sizes (2x1 and 1x2)"));
}

TEST_CASE("the change tokens are the encoder's tokens of |frame 119 - frame 118| of the burst clip, pooled",
          "[video][peak_change]") {
  const auto vc = tiny_vision();
  const model::ClipVision encoder(vc,
                                  train::random_clip_vision_weights(vc, 3, train::RandomVisionPositions::sincos_2d));
  const auto path = test::burst_clip();
  // independently: every frame at the encoder's size, the neighbours whose luma differs most, their difference
  const auto all = video::Sampler<Uniform>(SamplerOptions{.num_frames = 210, .width = 24, .height = 24}).sample(path);
  REQUIRE(all.size() == 210);
  const auto luma = [](const video::RgbImage& im, std::size_t p) {
    return 0.299 * im.data[3 * p] + 0.587 * im.data[3 * p + 1] + 0.114 * im.data[3 * p + 2];
  };
  std::size_t peak = 1;
  double best = -1;
  for (std::size_t i = 1; i < all.size(); ++i) {
    double s = 0;
    for (std::size_t p = 0; p < 24 * 24; ++p) s += std::abs(luma(all[i].rgb, p) - luma(all[i - 1].rgb, p));
    if (s > best) best = s, peak = i;
  }
  REQUIRE(peak == 119);
  video::RgbImage diff{24, 24, std::vector<std::uint8_t>(24 * 24 * 3)};
  for (std::size_t j = 0; j < diff.data.size(); ++j)
    diff.data[j] = static_cast<std::uint8_t>(std::abs(int{all[119].rgb.data[j]} - int{all[118].rgb.data[j]}));
  video::ClipPreprocessOptions pre;
  pre.shortest_edge = pre.crop_height = pre.crop_width = 24;
  const auto pixels = video::clip_preprocess(std::vector<video::RgbImage>{diff}, pre);
  const Matrix want = encoder.features(pixels.data, 1);  // [9 patches, 16]

  const Matrix tokens = train::video_change_features(path, SamplerOptions{}, encoder);
  REQUIRE(tokens.rows() == 9);
  REQUIRE(tokens.cols() == 16);
  CHECK((tokens - want).cwiseAbs().maxCoeff() <= 1e-5 * want.cwiseAbs().maxCoeff());
  const Matrix pooled = train::video_change_features(path, SamplerOptions{}, encoder, 3);  // the 3x3 grid's mean
  REQUIRE(pooled.rows() == 1);
  CHECK((pooled - want.colwise().mean()).cwiseAbs().maxCoeff() <= 1e-5 * want.cwiseAbs().maxCoeff());
  // the square's two places light up: the change image is not black
  CHECK(*std::max_element(diff.data.begin(), diff.data.end()) > 100);
}
