#pragma once
// FrameEncoder: a frozen vision tower seen through what feature extraction asks of it — its config and
// features(pixels, frames) — whichever backend runs it: model::ClipVision on the CPU, model::cuda::ClipVisionCuda on
// the GPU (a GPU preset's train_captioner). The video feature code (train/video_features.hpp, the programs' support
// files, compiled once by the host compiler) takes one, so the choice of backend stays with the program.
// variant() names how the tower computes when that changes its features (a GPU tower's "bf16", "fp16" or "tf32");
// empty for the fp32 tower the CPU runs: the programs' feature caches add it to their ids, so features of one
// precision are never read as another's.

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>

#include <vidlora/core/matrix.hpp>
#include <vidlora/model/config.hpp>

namespace vidlora::model {

class FrameEncoder {
 public:
  // Shares ownership of `encoder` (any type with config() -> const ClipVisionConfig& and
  // features(std::span<const float>, Eigen::Index) -> Matrix).
  template <class E>
  explicit FrameEncoder(std::shared_ptr<E> encoder, std::string variant = {})
      : variant_(std::move(variant)),
        config_(&encoder->config()),
        features_([tower = std::shared_ptr<const E>(std::move(encoder))](
                      std::span<const float> pixels, Eigen::Index frames) { return tower->features(pixels, frames); }) {
  }
  // Refers to `encoder`, which must outlive this.
  template <class E>
  static FrameEncoder borrowing(const E& encoder) {
    return FrameEncoder(std::shared_ptr<const E>(std::shared_ptr<const E>{}, &encoder));
  }

  const ClipVisionConfig& config() const { return *config_; }
  const std::string& variant() const { return variant_; }
  // pixels: frames × [channels, image_size, image_size] -> [frames · tokens per frame, feature width].
  Matrix features(std::span<const float> pixels, Eigen::Index frames) const { return features_(pixels, frames); }

 private:
  std::string variant_;
  const ClipVisionConfig* config_;
  std::function<Matrix(std::span<const float>, Eigen::Index)> features_;
};

}  // namespace vidlora::model
