#pragma once
// The absolute difference of two frames, channel by channel: an image that is black where nothing
// changed and bright where something moved or the scene cut (train::video_change_features encodes it).

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/video/frame.hpp>

namespace vidlora::video {

// |b − a| per pixel and channel; both images must have the same size.
inline RgbImage absolute_difference(const RgbImage& a, const RgbImage& b) {
  require(a.width == b.width && a.height == b.height && a.data.size() == b.data.size(),
          "absolute_difference: frames of different sizes ({}x{} and {}x{})", a.width, a.height, b.width, b.height);
  RgbImage d{a.width, a.height, std::vector<std::uint8_t>(a.data.size())};
  for (std::size_t i = 0; i < a.data.size(); ++i)
    d.data[i] = static_cast<std::uint8_t>(std::abs(b.data[i] - a.data[i]));
  return d;
}

}  // namespace vidlora::video
