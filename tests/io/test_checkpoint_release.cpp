// Releasing a tensor's memory-mapped pages (MappedFile / SafetensorsFile / CheckpointDir::release):
// the resident set shrinks by the tensor's pages and the bytes read afterwards are the same.
#include <catch2/catch.hpp>

#include <vidlora/io.hpp>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

using namespace vidlora;
namespace fs = std::filesystem;

namespace {

// VmRSS of this process in bytes.
std::size_t resident_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with("VmRSS:")) return static_cast<std::size_t>(std::stoull(line.substr(6))) * 1024;
  return 0;
}

// A one-file checkpoint with a 32 MiB bf16 tensor "big" between two small ones.
fs::path write_checkpoint(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("vidlora_release_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::size_t n = std::size_t{16} << 20;
  std::vector<std::byte> big(2 * n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint16_t bits = io::float_to_bf16_bits(static_cast<float>(static_cast<int>(i % 1001) - 500) / 256.0f);
    std::memcpy(big.data() + 2 * i, &bits, 2);
  }
  io::TensorMap map;
  map.emplace("big", io::TensorData::from_raw(io::Dtype::BF16, {4096, 4096}, big));
  map.emplace("a", io::TensorData::from_floats(std::vector<float>{1.5f, -2.0f, 3.25f}, {3}));
  map.emplace("z", io::TensorData::from_floats(std::vector<float>{7.0f}, {1}));
  io::write_safetensors(dir / "model.safetensors", map);
  return dir;
}

}  // namespace

TEST_CASE("checkpoint reads release a tensor's mapped pages, and the tensor reads the same again",
          "[io][checkpoint][streaming]") {
  const fs::path dir = write_checkpoint("reads");
  const auto resident = io::CheckpointDir::open(dir, {.release_pages = false});
  const auto streamed = io::CheckpointDir::open(dir);
  const Matrix kept = resident.matrix("big", 4096, 4096);

  const std::size_t before = resident_bytes();
  const Matrix first = streamed.matrix("big", 4096, 4096);  // 64 MiB of floats stay; 32 MiB of pages go
  const std::size_t after_first = resident_bytes();
  const Matrix again = streamed.matrix("big", 4096, 4096);
  CHECK(first == kept);
  CHECK(again == kept);
  CHECK(streamed.vector("a")(2) == 3.25f);  // neighbours sharing the released pages' edges read intact
  CHECK(streamed.vector("z")(0) == 7.0f);
  INFO("RSS before " << before << ", after one streamed read " << after_first);
  // The float copy (64 MiB) is resident; the 32 MiB of mapped pages are not.
  CHECK(after_first < before + (64u << 20) + (12u << 20));

  // Without release the pages of a fresh mapping stay: the same read costs the float copy plus the pages.
  const auto fresh = io::CheckpointDir::open(dir, {.release_pages = false});
  const std::size_t before_fresh = resident_bytes();
  const Matrix kept_again = fresh.matrix("big");
  CHECK(resident_bytes() >= before_fresh + (64u << 20) + (24u << 20));
  CHECK(fresh.release("big") >= (32u << 20));
  CHECK(resident_bytes() < before_fresh + (64u << 20) + (12u << 20));
  CHECK(fresh.raw("big").size() == 32u << 20);
  CHECK(fresh.matrix("big") == kept_again);
  fs::remove_all(dir);
}

TEST_CASE("a safetensors file parsed from memory has no pages to release", "[io][safetensors][streaming]") {
  io::TensorMap map;
  map.emplace("x", io::TensorData::from_floats(std::vector<float>{1.0f, 2.0f}, {2}));
  const auto file = io::SafetensorsFile::from_bytes(io::serialize_safetensors(map));
  CHECK_FALSE(file.memory_mapped());
  CHECK(file.release("x") == 0);
  CHECK(file.vector("x")(1) == 2.0f);
}
