#pragma once
// Test-only: a minimal reader for the small float32 safetensors fixtures (tests/fixtures/model/*),
// satisfying model::TensorSource. The library's checkpoint reader lives in vidlora::io.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <vidlora/core/error.hpp>

namespace vidlora::test {

class SafetensorsF32 {
 public:
  explicit SafetensorsF32(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    require(static_cast<bool>(in), "cannot open {}", path);
    bytes_.assign(std::istreambuf_iterator<char>(in), {});
    require(bytes_.size() >= 8, "{}: too short", path);
    std::uint64_t n = 0;
    std::memcpy(&n, bytes_.data(), 8);
    require(8 + n <= bytes_.size(), "{}: header length {} exceeds the file", path, n);
    header_ = nlohmann::json::parse(bytes_.begin() + 8, bytes_.begin() + 8 + static_cast<std::ptrdiff_t>(n));
    data_offset_ = 8 + n;
  }
  bool contains(const std::string& name) const { return header_.contains(name) && name != "__metadata__"; }
  std::vector<std::int64_t> shape(const std::string& name) const {
    return header_.at(name).at("shape").get<std::vector<std::int64_t>>();
  }
  std::vector<float> read_float(const std::string& name) const {
    const auto& e = header_.at(name);
    require(e.at("dtype") == "F32", "test reader: {} is {}, only F32 fixtures", name, e.at("dtype").dump());
    const auto off = e.at("data_offsets").get<std::vector<std::uint64_t>>();
    std::vector<float> out((off[1] - off[0]) / 4);
    std::memcpy(out.data(), bytes_.data() + data_offset_ + off[0], off[1] - off[0]);
    return out;
  }

 private:
  std::vector<char> bytes_;
  nlohmann::json header_;
  std::size_t data_offset_ = 0;
};

}  // namespace vidlora::test
