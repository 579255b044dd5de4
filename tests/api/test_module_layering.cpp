// The modules form floors: reading every header under include/vidlora, the module → module include graph
// (core, io, quant, lora, ...) has no cycle, so each module can be understood, tested and reused with only
// the floors beneath it. A header that includes a module above its own fails here, naming both files.

#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

// "vidlora/quant/cuda/dequantize.cuh" -> "quant"; umbrella headers (vidlora/quant.hpp) belong to their module;
// vidlora/vidlora.hpp, which gathers several modules, to none.
std::string module_of(const std::string& header) {
  static const std::regex in_dir(R"(^vidlora/([a-z_]+)/)"), umbrella(R"(^vidlora/([a-z_]+)\.hpp$)");
  std::smatch m;
  if (std::regex_search(header, m, in_dir)) return m[1];
  if (std::regex_search(header, m, umbrella) &&
      fs::is_directory(fs::path(VIDLORA_SOURCE_DIR) / "include/vidlora" / m[1].str()))
    return m[1];
  return {};
}

struct Edge {
  std::string from_file, to_file;
};

std::map<std::string, std::map<std::string, Edge>> module_graph() {
  const fs::path root = fs::path(VIDLORA_SOURCE_DIR) / "include";
  const std::regex include(R"(^\s*#\s*include\s*<(vidlora/[^>]+)>)");
  std::map<std::string, std::map<std::string, Edge>> graph;
  for (const auto& entry : fs::recursive_directory_iterator(root / "vidlora")) {
    if (!entry.is_regular_file()) continue;
    const std::string file = fs::relative(entry.path(), root).generic_string();
    const std::string from = module_of(file);
    if (from.empty()) continue;
    std::ifstream in(entry.path());
    std::string line;
    while (std::getline(in, line)) {
      std::smatch m;
      if (!std::regex_search(line, m, include)) continue;
      const std::string to = module_of(m[1]);
      if (!to.empty() && to != from && !graph[from].count(to)) graph[from][to] = Edge{file, m[1]};
    }
  }
  return graph;
}

// A cycle through the graph, as "a -> b -> a" with the files that make each step, or "" when none.
std::string find_cycle(const std::map<std::string, std::map<std::string, Edge>>& graph) {
  std::map<std::string, int> state;  // 0 new, 1 on the stack, 2 done
  std::vector<std::string> stack;
  std::string found;
  std::function<bool(const std::string&)> visit = [&](const std::string& m) {
    state[m] = 1;
    stack.push_back(m);
    if (const auto it = graph.find(m); it != graph.end())
      for (const auto& [next, edge] : it->second) {
        if (state[next] == 1) {
          std::ostringstream out;
          auto from = std::find(stack.begin(), stack.end(), next);
          for (auto s = from; s != stack.end(); ++s) {
            const auto& to = (s + 1 == stack.end()) ? next : *(s + 1);
            const Edge& e = graph.at(*s).at(to);
            out << *s << " -> " << to << " (" << e.from_file << " includes " << e.to_file << ")\n";
          }
          found = out.str();
          return true;
        }
        if (state[next] == 0 && visit(next)) return true;
      }
    stack.pop_back();
    state[m] = 2;
    return false;
  };
  for (const auto& [m, edges] : graph)
    if (state[m] == 0 && visit(m)) break;
  return found;
}

}  // namespace

TEST_CASE("the modules include one another without a cycle", "[api][layering]") {
  const auto graph = module_graph();
  REQUIRE(graph.size() >= 8);                   // the headers were found
  CHECK(graph.at("lora").count("quant") == 1);  // lora builds on quant (QLoRA bases) ...
  CHECK(graph.at("quant").count("lora") == 0);  // ... and quant does not look up to lora
  const std::string cycle = find_cycle(graph);
  INFO(cycle);
  CHECK(cycle.empty());
}

TEST_CASE("the cycle finder reports a cycle with the files that make it", "[api][layering]") {
  std::map<std::string, std::map<std::string, Edge>> graph;
  graph["a"]["b"] = Edge{"vidlora/a/x.hpp", "vidlora/b/y.hpp"};
  graph["b"]["c"] = Edge{"vidlora/b/y.hpp", "vidlora/c/z.hpp"};
  CHECK(find_cycle(graph).empty());
  graph["c"]["a"] = Edge{"vidlora/c/z.hpp", "vidlora/a/x.hpp"};
  const std::string cycle = find_cycle(graph);
  CHECK(cycle.find("c -> a (vidlora/c/z.hpp includes vidlora/a/x.hpp)") != std::string::npos);
}

// Every header of a module is reachable from the module's umbrella header (include/vidlora/<module>.hpp), following
// #include <vidlora/...> lines, so the docs' "#include <vidlora/model.hpp>" offers what each module page lists. The
// headers a separate CMake target brings are the exceptions (each named here with its target).
TEST_CASE("each module's umbrella header reaches every header of the module", "[api][layering]") {
  const fs::path root = fs::path(VIDLORA_SOURCE_DIR) / "include";
  const std::regex include(R"(^\s*#\s*include\s*<(vidlora/[^>]+)>)");
  const auto includes_of = [&](const std::string& header) {
    std::vector<std::string> out;
    std::ifstream in(root / header);
    std::string line;
    while (std::getline(in, line)) {
      std::smatch m;
      if (std::regex_search(line, m, include)) out.push_back(m[1]);
    }
    return out;
  };
  const std::map<std::string, std::string> own_target{
      {"vidlora/eval/mecab_tokenizer.hpp", "vidlora::mecab"},
      {"vidlora/eval/mecab_eojeol_memo.hpp", "vidlora::mecab"},
      {"vidlora/comm/mpi.hpp", "vidlora::mpi"},
  };
  std::size_t modules = 0, checked = 0;
  for (const auto& dir : fs::directory_iterator(root / "vidlora")) {
    if (!dir.is_directory()) continue;
    const std::string module = dir.path().filename().string();
    const std::string umbrella = "vidlora/" + module + ".hpp";
    REQUIRE(fs::exists(root / umbrella));
    ++modules;
    std::set<std::string> reached{umbrella};
    std::vector<std::string> todo{umbrella};
    while (!todo.empty()) {
      const std::string h = todo.back();
      todo.pop_back();
      for (const auto& next : includes_of(h))
        if (fs::exists(root / next) && reached.insert(next).second) todo.push_back(next);
    }
    for (const auto& entry : fs::directory_iterator(dir.path())) {  // the module's own headers (not cuda/, detail/)
      if (!entry.is_regular_file() || entry.path().extension() != ".hpp") continue;
      const std::string header = fs::relative(entry.path(), root).generic_string();
      if (own_target.count(header)) continue;
      ++checked;
      INFO(umbrella << " does not reach " << header);
      CHECK(reached.count(header) == 1);
    }
  }
  CHECK(modules >= 12);
  CHECK(checked >= 150);
  for (const auto& [header, target] : own_target) CHECK(fs::exists(root / header));
}
