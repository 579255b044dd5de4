// The README's "Using the headers" example is examples/qlora_layer.cpp, which the build compiles and runs: the
// README's block must be that file's text (from its first #include on), so the example a user copies compiles.

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

std::vector<std::string> lines_of(const std::filesystem::path& p) {
  std::ifstream in(p);
  REQUIRE(in.good());
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

}  // namespace

TEST_CASE("the README's example is examples/qlora_layer.cpp as the build compiles it", "[api][docs]") {
  const std::filesystem::path source = VIDLORA_SOURCE_DIR;
  const auto readme = lines_of(source / "README.md");
  const auto example = lines_of(source / "examples/qlora_layer.cpp");
  // The README's block: the ```cpp fence after the line naming the file, up to the closing fence.
  std::vector<std::string> block;
  bool named = false, inside = false;
  for (const auto& line : readme) {
    if (!named) {
      named = line.find("This is `examples/qlora_layer.cpp`") != std::string::npos;
    } else if (!inside) {
      inside = line == "```cpp";
    } else {
      if (line == "```") break;
      block.push_back(line);
    }
  }
  REQUIRE(named);
  REQUIRE(block.size() > 10);
  std::vector<std::string> code;
  bool started = false;
  for (const auto& line : example) {
    started = started || line.starts_with("#include");
    if (started) code.push_back(line);
  }
  REQUIRE(code.size() > 10);
  CHECK(block == code);
}
