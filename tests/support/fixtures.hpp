#pragma once
// Shared test helpers: reference fixtures (JSON written by tools/reference/*.py) and comparisons.

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>

namespace vidlora::test {

inline std::string fixture_path(const std::string& relative) {
  return std::string(VIDLORA_FIXTURE_DIR) + "/" + relative;
}

// Loads tests/fixtures/<relative> (JSON).
inline nlohmann::json load_fixture(const std::string& relative) {
  const std::string path = fixture_path(relative);
  std::ifstream in(path);
  if (!in) throw Error("cannot open fixture " + path + " (regenerate with tools/reference/)");
  return nlohmann::json::parse(in);
}

// A JSON 2-D array (list of rows) as a row-major matrix.
template <class Scalar = float>
MatrixOf<Scalar> json_matrix(const nlohmann::json& rows) {
  const auto r = static_cast<Eigen::Index>(rows.size());
  const auto c = r ? static_cast<Eigen::Index>(rows[0].size()) : 0;
  MatrixOf<Scalar> m(r, c);
  for (Eigen::Index i = 0; i < r; ++i)
    for (Eigen::Index j = 0; j < c; ++j) m(i, j) = rows[i][j].get<Scalar>();
  return m;
}

template <class T>
std::vector<T> json_vector(const nlohmann::json& values) {
  return values.get<std::vector<T>>();
}

// max |a - b| / max(1, max|b|): a relative error robust to near-zero references.
template <class A, class B>
double max_rel_error(const A& a, const B& b) {
  const double scale = std::max(1.0, static_cast<double>(b.cwiseAbs().maxCoeff()));
  return static_cast<double>((a.template cast<double>() - b.template cast<double>()).cwiseAbs().maxCoeff()) / scale;
}

}  // namespace vidlora::test
