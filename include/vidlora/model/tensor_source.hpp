#pragma once
// Where model weights come from: any type that answers contains / shape / read_float by Hugging
// Face key name (a safetensors checkpoint directory, an in-memory map). Shapes are checked here,
// once, with errors that name the key and both shapes.

#include <cmath>
#include <concepts>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/core/rng.hpp>

namespace vidlora::model {

// A source of named float tensors (row-major, PyTorch order): either shape(name) + read_float(name),
// or io::CheckpointDir / io::SafetensorsFile's info(name).shape + vector(name) (bf16/f16 converted).
template <class S>
concept TensorSource = requires(const S& s, const std::string& name) {
  { s.contains(name) } -> std::convertible_to<bool>;
}
&&(
    requires(const S& s, const std::string& name) {
      { s.shape(name) } -> std::convertible_to<std::vector<std::int64_t>>;
      { s.read_float(name) } -> std::convertible_to<std::vector<float>>;
    } ||
    requires(const S& s, const std::string& name) {
      { s.info(name).shape } -> std::convertible_to<std::vector<std::int64_t>>;
      { s.vector(name) } -> std::convertible_to<Vector>;
    });

namespace detail {
template <class S>
std::vector<std::int64_t> source_shape(const S& s, const std::string& name) {
  if constexpr (requires { s.shape(name); }) {
    return s.shape(name);
  } else {
    return s.info(name).shape;
  }
}
template <class S>
std::vector<float> source_values(const S& s, const std::string& name) {
  if constexpr (requires { s.read_float(name); }) {
    return s.read_float(name);
  } else {
    const Vector v = s.vector(name);
    return std::vector<float>(v.data(), v.data() + v.size());
  }
}
}  // namespace detail

// Named tensors held in memory (tests, benchmarks, random models).
class TensorTable {
 public:
  struct Entry {
    std::vector<std::int64_t> shape;
    std::vector<float> data;
  };

  void insert(std::string name, std::vector<std::int64_t> shape, std::vector<float> data) {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    require(n == static_cast<std::int64_t>(data.size()), "TensorTable: {} has shape {} but {} values", name,
            fmt::format("{}", shape), data.size());
    tensors_[std::move(name)] = Entry{std::move(shape), std::move(data)};
  }
  void insert(std::string name, const Matrix& m) {
    insert(std::move(name), {m.rows(), m.cols()}, std::vector<float>(m.data(), m.data() + m.size()));
  }
  void erase(const std::string& name) { tensors_.erase(name); }
  bool contains(const std::string& name) const { return tensors_.count(name) > 0; }
  std::vector<std::int64_t> shape(const std::string& name) const { return at(name).shape; }
  std::vector<float> read_float(const std::string& name) const { return at(name).data; }
  const std::map<std::string, Entry>& tensors() const { return tensors_; }

 private:
  const Entry& at(const std::string& name) const {
    auto it = tensors_.find(name);
    require(it != tensors_.end(), "TensorTable: no tensor named {}", name);
    return it->second;
  }
  std::map<std::string, Entry> tensors_;
};

static_assert(TensorSource<TensorTable>);

// Throws unless `source` has tensor `name` with exactly `expected` shape; errors name the key and both shapes.
template <TensorSource S>
void expect_tensor(const S& source, const std::string& name, const std::vector<std::int64_t>& expected) {
  require(source.contains(name), "checkpoint is missing tensor \"{}\" (expected shape {})", name,
          fmt::format("{}", expected));
  const std::vector<std::int64_t> shape = detail::source_shape(source, name);
  require(shape == expected, "checkpoint tensor \"{}\" has shape {}, expected {}", name, fmt::format("{}", shape),
          fmt::format("{}", expected));
}

// The tensor `name` with exactly `expected` shape; errors name the key and both shapes.
template <TensorSource S>
std::vector<float> load_tensor(const S& source, const std::string& name, const std::vector<std::int64_t>& expected) {
  expect_tensor(source, name, expected);
  return detail::source_values(source, name);
}

// A float matrix or vector straight from a source that converts into one (io::CheckpointDir): one
// buffer of the result's size, no intermediate copies (a 7B model's embeddings are 0.5 GB each in float).
template <class T, class S>
concept DirectFloatMatrixSource = std::same_as<T, float> && requires(const S& s, const std::string& name) {
  { s.matrix(name) } -> std::same_as<Matrix>;
};
template <class T, class S>
concept DirectFloatVectorSource = std::same_as<T, float> && requires(const S& s, const std::string& name) {
  { s.vector(name) } -> std::same_as<Vector>;
};

template <class T = float, TensorSource S>
MatrixOf<T> load_matrix(const S& source, const std::string& name, Eigen::Index rows, Eigen::Index cols) {
  if constexpr (DirectFloatMatrixSource<T, S>) {
    expect_tensor(source, name, {rows, cols});
    return source.matrix(name);
  } else {
    const std::vector<float> v = load_tensor(source, name, {rows, cols});
    return Eigen::Map<const MatrixOf<float>>(v.data(), rows, cols).template cast<T>();
  }
}

template <class T = float, TensorSource S>
VectorOf<T> load_vector(const S& source, const std::string& name, Eigen::Index n) {
  if constexpr (DirectFloatVectorSource<T, S>) {
    expect_tensor(source, name, {n});
    return source.vector(name);
  } else {
    const std::vector<float> v = load_tensor(source, name, {n});
    return Eigen::Map<const VectorOf<float>>(v.data(), n).template cast<T>();
  }
}

// The first of `prefixes` for which `prefix + probe` exists (checkpoint layouts differ in prefix only).
template <TensorSource S>
std::string find_prefix(const S& source, const std::vector<std::string>& prefixes, const std::string& probe,
                        const char* what) {
  for (const auto& p : prefixes)
    if (source.contains(p + probe)) return p;
  fail("checkpoint has no {}: none of {} exists", what, fmt::format("{}", [&] {
         std::vector<std::string> keys;
         for (const auto& p : prefixes) keys.push_back(p + probe);
         return keys;
       }()));
}

// A matrix of N(0, std²) values from the counter RNG (Box–Muller), for random models.
inline Matrix random_normal(Eigen::Index rows, Eigen::Index cols, double std, std::uint64_t seed,
                            std::uint64_t stream) {
  CounterRng rng(seed, stream);
  Matrix m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) {
    const double u1 = 1.0 - rng.uniform(), u2 = rng.uniform();
    m.data()[i] = static_cast<float>(std * std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }
  return m;
}

}  // namespace vidlora::model
