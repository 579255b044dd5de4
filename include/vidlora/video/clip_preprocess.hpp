#pragma once
// CLIP image preprocessing as transformers' CLIPImageProcessor does it: shortest side to 336 with
// PIL's bicubic resampling, center crop 336 x 336, x 1/255, normalise per channel; the result is a
// [frames, 3, H, W] float tensor. resize_bicubic reproduces Pillow's fixed-point resampler
// (ImagingResample, BICUBIC, a = -0.5, antialiased when shrinking) so the 8-bit pixels match PIL.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <utility>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/video/frame.hpp>

namespace vidlora::video {

// Fixed-point arithmetic of the bicubic resize: Pillow's (22-bit weights; transformers' PIL-based "slow"
// processors) or torch's uint8 antialiased kernel (int16 weights, as many bits as the largest weight allows;
// torchvision under transformers' video processors and "Fast" image processors). Same filter, same passes.
enum class ResizeArithmetic { Pillow, TorchUint8 };

struct ClipPreprocessOptions {
  int shortest_edge = 336;  // resize so the shorter side is this long (aspect kept, longer side truncated)
  int crop_height = 336;
  int crop_width = 336;
  std::array<float, 3> mean{0.48145466f, 0.4578275f, 0.40821073f};
  std::array<float, 3> std{0.26862954f, 0.26130258f, 0.27577711f};
  // The other steps of a HF image/video processor config (model::LlavaProcessor reads them); the defaults are
  // CLIP's. resize_height/width > 0: size {"height", "width"} (resize to exactly that, aspect not kept).
  bool do_resize = true;
  int resize_height = 0;
  int resize_width = 0;
  bool do_center_crop = true;
  bool do_rescale = true;
  double rescale_factor = 1.0 / 255.0;
  bool do_normalize = true;
  ResizeArithmetic resize_arithmetic = ResizeArithmetic::Pillow;
};

// [frames, 3, height, width], row-major: value(f, c, y, x) = data[((f * 3 + c) * height + y) * width + x].
struct ClipTensor {
  int frames = 0;
  int channels = 3;
  int height = 0;
  int width = 0;
  std::vector<float> data;
  float at(int f, int c, int y, int x) const {
    return data[((static_cast<std::size_t>(f) * channels + c) * height + y) * width + x];
  }
};

namespace detail {
inline constexpr int pil_precision_bits = 32 - 8 - 2;

inline double pil_bicubic(double x) {  // Keys cubic, a = -0.5, support 2
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Pillow's precompute_coeffs + normalize_coeffs_8bpc: per output position the first input index,
// the tap count and fixed-point weights (ksize taps each).
struct PilCoeffs {
  int ksize = 0;
  int precision = pil_precision_bits;  // fixed-point bits of the weights
  std::vector<int> first, count;
  std::vector<int> weights;
};

inline PilCoeffs pil_coefficients(int in_size, int out_size, ResizeArithmetic arithmetic = ResizeArithmetic::Pillow) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = 2.0 * filterscale;
  PilCoeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(out_size);
  c.count.resize(out_size);
  c.weights.assign(static_cast<std::size_t>(out_size) * c.ksize, 0);
  std::vector<double> k(c.ksize), normalized(static_cast<std::size_t>(out_size) * c.ksize, 0.0);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      k[x] = pil_bicubic((x + xmin - center + 0.5) * ss);
      ww += k[x];
    }
    for (int x = 0; x < xmax; ++x)
      normalized[static_cast<std::size_t>(xx) * c.ksize + x] = ww != 0.0 ? k[x] / ww : k[x];
    c.first[xx] = xmin;
    c.count[xx] = xmax;
  }
  if (arithmetic == ResizeArithmetic::TorchUint8) {
    // torch: the most bits (< 22) for which twice the largest weight still fits an int16.
    const double w_max = *std::max_element(normalized.begin(), normalized.end());
    for (c.precision = 0; c.precision < 22; ++c.precision)
      if (static_cast<int>(0.5 + w_max * (1 << (c.precision + 1))) >= (1 << 15)) break;
  }
  for (std::size_t i = 0; i < normalized.size(); ++i) {
    const double w = normalized[i];
    c.weights[i] =
        w < 0 ? static_cast<int>(-0.5 + w * (1 << c.precision)) : static_cast<int>(0.5 + w * (1 << c.precision));
  }
  return c;
}

inline std::uint8_t pil_clip8(int v, int precision = pil_precision_bits) {
  v >>= precision;
  return static_cast<std::uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}
}  // namespace detail

// Pillow's Image.resize((width, height), BICUBIC) on an RGB image: horizontal pass over the rows the
// vertical pass needs, rounded to 8 bits, then the vertical pass; a pass whose size is unchanged is skipped.
inline RgbImage resize_bicubic(const RgbImage& in, int width, int height,
                               ResizeArithmetic arithmetic = ResizeArithmetic::Pillow) {
  require(in.width > 0 && in.height > 0 && static_cast<std::size_t>(in.width) * in.height * 3 == in.data.size(),
          "resize_bicubic: image {}x{} holds {} bytes", in.width, in.height, in.data.size());
  require(width > 0 && height > 0, "resize_bicubic: target size {}x{}", width, height);
  if (width == in.width && height == in.height) return in;
  RgbImage tmp = in;
  int row0 = 0;  // first input row the vertical pass reads
  const auto vert = detail::pil_coefficients(in.height, height, arithmetic);
  if (width != in.width) {
    const auto horiz = detail::pil_coefficients(in.width, width, arithmetic);
    row0 = vert.first[0];
    const int row_end = vert.first[height - 1] + vert.count[height - 1];
    tmp = RgbImage{width, row_end - row0,
                   std::vector<std::uint8_t>(static_cast<std::size_t>(width) * (row_end - row0) * 3)};
    for (int y = 0; y < tmp.height; ++y) {
      const std::uint8_t* src = in.data.data() + static_cast<std::size_t>(y + row0) * in.width * 3;
      std::uint8_t* dst = tmp.data.data() + static_cast<std::size_t>(y) * width * 3;
      for (int xx = 0; xx < width; ++xx) {
        const int* k = &horiz.weights[static_cast<std::size_t>(xx) * horiz.ksize];
        int s0 = 1 << (horiz.precision - 1), s1 = s0, s2 = s0;
        for (int x = 0; x < horiz.count[xx]; ++x) {
          const std::uint8_t* p = src + (x + horiz.first[xx]) * 3;
          s0 += p[0] * k[x];
          s1 += p[1] * k[x];
          s2 += p[2] * k[x];
        }
        dst[xx * 3 + 0] = detail::pil_clip8(s0, horiz.precision);
        dst[xx * 3 + 1] = detail::pil_clip8(s1, horiz.precision);
        dst[xx * 3 + 2] = detail::pil_clip8(s2, horiz.precision);
      }
    }
  }
  if (height == in.height) return tmp;
  RgbImage out{width, height, std::vector<std::uint8_t>(static_cast<std::size_t>(width) * height * 3)};
  const std::size_t stride = static_cast<std::size_t>(width) * 3;
  for (int yy = 0; yy < height; ++yy) {
    const int* k = &vert.weights[static_cast<std::size_t>(yy) * vert.ksize];
    const int first = vert.first[yy] - row0;
    for (std::size_t i = 0; i < stride; ++i) {
      int s = 1 << (vert.precision - 1);
      for (int y = 0; y < vert.count[yy]; ++y) s += tmp.data[(first + y) * stride + i] * k[y];
      out.data[yy * stride + i] = detail::pil_clip8(s, vert.precision);
    }
  }
  return out;
}

// Size after "shortest edge" resizing, as transformers computes it: short side = edge,
// long side = int(edge * long / short).
inline std::pair<int, int> clip_resize_size(int width, int height, int shortest_edge) {
  const bool wide = width >= height;
  const int s = wide ? height : width, l = wide ? width : height;
  const int new_long = static_cast<int>(static_cast<double>(static_cast<long long>(shortest_edge) * l) / s);
  return wide ? std::pair{new_long, shortest_edge} : std::pair{shortest_edge, new_long};
}

// The resized size of a width x height image (before cropping).
inline std::pair<int, int> clip_resized_size(int width, int height, const ClipPreprocessOptions& o) {
  if (!o.do_resize) return {width, height};
  if (o.resize_height > 0 || o.resize_width > 0) {
    require(o.resize_height > 0 && o.resize_width > 0, "clip_preprocess: resize size {}x{} must be positive",
            o.resize_width, o.resize_height);
    return {o.resize_width, o.resize_height};
  }
  require(o.shortest_edge > 0, "clip_preprocess: shortest_edge {} must be positive", o.shortest_edge);
  return clip_resize_size(width, height, o.shortest_edge);
}

// The output [height, width] of one width x height image.
inline std::pair<int, int> clip_output_size(int width, int height, const ClipPreprocessOptions& o) {
  if (o.do_center_crop) return {o.crop_height, o.crop_width};
  const auto [w, h] = clip_resized_size(width, height, o);
  return {h, w};
}

// Appends one image's [3, H, W] block to `out` (H x W: the crop, or the resized size without cropping).
inline void clip_preprocess_into(const RgbImage& image, const ClipPreprocessOptions& o, std::vector<float>& out) {
  require(!o.do_center_crop || (o.crop_height > 0 && o.crop_width > 0), "clip_preprocess: sizes must be positive");
  const auto [rw, rh] = clip_resized_size(image.width, image.height, o);
  const RgbImage r = o.do_resize ? resize_bicubic(image, rw, rh, o.resize_arithmetic) : image;
  const int out_h = o.do_center_crop ? o.crop_height : r.height, out_w = o.do_center_crop ? o.crop_width : r.width;
  // transformers' center_crop: top = (h - crop) // 2 (floor), zero padding when the image is smaller.
  const int nh = std::max(out_h, r.height), nw = std::max(out_w, r.width);
  const int pad_top = (nh - r.height + 1) / 2, pad_left = (nw - r.width + 1) / 2;
  const auto floor_half = [](int v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); };
  const int top = floor_half(r.height - out_h) + pad_top;
  const int left = floor_half(r.width - out_w) + pad_left;
  const std::size_t base = out.size();
  out.resize(base + static_cast<std::size_t>(3) * out_h * out_w);
  const std::array<float, 3> mean = o.mean, sd = o.std;
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < out_h; ++y)
      for (int x = 0; x < out_w; ++x) {
        const int sy = top + y - pad_top, sx = left + x - pad_left;  // position in the resized image
        const int v = (sy >= 0 && sy < r.height && sx >= 0 && sx < r.width) ? r.at(sx, sy, c) : 0;
        // rescale in double then float32, normalise in float32, as transformers' numpy code does
        float value =
            o.do_rescale ? static_cast<float>(static_cast<double>(v) * o.rescale_factor) : static_cast<float>(v);
        if (o.do_normalize) value = (value - mean[c]) / sd[c];
        out[base + (static_cast<std::size_t>(c) * out_h + y) * out_w + x] = value;
      }
}

namespace detail {
template <class Image, class Rgb>
ClipTensor clip_preprocess_all(const std::vector<Image>& images, const ClipPreprocessOptions& options, Rgb rgb) {
  ClipTensor t{static_cast<int>(images.size()), 3, options.crop_height, options.crop_width, {}};
  if (!images.empty())
    std::tie(t.height, t.width) = clip_output_size(rgb(images[0]).width, rgb(images[0]).height, options);
  t.data.reserve(images.size() * 3 * static_cast<std::size_t>(t.height) * t.width);
  for (const auto& image : images) {
    require(clip_output_size(rgb(image).width, rgb(image).height, options) == std::pair{t.height, t.width},
            "clip_preprocess: frames of different sizes ({}x{} and {}x{}) give different output sizes without a crop",
            rgb(images[0]).width, rgb(images[0]).height, rgb(image).width, rgb(image).height);
    clip_preprocess_into(rgb(image), options, t.data);
  }
  return t;
}
}  // namespace detail

inline ClipTensor clip_preprocess(const std::vector<RgbImage>& images, const ClipPreprocessOptions& options = {}) {
  return detail::clip_preprocess_all(images, options, [](const RgbImage& i) -> const RgbImage& { return i; });
}

inline ClipTensor clip_preprocess(const std::vector<SampledFrame>& frames, const ClipPreprocessOptions& options = {}) {
  return detail::clip_preprocess_all(frames, options, [](const SampledFrame& f) -> const RgbImage& { return f.rgb; });
}

}  // namespace vidlora::video
