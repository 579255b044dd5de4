#pragma once
// Shared test helpers: reference fixtures (JSON written by tools/reference/*.py) and comparisons.

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <vector>

#include <unistd.h>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>

namespace vidlora::test {

// An empty directory under the system's temporary directory, named after the test and this process (ctest runs
// tests in parallel), removed with everything in it at the end of the scope.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& name)
      : path(std::filesystem::temp_directory_path() / ("vidlora_test_" + name + "_" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

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

// ‖a − ref‖∞ / ‖ref‖∞: the largest error relative to the reference's largest magnitude. A normwise
// error (not element by element: an element near zero may carry the rounding of much larger terms, as in
// every product or sum). A zero reference gives ‖a‖∞, the absolute error.
template <class A, class B>
double normwise_error(const A& a, const B& ref) {
  const double scale = static_cast<double>(ref.cwiseAbs().maxCoeff());
  const double diff =
      static_cast<double>((a.template cast<double>() - ref.template cast<double>()).cwiseAbs().maxCoeff());
  return scale > 0 ? diff / scale : diff;
}

}  // namespace vidlora::test
