#pragma once
// The images the video module hands out: interleaved 8-bit RGB, and a sampled frame with its
// position in the clip.

#include <cstddef>
#include <cstdint>
#include <vector>

namespace vidlora::video {

// Interleaved RGB, row-major, no padding: pixel (x, y) channel c is data[(y * width + x) * 3 + c].
struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<std::uint8_t> data;

  std::uint8_t at(int x, int y, int channel) const {
    return data[(static_cast<std::size_t>(y) * width + x) * 3 + channel];
  }
};

// One frame chosen by a sampler. index: 0-based position in decode output (presentation) order;
// timestamp: seconds from the stream's start, from the decoded frame's best-effort timestamp.
struct SampledFrame {
  std::int64_t index = 0;
  double timestamp = 0.0;
  RgbImage rgb;
};

}  // namespace vidlora::video
