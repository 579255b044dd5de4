#pragma once
// The colour statistics scene-change detection compares: OpenCV's 8-bit RGB->HSV conversion
// (H in [0,180), S and V in [0,255]), a 2-D H x S histogram binned as cv2.calcHist bins uniform
// ranges, and the Bhattacharyya distance as cv2.compareHist(HISTCMP_BHATTACHARYYA) computes it.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <vidlora/core/portability.hpp>

namespace vidlora::video {

struct Hsv8 {
  int h, s, v;
};

namespace detail {
inline constexpr int hsv_shift = 12;

// OpenCV's division tables: round(255·4096/i) and round(180·4096/(6i)), entry 0 = 0.
struct HsvTables {
  std::array<int, 256> sdiv{};
  std::array<int, 256> hdiv{};
  HsvTables() {
    for (int i = 1; i < 256; ++i) {
      sdiv[i] = static_cast<int>(std::lround((255 << hsv_shift) / (1.0 * i)));
      hdiv[i] = static_cast<int>(std::lround((180 << hsv_shift) / (6.0 * i)));
    }
  }
};
inline const HsvTables& hsv_tables() {
  static const HsvTables tables;
  return tables;
}
}  // namespace detail

// cv::cvtColor(COLOR_RGB2HSV) for one 8-bit pixel, bit-exact (same fixed-point tables and
// tie order: red is the maximum first, then green).
inline Hsv8 rgb_to_hsv8(int r, int g, int b) {
  const auto& t = detail::hsv_tables();
  int v = b, vmin = b;
  v = v > g ? v : g;
  v = v > r ? v : r;
  vmin = vmin < g ? vmin : g;
  vmin = vmin < r ? vmin : r;
  const int diff = v - vmin;
  const int vr = v == r ? -1 : 0;
  const int vg = v == g ? -1 : 0;
  const int s = (diff * t.sdiv[v] + (1 << (detail::hsv_shift - 1))) >> detail::hsv_shift;
  int h = (vr & (g - b)) + (~vr & ((vg & (b - r + 2 * diff)) + ((~vg) & (r - g + 4 * diff))));
  h = (h * t.hdiv[diff] + (1 << (detail::hsv_shift - 1))) >> detail::hsv_shift;
  h += h < 0 ? 180 : 0;
  return {h, s, v};
}

// 2-D hue x saturation histogram: H 50 bins over [0,180), S 60 bins over [0,256), counts as floats
// (Bhattacharyya is invariant to scaling, so the normalisation cv2.normalize would apply does not
// change any distance; `normalised()` gives the L1-normalised bins when the values themselves matter).
class HsvHistogram {
 public:
  static constexpr int hue_bins = 50;
  static constexpr int saturation_bins = 60;
  static constexpr int bins = hue_bins * saturation_bins;

  HsvHistogram() : counts_(bins, 0.0f) {}

  // Adds every pixel of an interleaved RGB buffer.
  void add_rgb(const std::uint8_t* rgb, std::size_t pixels) {
    const auto& lut = bin_lut();
    for (std::size_t i = 0; i < pixels; ++i) {
      const Hsv8 p = rgb_to_hsv8(rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]);
      counts_[lut.hue[p.h] * saturation_bins + lut.saturation[p.s]] += 1.0f;
    }
    total_ += static_cast<double>(pixels);
  }

  static HsvHistogram of_rgb(const std::uint8_t* rgb, std::size_t pixels) {
    HsvHistogram h;
    h.add_rgb(rgb, pixels);
    return h;
  }

  float count(int hue_bin, int saturation_bin) const { return counts_[hue_bin * saturation_bins + saturation_bin]; }
  const std::vector<float>& counts() const { return counts_; }
  std::vector<float> normalised() const {
    std::vector<float> out(counts_);
    if (total_ > 0)
      for (auto& c : out) c = static_cast<float>(c / total_);
    return out;
  }
  void clear() {
    std::fill(counts_.begin(), counts_.end(), 0.0f);
    total_ = 0;
  }

 private:
  // cv::calcHist's uniform 8-bit lookup: bin = floor(value · bins / range).
  struct BinLut {
    std::array<int, 256> hue{};
    std::array<int, 256> saturation{};
    BinLut() {
      const double ha = hue_bins / 180.0, sa = saturation_bins / 256.0;
      for (int j = 0; j < 256; ++j) {
        hue[j] = std::min(hue_bins - 1, static_cast<int>(std::floor(j * ha)));  // H never reaches 180
        saturation[j] = static_cast<int>(std::floor(j * sa));
      }
    }
  };
  static const BinLut& bin_lut() {
    static const BinLut lut;
    return lut;
  }

  std::vector<float> counts_;
  double total_ = 0;
};

// cv2.compareHist(a, b, HISTCMP_BHATTACHARYYA): sqrt(1 - Σ sqrt(a_i b_i) / sqrt(Σa · Σb)),
// 0 for identical distributions, 1 for disjoint ones. Accumulates in double as OpenCV does.
inline double bhattacharyya_distance(const std::vector<float>& a, const std::vector<float>& b) {
  double s1 = 0, s2 = 0, overlap = 0;
  const std::size_t n = a.size() < b.size() ? a.size() : b.size();
  for (std::size_t i = 0; i < n; ++i) {
    s1 += a[i];
    s2 += b[i];
    overlap += std::sqrt(static_cast<double>(a[i]) * static_cast<double>(b[i]));
  }
  const double prod = s1 * s2;
  const double scale = std::fabs(prod) > 1.1920928955078125e-07 ? 1.0 / std::sqrt(prod) : 1.0;
  const double d = 1.0 - overlap * scale;
  return std::sqrt(d > 0 ? d : 0.0);
}

inline double bhattacharyya_distance(const HsvHistogram& a, const HsvHistogram& b) {
  return bhattacharyya_distance(a.counts(), b.counts());
}

}  // namespace vidlora::video
