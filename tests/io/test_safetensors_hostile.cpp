// Hostile and broken safetensors files: every one is refused with an error naming the file, the
// tensor and the problem, before any tensor byte is read.
#include <catch2/catch.hpp>

#include <vidlora/io.hpp>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fixtures.hpp"

using namespace vidlora;
using Catch::Contains;

namespace {

// An 8-byte length (the header's, unless overridden), the header text, `data_bytes` zero bytes.
std::vector<std::byte> make_file(const std::string& header, std::size_t data_bytes = 0,
                                 std::uint64_t declared_length = UINT64_MAX) {
  const std::uint64_t n = declared_length == UINT64_MAX ? header.size() : declared_length;
  std::vector<std::byte> out(8 + header.size() + data_bytes);
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  return out;
}

io::SafetensorsFile parse(std::vector<std::byte> bytes) {
  return io::SafetensorsFile::from_bytes(std::move(bytes), "evil.safetensors");
}

}  // namespace

TEST_CASE("safetensors file shorter than the length field is refused", "[io][safetensors][hostile]") {
  CHECK_THROWS_WITH(parse({}), Contains("evil.safetensors") && Contains("too short"));
  CHECK_THROWS_WITH(parse(std::vector<std::byte>(7)), Contains("7 bytes, too short"));
}

TEST_CASE("safetensors header length past the end of the file or above 100 MB is refused",
          "[io][safetensors][hostile]") {
  const std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  CHECK_THROWS_WITH(parse(make_file(header, 4, header.size() + 5)), Contains("runs past the end of the file"));
  CHECK_THROWS_WITH(parse(make_file(header, 4, UINT64_MAX - 1)), Contains("exceeds the 100000000 byte limit"));
  CHECK_THROWS_WITH(parse(make_file(header, 4, 100'000'001)), Contains("exceeds"));
}

TEST_CASE("safetensors file truncated inside the header or the data is refused", "[io][safetensors][hostile]") {
  const auto path = test::fixture_path("io/mixed.safetensors");
  const auto whole = io::SafetensorsFile::open(path);  // the intact file parses
  std::vector<std::byte> bytes;
  {
    std::ifstream in(path, std::ios::binary);
    std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    bytes.resize(chars.size());
    std::memcpy(bytes.data(), chars.data(), chars.size());
  }
  auto cut_data = bytes;
  cut_data.resize(bytes.size() - 3);
  CHECK_THROWS_WITH(parse(cut_data), Contains("run past the data area"));
  auto cut_header = bytes;
  cut_header.resize(40);
  CHECK_THROWS_WITH(parse(cut_header), Contains("runs past the end of the file"));
}

TEST_CASE("safetensors header that is not a JSON object is refused", "[io][safetensors][hostile]") {
  CHECK_THROWS_WITH(parse(make_file("not json")), Contains("must start with '{'"));
  CHECK_THROWS_WITH(parse(make_file("[1, 2]")), Contains("must start with '{'"));
  CHECK_THROWS_WITH(parse(make_file(R"({"a":{"dtype":"F32")")), Contains("not valid JSON"));
  CHECK_THROWS_WITH(parse(make_file("{\"\xFF\xFE\":1}")), Contains("not valid JSON"));  // invalid UTF-8
  CHECK_THROWS_WITH(parse(make_file("")), Contains("must start with '{'"));
  CHECK_THROWS_WITH(parse(make_file(R"({"a":3})")), Contains("tensor 'a'") && Contains("not a JSON object"));
}

TEST_CASE("safetensors header nesting deeper than 64 levels is refused before parsing", "[io][safetensors][hostile]") {
  const std::string deep = "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  CHECK_THROWS_WITH(parse(make_file(deep)), Contains("nests deeper than 64"));
  // Brackets inside strings do not count.
  const std::string quoted = "{\"__metadata__\":{\"k\":\"" + std::string(1000, '[') + "\"}}";
  CHECK(parse(make_file(quoted)).metadata().at("k").size() == 1000);
}

TEST_CASE("safetensors tensors that overlap are refused naming both", "[io][safetensors][hostile]") {
  const std::string header = R"({"first":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("second":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  CHECK_THROWS_WITH(parse(make_file(header, 12)), Contains("'first'") && Contains("'second'") && Contains("overlap"));
  // Same range twice.
  const std::string twice = R"({"x":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                            R"("y":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})";
  CHECK_THROWS_WITH(parse(make_file(twice, 4)), Contains("overlap"));
  // Adjacent and empty tensors are fine.
  const std::string fine = R"({"x":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                           R"("e":{"dtype":"F32","shape":[0],"data_offsets":[2,2]},)"
                           R"("y":{"dtype":"I32","shape":[1],"data_offsets":[4,8]}})";
  CHECK(parse(make_file(fine, 8)).size() == 3);
}

TEST_CASE("safetensors offsets outside the data area or reversed are refused", "[io][safetensors][hostile]") {
  CHECK_THROWS_WITH(parse(make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4)),
                    Contains("tensor 'w'") && Contains("run past the data area (4 bytes)"));
  CHECK_THROWS_WITH(parse(make_file(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", 8)),
                    Contains("end before they begin"));
  CHECK_THROWS_WITH(
      parse(make_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,18446744073709551615]}})",
                      8)),
      Contains("run past the data area"));
  CHECK_THROWS_WITH(parse(make_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", 8)),
                    Contains("not a pair of non-negative integers"));
  CHECK_THROWS_WITH(parse(make_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 8)),
                    Contains("not a pair"));
}

TEST_CASE("safetensors byte range that disagrees with shape times dtype size is refused",
          "[io][safetensors][hostile]") {
  CHECK_THROWS_WITH(parse(make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4)),
                    Contains("tensor 'w'") && Contains("hold 4 bytes, but shape [2] of F32 needs 8"));
  CHECK_THROWS_WITH(parse(make_file(R"({"w":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,16]}})", 16)),
                    Contains("needs 8"));
}

TEST_CASE("safetensors negative fractional or huge shapes are refused", "[io][safetensors][hostile]") {
  CHECK_THROWS_WITH(parse(make_file(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4)),
                    Contains("tensor 'w'") && Contains("not a non-negative integer"));
  CHECK_THROWS_WITH(parse(make_file(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4)),
                    Contains("not a non-negative integer"));
  CHECK_THROWS_WITH(
      parse(make_file(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", 4)),
      Contains("overflows 64 bits"));
  CHECK_THROWS_WITH(parse(make_file(R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4]}})", 4)),
                    Contains("overflows 64 bits"));
  CHECK_THROWS_WITH(parse(make_file(R"({"w":{"dtype":"U8","shape":[9223372036854775808],"data_offsets":[0,4]}})", 4)),
                    Contains("too large"));
  CHECK_THROWS_WITH(parse(make_file(R"({"w":{"dtype":"F32","shape":[1e30],"data_offsets":[0,4]}})", 4)),
                    Contains("not a non-negative integer"));
  CHECK_THROWS_WITH(parse(make_file(R"({"w":{"dtype":"F32","shape":"[1]","data_offsets":[0,4]}})", 4)),
                    Contains("non-array \"shape\""));
}

TEST_CASE("safetensors unsupported or missing dtype is refused naming tensor and dtype", "[io][safetensors][hostile]") {
  CHECK_THROWS_WITH(parse(make_file(R"({"q":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})", 4)),
                    Contains("tensor 'q'") && Contains("dtype F8_E4M3 is not supported"));
  CHECK_THROWS_WITH(parse(make_file(R"({"q":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})", 4)),
                    Contains("dtype f32 is not supported"));
  CHECK_THROWS_WITH(parse(make_file(R"({"q":{"shape":[1],"data_offsets":[0,4]}})", 4)),
                    Contains("tensor 'q'") && Contains("\"dtype\""));
}

TEST_CASE("safetensors metadata must map strings to strings", "[io][safetensors][hostile]") {
  CHECK_THROWS_WITH(parse(make_file(R"({"__metadata__":{"format":1}})")), Contains("__metadata__ entry 'format'"));
  CHECK_THROWS_WITH(parse(make_file(R"({"__metadata__":[1]})")), Contains("__metadata__ is not a JSON object"));
  CHECK(parse(make_file(R"({"__metadata__":null})")).metadata().empty());
}
