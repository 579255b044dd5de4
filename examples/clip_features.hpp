#pragma once
// ClipFeatures: what the programs' model classes (demo_common.hpp, hf_model.hpp) give for a clip's frozen vision
// features, through their FeatureCache: get (also the call operator) returns them, computed and stored on a miss;
// ensure only makes sure they are stored, leaving a valid entry unread (train_captioner runs it over every clip
// before training, while the GPU vision tower has the card to itself).

#include <filesystem>
#include <functional>

#include <vidlora/core/matrix.hpp>

namespace demo {

struct ClipFeatures {
  std::function<vidlora::Matrix(const std::filesystem::path&)> get;
  std::function<bool(const std::filesystem::path&)> ensure;  // true: computed now

  vidlora::Matrix operator()(const std::filesystem::path& video) const { return get(video); }
};

}  // namespace demo
