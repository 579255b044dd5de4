#pragma once
// ClipFeatures: what the programs' model classes (demo_common.hpp, hf_model.hpp) give for a clip's frozen vision
// features, through their FeatureCache: get (also the call operator) returns them, computed and stored on a miss;
// ensure only makes sure they are stored, leaving a valid entry unread (train_captioner runs it over every clip
// before training, while the GPU vision tower has the card to itself).

#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include <vidlora/core/matrix.hpp>
#include <vidlora/train/feature_cache.hpp>

namespace demo {

struct ClipFeatures {
  std::function<vidlora::Matrix(const std::filesystem::path&)> get;
  std::function<bool(const std::filesystem::path&)> ensure;  // true: computed now

  vidlora::Matrix operator()(const std::filesystem::path& video) const { return get(video); }
};

// The features of one sampler, frame count and encoder id, kept in `cache`; `compute` encodes a clip on a miss.
inline ClipFeatures cached_clip_features(std::shared_ptr<vidlora::train::FeatureCache> cache, std::string sampler,
                                         int frames, std::string encoder_id,
                                         std::function<vidlora::Matrix(const std::filesystem::path&)> compute) {
  const auto key = [sampler = std::move(sampler), frames, id = std::move(encoder_id)](const std::filesystem::path& v) {
    return vidlora::train::FeatureKey{v, sampler, frames, id};
  };
  return {[cache, key, compute](const std::filesystem::path& v) { return cache->get(key(v), compute); },
          [cache, key, compute](const std::filesystem::path& v) { return cache->ensure(key(v), compute); }};
}

}  // namespace demo
