#pragma once
// Test-only helpers shared by the model tests: the tiny reference models of
// tools/reference/tiny_models.py and comparisons.

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include <vidlora/core/matrix.hpp>

#include "fixtures.hpp"

namespace vidlora::test {

inline std::string model_dir(const std::string& name) { return fixture_path("model/" + name); }

// A JSON [batch][seq][vocab] array as [batch·seq, vocab].
inline Matrix json_3d(const nlohmann::json& a) {
  const auto b = static_cast<Eigen::Index>(a.size()), t = static_cast<Eigen::Index>(a[0].size()),
             v = static_cast<Eigen::Index>(a[0][0].size());
  Matrix m(b * t, v);
  for (Eigen::Index i = 0; i < b; ++i)
    for (Eigen::Index j = 0; j < t; ++j)
      for (Eigen::Index k = 0; k < v; ++k) m(i * t + j, k) = a[i][j][k].get<float>();
  return m;
}

inline std::vector<int> json_flat_ints(const nlohmann::json& a) {
  std::vector<int> out;
  for (const auto& row : a)
    for (const auto& v : row) out.push_back(v.get<int>());
  return out;
}

// Clip b of a reference's pixel_values_videos [batch][frames][C][H][W], flattened frame by frame.
inline std::vector<float> clip_pixels(const nlohmann::json& videos, std::size_t b) {
  std::vector<float> out;
  for (const auto& frame : videos[b])
    for (const auto& c : frame)
      for (const auto& row : c)
        for (const auto& v : row) out.push_back(v.get<float>());
  return out;
}

inline nlohmann::json model_reference(const std::string& name) {
  return load_fixture("model/" + name + "/reference.json");
}

}  // namespace vidlora::test
