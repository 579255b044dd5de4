#pragma once
// Reading .safetensors files (https://github.com/huggingface/safetensors): an 8-byte little-endian
// header length N, N bytes of JSON {name: {dtype, shape, data_offsets}, "__metadata__": {..}},
// then the data area. The file is memory-mapped and the whole header is validated before any
// tensor byte is touched; every error names the file, the tensor and the problem.

#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/io/dtype.hpp>
#include <vidlora/io/half.hpp>
#include <vidlora/io/mapped_file.hpp>

namespace vidlora::io {

static_assert(std::endian::native == std::endian::little, "safetensors stores little-endian data");

// The safetensors crate refuses headers above 100 MB; so do we (a hostile length cannot make us
// allocate or parse more than that).
inline constexpr std::uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;
// JSON nesting deeper than this is refused before parsing (a valid header nests 3 levels).
inline constexpr int kMaxSafetensorsHeaderDepth = 64;

// One tensor's header entry. Offsets are into the data area (after the header).
struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<std::int64_t> shape;  // [] for a scalar
  std::size_t begin = 0;            // byte offsets [begin, end) into the data area
  std::size_t end = 0;

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (std::int64_t d : shape) n *= d;
    return n;
  }
  std::size_t nbytes() const { return end - begin; }
};

// "[2, 3]" for error messages.
inline std::string dims_string(const std::vector<std::int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

namespace detail {

// Converts `count` elements of a float dtype to float32 (unaligned source is fine).
inline void convert_to_float(Dtype dtype, const std::byte* src, float* dst, std::size_t count) {
  if (count == 0) return;  // dst may be null for an empty matrix (memcpy must not see it)
  switch (dtype) {
    case Dtype::F32: std::memcpy(dst, src, count * sizeof(float)); return;
    case Dtype::BF16:
    case Dtype::F16:
      for (std::size_t i = 0; i < count; ++i) {
        std::uint16_t bits;
        std::memcpy(&bits, src + 2 * i, 2);
        dst[i] = dtype == Dtype::BF16 ? bf16_bits_to_float(bits) : fp16_bits_to_float(bits);
      }
      return;
    default: fail("convert_to_float: {} is not a float dtype", dtype_name(dtype));
  }
}

// Deepest bracket nesting of a JSON text, strings skipped; stops counting past `limit`.
inline int json_depth(std::string_view text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"')
      in_string = true;
    else if (c == '{' || c == '[') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if (c == '}' || c == ']')
      --depth;
  }
  return deepest;
}

struct ParsedHeader {
  std::map<std::string, TensorInfo, std::less<>> tensors;
  std::map<std::string, std::string> metadata;
  std::size_t data_offset = 0;  // 8 + N
};

inline ParsedHeader parse_safetensors_header(std::span<const std::byte> file, const std::string& source) {
  const auto bad = [&](std::string_view problem) -> Error {
    return Error(fmt::format("safetensors file '{}': {}", source, problem));
  };
  if (file.size() < 8) throw bad(fmt::format("file is {} bytes, too short for the 8-byte header length", file.size()));
  std::uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);
  if (n > kMaxSafetensorsHeaderBytes)
    throw bad(fmt::format("header length {} exceeds the {} byte limit", n, kMaxSafetensorsHeaderBytes));
  if (n > file.size() - 8)
    throw bad(fmt::format("header length {} runs past the end of the file ({} bytes)", n, file.size()));
  const std::string_view text(reinterpret_cast<const char*>(file.data()) + 8, static_cast<std::size_t>(n));
  if (text.empty() || text.front() != '{') throw bad("header is not a JSON object (must start with '{')");
  if (json_depth(text, kMaxSafetensorsHeaderDepth) > kMaxSafetensorsHeaderDepth)
    throw bad(fmt::format("header JSON nests deeper than {} levels", kMaxSafetensorsHeaderDepth));
  const nlohmann::json header = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) throw bad("header is not valid JSON");
  if (!header.is_object()) throw bad("header is not a JSON object");

  ParsedHeader out;
  out.data_offset = 8 + static_cast<std::size_t>(n);
  const std::size_t data_size = file.size() - out.data_offset;
  for (const auto& item : header.items()) {
    const std::string& name = item.key();  // not a structured binding: clang 14 cannot capture those
    const nlohmann::json& entry = item.value();
    if (name == "__metadata__") {
      if (entry.is_null()) continue;
      if (!entry.is_object()) throw bad("__metadata__ is not a JSON object of strings");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) throw bad(fmt::format("__metadata__ entry '{}' is not a string", key));
        out.metadata.emplace(key, value.get<std::string>());
      }
      continue;
    }
    const auto bad_tensor = [&](std::string_view problem) {
      return bad(fmt::format("tensor '{}': {}", name, problem));
    };
    if (!entry.is_object()) throw bad_tensor("entry is not a JSON object");
    TensorInfo info;
    info.name = name;

    const auto dtype_it = entry.find("dtype");
    if (dtype_it == entry.end() || !dtype_it->is_string()) throw bad_tensor("missing or non-string \"dtype\"");
    const auto& dtype_text = dtype_it->get_ref<const std::string&>();
    const auto dtype = parse_dtype(dtype_text);
    if (!dtype)
      throw bad_tensor(
          fmt::format("dtype {} is not supported (vidlora reads F32, F16, BF16; "
                      "F64, I64, I32, I16, I8, U64, U32, U16, U8, BOOL as raw bytes)",
                      dtype_text));
    info.dtype = *dtype;

    const auto shape_it = entry.find("shape");
    if (shape_it == entry.end() || !shape_it->is_array()) throw bad_tensor("missing or non-array \"shape\"");
    std::uint64_t numel = 1;
    bool overflow = false;
    for (const auto& dim : *shape_it) {
      if (!dim.is_number_unsigned())
        throw bad_tensor(fmt::format("shape {} has an entry that is not a non-negative integer", shape_it->dump()));
      const auto d = dim.get<std::uint64_t>();
      if (d > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        throw bad_tensor(fmt::format("shape {} has a dimension too large", shape_it->dump()));
      if (d != 0 && numel > std::numeric_limits<std::uint64_t>::max() / d) overflow = true;
      numel *= d;
      info.shape.push_back(static_cast<std::int64_t>(d));
    }
    const std::uint64_t element = dtype_size(info.dtype);
    if (overflow || (numel != 0 && numel > std::numeric_limits<std::uint64_t>::max() / element))
      throw bad_tensor(fmt::format("shape {} × {} bytes overflows 64 bits", dims_string(info.shape), element));
    const std::uint64_t expected_bytes = numel * element;

    const auto offsets_it = entry.find("data_offsets");
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
        !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned())
      throw bad_tensor("\"data_offsets\" is not a pair of non-negative integers");
    const auto begin = (*offsets_it)[0].get<std::uint64_t>();
    const auto end = (*offsets_it)[1].get<std::uint64_t>();
    if (begin > end) throw bad_tensor(fmt::format("data_offsets [{}, {}] end before they begin", begin, end));
    if (end > data_size)
      throw bad_tensor(fmt::format("data_offsets [{}, {}] run past the data area ({} bytes)", begin, end, data_size));
    if (end - begin != expected_bytes)
      throw bad_tensor(fmt::format("data_offsets [{}, {}] hold {} bytes, but shape {} of {} needs {}", begin, end,
                                   end - begin, dims_string(info.shape), dtype_text, expected_bytes));
    info.begin = static_cast<std::size_t>(begin);
    info.end = static_cast<std::size_t>(end);
    out.tensors.emplace(name, std::move(info));
  }

  // No two tensors may share a byte (empty tensors hold none).
  std::vector<const TensorInfo*> by_offset;
  for (const auto& [name, info] : out.tensors)
    if (info.nbytes() > 0) by_offset.push_back(&info);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
  for (std::size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& prev = *by_offset[i - 1];
    const TensorInfo& next = *by_offset[i];
    if (next.begin < prev.end)
      throw bad(fmt::format("tensors '{}' [{}, {}] and '{}' [{}, {}] overlap", prev.name, prev.begin, prev.end,
                            next.name, next.begin, next.end));
  }
  return out;
}

}  // namespace detail

// A validated safetensors file; tensor bytes stay in the (memory-mapped) file until asked for.
class SafetensorsFile {
 public:
  // Memory-maps `path` and validates its header.
  static SafetensorsFile open(const std::filesystem::path& path) {
    auto mapped = std::make_shared<MappedFile>(MappedFile::open(path));
    const auto bytes = mapped->bytes();
    const MappedFile* mapping = mapped.get();
    return SafetensorsFile(std::move(mapped), bytes, path.string(), mapping);
  }

  // Parses an in-memory file (tests, fuzzing, network buffers); `label` names it in errors.
  static SafetensorsFile from_bytes(std::vector<std::byte> bytes, std::string label = "<memory>") {
    auto owned = std::make_shared<std::vector<std::byte>>(std::move(bytes));
    const std::span<const std::byte> view(owned->data(), owned->size());
    return SafetensorsFile(std::move(owned), view, std::move(label));
  }

  // The path (or label) used in error messages.
  const std::string& source() const { return source_; }
  std::size_t size() const { return tensors_.size(); }
  bool contains(std::string_view name) const { return tensors_.find(name) != tensors_.end(); }

  // Tensor names in sorted order.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(tensors_.size());
    for (const auto& [name, info] : tensors_) out.push_back(name);
    return out;
  }

  const TensorInfo& info(std::string_view name) const {
    const auto it = tensors_.find(name);
    if (it == tensors_.end())
      fail("safetensors file '{}': no tensor '{}' ({} tensors in the file)", source_, name, tensors_.size());
    return it->second;
  }

  // The tensor's bytes as stored (little-endian), valid while this object (or a copy) lives.
  std::span<const std::byte> raw(std::string_view name) const {
    const TensorInfo& t = info(name);
    return data_.subspan(t.begin, t.nbytes());
  }

  // The tensor as a float matrix: [rows, cols] for 2-D, [1, n] for 1-D, [1, 1] for a scalar.
  Matrix matrix(std::string_view name) const {
    const TensorInfo& t = float_info(name);
    if (t.shape.size() > 2)
      fail(
          "safetensors file '{}': tensor '{}' has shape {}; matrix() reads tensors of at most 2 dimensions "
          "(use vector() for the flat values)",
          source_, name, dims_string(t.shape));
    const Eigen::Index rows = t.shape.size() == 2 ? t.shape[0] : 1;
    const Eigen::Index cols = t.shape.empty() ? 1 : t.shape.back();
    Matrix m(rows, cols);
    detail::convert_to_float(t.dtype, data_.data() + t.begin, m.data(), static_cast<std::size_t>(m.size()));
    return m;
  }

  // Every element in row-major order, as float, whatever the tensor's rank.
  Vector vector(std::string_view name) const {
    const TensorInfo& t = float_info(name);
    Vector v(static_cast<Eigen::Index>(t.numel()));
    detail::convert_to_float(t.dtype, data_.data() + t.begin, v.data(), static_cast<std::size_t>(v.size()));
    return v;
  }

  // Drops the memory-mapped pages of tensor `name` from the resident set once its values have been
  // read (see MappedFile::release): its bytes stay readable, a later read maps them in again. A file
  // parsed from memory has nothing to drop. Returns the bytes dropped.
  std::size_t release(std::string_view name) const {
    const TensorInfo& t = info(name);
    return mapping_ ? mapping_->release(data_.subspan(t.begin, t.nbytes())) : 0;
  }
  // Whether the bytes are a memory-mapped file (open) rather than a buffer (from_bytes).
  bool memory_mapped() const { return mapping_ != nullptr; }

  // The "__metadata__" strings (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile(std::shared_ptr<const void> owner, std::span<const std::byte> file, std::string source,
                  const MappedFile* mapping = nullptr)
      : owner_(std::move(owner)), mapping_(mapping), source_(std::move(source)) {
    auto parsed = detail::parse_safetensors_header(file, source_);
    tensors_ = std::move(parsed.tensors);
    metadata_ = std::move(parsed.metadata);
    data_ = file.subspan(parsed.data_offset);
  }

  const TensorInfo& float_info(std::string_view name) const {
    const TensorInfo& t = info(name);
    if (!is_float_dtype(t.dtype))
      fail("safetensors file '{}': tensor '{}' has dtype {}; only F32, F16 and BF16 convert to float (use raw())",
           source_, name, dtype_name(t.dtype));
    return t;
  }

  std::shared_ptr<const void> owner_;    // keeps the mapping (or buffer) alive
  const MappedFile* mapping_ = nullptr;  // owner_ when it is a mapping
  std::span<const std::byte> data_;      // the data area
  std::string source_;
  std::map<std::string, TensorInfo, std::less<>> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace vidlora::io
