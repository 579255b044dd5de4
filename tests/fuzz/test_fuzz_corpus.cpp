// Replays the fuzz seed corpus (tests/fuzz/corpus/) through the libFuzzer entry point with any
// compiler, so the fuzz target's checks run in every build; the clang build also fuzzes it.
#include <catch2/catch.hpp>

#include <vidlora/io.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

TEST_CASE("fuzz seed corpus replays through the fuzz target and parses as labelled", "[io][fuzz]") {
  const std::filesystem::path corpus = std::filesystem::path(VIDLORA_SOURCE_DIR) / "tests" / "fuzz" / "corpus";
  std::set<std::string> parsed, refused;
  for (const auto& entry : std::filesystem::directory_iterator(corpus)) {
    std::ifstream in(entry.path(), std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    // The target traps (crashing this test) if a file parses but fails its read-back checks.
    CHECK(LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()) == 0);
    try {
      vidlora::io::SafetensorsFile::open(entry.path());
      parsed.insert(entry.path().filename().string());
    } catch (const vidlora::Error&) {
      refused.insert(entry.path().filename().string());
    }
  }
  CHECK(parsed == std::set<std::string>{"bf16_shard.safetensors", "empty_and_scalar.safetensors",
                                        "escaped_names.safetensors", "mixed.safetensors", "rank3_ints.safetensors"});
  CHECK(refused == std::set<std::string>{"bad_dtype.safetensors", "long_length.safetensors", "overlap.safetensors"});
}
