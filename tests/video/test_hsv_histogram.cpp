#include <cstdint>

#include <catch2/catch.hpp>

#include <vidlora/video.hpp>

#include "fixtures.hpp"

using namespace vidlora;

TEST_CASE("rgb to hsv conversion is bit-exact with OpenCV cvtColor", "[video][scene][opencv]") {
  const auto fx = test::load_fixture("video/hsv_histogram.json");
  const auto rgb = fx["pixels_rgb"].get<std::vector<int>>();
  const auto hsv = fx["pixels_hsv"].get<std::vector<int>>();
  REQUIRE(rgb.size() == hsv.size());
  int mismatches = 0;
  for (std::size_t i = 0; i < rgb.size(); i += 3) {
    const auto p = video::rgb_to_hsv8(rgb[i], rgb[i + 1], rgb[i + 2]);
    if (p.h != hsv[i] || p.s != hsv[i + 1] || p.v != hsv[i + 2]) {
      ++mismatches;
      UNSCOPED_INFO("rgb " << rgb[i] << "," << rgb[i + 1] << "," << rgb[i + 2] << " -> " << p.h << "," << p.s << ","
                           << p.v << " expected " << hsv[i] << "," << hsv[i + 1] << "," << hsv[i + 2]);
    }
  }
  CHECK(mismatches == 0);
}

TEST_CASE("hue-saturation histogram equals OpenCV calcHist with 50 x 60 bins", "[video][scene][opencv]") {
  const auto fx = test::load_fixture("video/hsv_histogram.json");
  for (std::size_t i = 0; i < fx["images"].size(); ++i) {
    const auto& img = fx["images"][i];
    const auto rgb = img["rgb"].get<std::vector<std::uint8_t>>();
    const auto h = video::HsvHistogram::of_rgb(rgb.data(), rgb.size() / 3);
    std::vector<float> want(video::HsvHistogram::bins, 0.0f);
    for (const auto& [bin, count] : fx["histograms"][i].items()) want[std::stoul(bin)] = count.get<float>();
    CHECK(h.counts() == want);
  }
}

TEST_CASE("bhattacharyya distance equals OpenCV compareHist", "[video][scene][opencv]") {
  const auto fx = test::load_fixture("video/hsv_histogram.json");
  std::vector<video::HsvHistogram> hists;
  for (const auto& img : fx["images"]) {
    const auto rgb = img["rgb"].get<std::vector<std::uint8_t>>();
    hists.push_back(video::HsvHistogram::of_rgb(rgb.data(), rgb.size() / 3));
  }
  for (std::size_t p = 0; p < fx["pairs"].size(); ++p) {
    const auto a = fx["pairs"][p][0].get<int>(), b = fx["pairs"][p][1].get<int>();
    const double d = video::bhattacharyya_distance(hists[a], hists[b]);
    CHECK(d == Approx(fx["bhattacharyya"][p].get<double>()).margin(1e-6));
    // normalising the histograms first (cv2.normalize, L2) does not change the distance
    CHECK(d == Approx(fx["bhattacharyya_l2_normalised"][p].get<double>()).margin(1e-5));
    const double dn = video::bhattacharyya_distance(hists[a].normalised(), hists[b].normalised());
    CHECK(dn == Approx(d).margin(1e-6));
  }
}
