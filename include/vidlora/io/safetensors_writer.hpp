#pragma once
// Writing .safetensors files laid out as the Python `safetensors` library lays them out, so the
// same tensors give the same bytes: tensors sorted by dtype (the crate's enum order, descending)
// then by name, data packed in that order, compact JSON header with "__metadata__" first, padded
// with spaces to a multiple of 8 bytes. Files are written atomically (AtomicFile).

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/io/atomic_file.hpp>
#include <vidlora/io/dtype.hpp>
#include <vidlora/io/half.hpp>
#include <vidlora/io/safetensors.hpp>

namespace vidlora::io {

// One tensor to write: its dtype, shape and little-endian bytes.
struct TensorData {
  Dtype dtype = Dtype::F32;
  std::vector<std::int64_t> shape;
  std::vector<std::byte> bytes;

  // Floats stored as `dtype` (F32, or F16 / BF16 rounded to nearest even as torch does).
  static TensorData from_floats(std::span<const float> values, std::vector<std::int64_t> shape,
                                Dtype dtype = Dtype::F32) {
    require(is_float_dtype(dtype), "TensorData: cannot store floats as {}", dtype_name(dtype));
    std::int64_t numel = 1;
    for (std::int64_t d : shape) {
      require(d >= 0, "TensorData: negative dimension in shape {}", dims_string(shape));
      numel *= d;
    }
    require(static_cast<std::size_t>(numel) == values.size(), "TensorData: {} values do not fill shape {}",
            values.size(), dims_string(shape));
    TensorData t{dtype, std::move(shape), std::vector<std::byte>(values.size() * dtype_size(dtype))};
    if (dtype == Dtype::F32) {
      if (!values.empty()) std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
    } else {
      for (std::size_t i = 0; i < values.size(); ++i) {
        const std::uint16_t bits = dtype == Dtype::BF16 ? float_to_bf16_bits(values[i]) : float_to_fp16_bits(values[i]);
        std::memcpy(t.bytes.data() + 2 * i, &bits, 2);
      }
    }
    return t;
  }
  // A matrix as a 2-D tensor [rows, cols].
  static TensorData from_matrix(const Matrix& m, Dtype dtype = Dtype::F32) {
    return from_floats(as_span(m), {m.rows(), m.cols()}, dtype);
  }
  // A vector as a 1-D tensor [n].
  static TensorData from_vector(const Vector& v, Dtype dtype = Dtype::F32) {
    return from_floats({v.data(), static_cast<std::size_t>(v.size())}, {v.size()}, dtype);
  }
  // Bytes as they are (any dtype); checked against shape × dtype size when written.
  static TensorData from_raw(Dtype dtype, std::vector<std::int64_t> shape, std::span<const std::byte> bytes) {
    return {dtype, std::move(shape), std::vector<std::byte>(bytes.begin(), bytes.end())};
  }
};

using TensorMap = std::map<std::string, TensorData>;

namespace detail {

// Names in file order: dtype descending (the crate's enum order), then name (bytewise).
inline std::vector<const TensorMap::value_type*> safetensors_order(const TensorMap& tensors) {
  std::vector<const TensorMap::value_type*> order;
  for (const auto& entry : tensors) order.push_back(&entry);
  std::stable_sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    return static_cast<int>(a->second.dtype) > static_cast<int>(b->second.dtype);
  });  // std::map already sorted the names
  return order;
}

// The padded JSON header (without the 8-byte length).
inline std::string safetensors_header(const TensorMap& tensors, const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header["__metadata__"] = std::move(meta);
  }
  std::uint64_t offset = 0;
  for (const auto* entry : safetensors_order(tensors)) {
    const auto& [name, t] = *entry;
    require(name != "__metadata__", "write_safetensors: a tensor cannot be named __metadata__");
    std::uint64_t numel = 1;
    for (std::int64_t d : t.shape) {
      require(d >= 0, "write_safetensors: tensor '{}' has a negative dimension in {}", name, dims_string(t.shape));
      numel *= static_cast<std::uint64_t>(d);
    }
    require(numel * dtype_size(t.dtype) == t.bytes.size(),
            "write_safetensors: tensor '{}' of shape {} and dtype {} needs {} bytes but has {}", name,
            dims_string(t.shape), dtype_name(t.dtype), numel * dtype_size(t.dtype), t.bytes.size());
    nlohmann::ordered_json info = nlohmann::ordered_json::object();
    info["dtype"] = std::string(dtype_name(t.dtype));
    info["shape"] = t.shape;
    info["data_offsets"] = {offset, offset + t.bytes.size()};
    header[name] = std::move(info);
    offset += t.bytes.size();
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail("write_safetensors: a tensor name or metadata string is not valid UTF-8 ({})", e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

inline std::array<std::byte, 8> little_endian_u64(std::uint64_t value) {
  std::array<std::byte, 8> out{};
  std::memcpy(out.data(), &value, 8);
  return out;
}

}  // namespace detail

// The complete file as bytes.
inline std::vector<std::byte> serialize_safetensors(const TensorMap& tensors,
                                                    const std::map<std::string, std::string>& metadata = {}) {
  const std::string header = detail::safetensors_header(tensors, metadata);
  const auto order = detail::safetensors_order(tensors);
  std::size_t total = 8 + header.size();
  for (const auto* entry : order) total += entry->second.bytes.size();
  std::vector<std::byte> out(total);
  const auto length = detail::little_endian_u64(header.size());
  std::memcpy(out.data(), length.data(), 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  std::size_t at = 8 + header.size();
  for (const auto* entry : order) {
    const auto& bytes = entry->second.bytes;
    if (!bytes.empty()) std::memcpy(out.data() + at, bytes.data(), bytes.size());
    at += bytes.size();
  }
  return out;
}

// Writes `tensors` (and optional "__metadata__" strings) to `path` atomically: `<path>.tmp`,
// fsync, rename. On any failure `path` keeps whatever it held before.
inline void write_safetensors(const std::filesystem::path& path, const TensorMap& tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
  const std::string header = detail::safetensors_header(tensors, metadata);  // validates before creating files
  AtomicFile file(path);
  file.write(std::span<const std::byte>(detail::little_endian_u64(header.size())));
  file.write(header);
  for (const auto* entry : detail::safetensors_order(tensors))
    file.write(std::span<const std::byte>(entry->second.bytes));
  file.commit();
}

}  // namespace vidlora::io
