// The one list of preset names (include/vidlora/presets/preset_list.hpp) is what C++, CMake and the docs use.
#include <catch2/catch.hpp>

#include <vidlora/presets.hpp>

#include <nlohmann/json.hpp>

#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using namespace vidlora::presets;

namespace {
std::string read_source_file(const std::string& relative) {
  std::ifstream in(std::string(VIDLORA_SOURCE_DIR) + "/" + relative);
  REQUIRE(in.good());
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}
std::set<std::string> listed() { return {kPresetNames.begin(), kPresetNames.end()}; }
std::string joined(const char* separator) {
  std::string out;
  for (auto n : kPresetNames) out += (out.empty() ? "" : separator) + std::string(n);
  return out;
}
}  // namespace

TEST_CASE("AllPresets is the list's names in order, each type named by its own name", "[presets][list]") {
  STATIC_REQUIRE(std::tuple_size_v<AllPresets> == kPresetNames.size());
  std::vector<std::string> names;
  for_each_preset([&](auto p) { names.emplace_back(decltype(p)::name); });
  CHECK(names == std::vector<std::string>(kPresetNames.begin(), kPresetNames.end()));
  CHECK(known_preset_names() == joined(", "));
}

TEST_CASE("CMake's known presets are the list's names in order", "[presets][list]") {
  // cmake/VidloraPreset.cmake parses presets/preset_list.hpp; tests/CMakeLists.txt passes what it read.
  CHECK(std::string(VIDLORA_CMAKE_KNOWN_PRESETS) == joined(","));
}

TEST_CASE("docs/presets.md has one column per listed preset and lists the names for -DVIDLORA_PRESET",
          "[presets][list]") {
  const std::string doc = read_source_file("docs/presets.md");
  // The values table's header row: | field | <name> | ... |
  const auto start = doc.find("| field |");
  REQUIRE(start != std::string::npos);
  const std::string header = doc.substr(start, doc.find('\n', start) - start);
  std::set<std::string> columns;
  std::istringstream cells(header);
  std::string cell;
  while (std::getline(cells, cell, '|')) {
    const auto b = cell.find_first_not_of(' '), e = cell.find_last_not_of(' ');
    if (b != std::string::npos && cell.substr(b, e - b + 1) != "field") columns.insert(cell.substr(b, e - b + 1));
  }
  CHECK(columns == listed());
  CHECK(doc.find("-DVIDLORA_PRESET=<" + joined("|") + ">") != std::string::npos);
  CHECK(read_source_file("docs/architecture.md").find("-DVIDLORA_PRESET=<" + joined("|") + ">") != std::string::npos);
}

TEST_CASE("CMakePresets.json has a configure preset for every listed GPU preset and no other", "[presets][list]") {
  const auto json = nlohmann::json::parse(read_source_file("CMakePresets.json"));
  std::set<std::string> selected;
  for (const auto& p : json.at("configurePresets")) {
    if (!p.contains("cacheVariables") || !p["cacheVariables"].contains("VIDLORA_PRESET")) continue;
    const std::string value = p["cacheVariables"]["VIDLORA_PRESET"].get<std::string>();
    INFO("configure preset " << p.at("name").get<std::string>());
    CHECK(listed().count(value) == 1);
    selected.insert(value);
  }
  CHECK(selected == listed());  // "ci" selects Cpu; T4, L4, A100, H100 one each
}
