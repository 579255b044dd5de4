#include <catch2/catch.hpp>

#include <vidlora/video.hpp>

#include <cmath>
#include <cstdint>

#include "fixtures.hpp"

using namespace vidlora;

namespace {
video::RgbImage image_of(const nlohmann::json& c) {
  return video::RgbImage{c["width"].get<int>(), c["height"].get<int>(), c["rgb"].get<std::vector<std::uint8_t>>()};
}
}  // namespace

TEST_CASE("bicubic resize matches Pillow byte for byte", "[video][clip]") {
  const auto fx = test::load_fixture("video/clip_preprocess.json");
  for (const auto& c : fx["small"]) {
    const video::RgbImage out =
        video::resize_bicubic(image_of(c), c["resized_width"].get<int>(), c["resized_height"].get<int>());
    const auto want = c["resized"].get<std::vector<std::uint8_t>>();
    REQUIRE(out.data.size() == want.size());
    int worst = 0;
    for (std::size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::abs(int(out.data[i]) - int(want[i])));
    INFO(c["width"].get<int>() << "x" << c["height"].get<int>());
    CHECK(worst == 0);
  }
}

TEST_CASE("clip preprocessing matches transformers CLIPImageProcessor within 1e-6", "[video][clip]") {
  const auto fx = test::load_fixture("video/clip_preprocess.json");
  video::ClipPreprocessOptions o{};
  o.shortest_edge = 24;
  o.crop_height = 24;
  o.crop_width = 24;
  std::vector<video::RgbImage> images;
  for (const auto& c : fx["small"]) images.push_back(image_of(c));
  const video::ClipTensor t = video::clip_preprocess(images, o);
  CHECK(t.frames == static_cast<int>(images.size()));
  CHECK(t.channels == 3);
  CHECK(t.height == 24);
  CHECK(t.width == 24);
  std::size_t offset = 0;
  for (const auto& c : fx["small"]) {
    const auto want = c["pixel_values"].get<std::vector<float>>();
    double worst = 0;
    for (std::size_t i = 0; i < want.size(); ++i)
      worst = std::max(worst, double(std::fabs(t.data[offset + i] - want[i])));
    offset += want.size();
    CHECK(worst <= 1e-6);  // fixture keeps 7 decimals; the computation itself is float32-identical
  }
  CHECK(offset == t.data.size());
}

TEST_CASE("clip preprocessing at 336 matches the reference statistics and sampled values", "[video][clip]") {
  const auto d = test::load_fixture("video/clip_preprocess.json")["default_336"];
  const video::ClipTensor t = video::clip_preprocess(std::vector<video::RgbImage>{image_of(d)});
  REQUIRE(t.data.size() == 3u * 336 * 336);
  const auto stride = d["subset_stride"].get<std::size_t>();
  const auto subset = d["subset"].get<std::vector<float>>();
  double worst = 0;
  for (std::size_t j = 0; j < subset.size(); ++j)
    worst = std::max(worst, double(std::fabs(t.data[j * stride] - subset[j])));
  CHECK(worst <= 1e-6);
  for (int c = 0; c < 3; ++c) {
    double sum = 0, sum2 = 0;
    for (int i = 0; i < 336 * 336; ++i) {
      const double v = t.data[static_cast<std::size_t>(c) * 336 * 336 + i];
      sum += v;
      sum2 += v * v;
    }
    const double mean = sum / (336 * 336), sd = std::sqrt(sum2 / (336 * 336) - mean * mean);
    CHECK(mean == Approx(d["channel_mean"][c].get<double>()).margin(1e-5));
    CHECK(sd == Approx(d["channel_std"][c].get<double>()).margin(1e-5));
  }
}

TEST_CASE("clip resize keeps the aspect ratio and truncates the long side as transformers does", "[video][clip]") {
  CHECK(video::clip_resize_size(1920, 1080, 336) == std::pair{597, 336});  // int(336 * 1920 / 1080) = 597
  CHECK(video::clip_resize_size(1080, 1920, 336) == std::pair{336, 597});
  CHECK(video::clip_resize_size(1280, 720, 336) == std::pair{597, 336});
  CHECK(video::clip_resize_size(336, 336, 336) == std::pair{336, 336});
}

TEST_CASE("visual token budgets per frame are 576 for CLIP ViT-L/14-336 and 144 after 2x2 pooling", "[video][tokens]") {
  STATIC_REQUIRE(video::clip_vit_l14_336_tokens_per_frame == 576);
  STATIC_REQUIRE(video::llava_next_video_pooled_tokens_per_frame == 144);
  STATIC_REQUIRE(video::visual_tokens(16) == 16 * 144);
  STATIC_REQUIRE(video::visual_tokens(8, video::clip_vit_l14_336_tokens_per_frame) == 4608);
}
