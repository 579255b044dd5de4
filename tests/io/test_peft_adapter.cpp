// PEFT adapter directories: reading what PEFT's save_pretrained wrote, writing what PEFT loads
// (tests/fixtures/io/peft_adapter*, tools/reference/peft_adapter_check.py).
#include <catch2/catch.hpp>

#include <vidlora/io.hpp>
#include <vidlora/lora/peft_adapter.hpp>

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "fixtures.hpp"

using namespace vidlora;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

// Whether a temporary file of io::AtomicFile (`<name>.<host>-<pid>.tmp`) is left in `dir`.
bool peft_has_temporary_file(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".tmp") return true;
  return false;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

fs::path peft_scratch_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("vidlora_peft_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

const fs::path kPeftDir = test::fixture_path("io/peft_adapter");

// The adapter the fixture describes, built from its numbers (not from PEFT's files).
lora::PeftAdapter fixture_adapter() {
  const auto f = test::load_fixture("io/peft_adapter.json");
  lora::PeftAdapter a;
  a.spec.r = f["r"].get<int>();
  a.spec.lora_alpha = f["lora_alpha"].get<double>();
  a.spec.lora_dropout = f["lora_dropout"].get<double>();
  a.spec.target_modules = f["target_modules"].get<std::vector<std::string>>();
  for (const auto& [path, m] : f["modules"].items())
    a.modules[path] = {test::json_matrix(m["A"]), test::json_matrix(m["B"])};
  return a;
}

}  // namespace

TEST_CASE("peft adapter saved by PEFT loads with its config keys shapes and values", "[io][peft]") {
  const lora::PeftAdapter expected = fixture_adapter();
  const lora::PeftAdapter loaded = lora::load_peft_adapter(kPeftDir);
  CHECK(loaded.spec.r == 4);
  CHECK(loaded.spec.lora_alpha == 8.0);
  CHECK(loaded.spec.lora_dropout == 0.05);
  CHECK(std::set<std::string>(loaded.spec.target_modules.begin(), loaded.spec.target_modules.end()) ==
        std::set<std::string>{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"});
  CHECK(loaded.spec.bias == "none");
  CHECK(loaded.spec.task_type == "CAUSAL_LM");
  CHECK_FALSE(loaded.spec.use_rslora);
  REQUIRE(loaded.modules.size() == 14);
  CHECK(loaded.modules.count("model.layers.1.mlp.down_proj") == 1);
  const auto& k = loaded.modules.at("model.layers.0.self_attn.k_proj");
  CHECK(k.A.rows() == 4);
  CHECK(k.A.cols() == 8);
  CHECK(k.B.rows() == 4);  // one kv head of dimension 4
  CHECK(k.B.cols() == 4);
  CHECK(loaded.modules.at("model.layers.0.mlp.down_proj").A.cols() == 16);
  for (const auto& [path, w] : expected.modules) {
    INFO(path);
    REQUIRE(loaded.modules.count(path) == 1);
    CHECK(loaded.modules.at(path).A == w.A);
    CHECK(loaded.modules.at(path).B == w.B);
  }
  const auto file = io::SafetensorsFile::open(kPeftDir / "adapter_model.safetensors");
  CHECK(file.contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
  CHECK(lora::peft_key("model.layers.0.self_attn.q_proj", 'B') ==
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
}

TEST_CASE("peft adapter we save has PEFT's weight bytes and PEFT's config fields", "[io][peft]") {
  const auto dir = peft_scratch_dir("save");
  const lora::PeftAdapter adapter = fixture_adapter();
  lora::save_peft_adapter(dir, adapter);
  CHECK(read_text(dir / "adapter_model.safetensors") == read_text(kPeftDir / "adapter_model.safetensors"));
  auto ours = nlohmann::json::parse(read_text(dir / "adapter_config.json"));
  auto theirs = nlohmann::json::parse(read_text(kPeftDir / "adapter_config.json"));
  // PEFT writes target_modules in Python set order; compare them as sets, everything else exactly.
  const auto as_set = [](const nlohmann::json& j) { return j.get<std::set<std::string>>(); };
  CHECK(as_set(ours["target_modules"]) == as_set(theirs["target_modules"]));
  ours.erase("target_modules");
  theirs.erase("target_modules");
  CHECK(ours == theirs);
  CHECK_FALSE(peft_has_temporary_file(dir));

  fs::remove_all(dir);
}

TEST_CASE("peft adapter round trip keeps spec and factors", "[io][peft]") {
  const auto dir = peft_scratch_dir("roundtrip");
  lora::AdapterSpec spec{.r = 2,
                         .lora_alpha = 4.5,
                         .lora_dropout = 0.1,
                         .target_modules = {"q_proj", "v_proj"},
                         .base_model_name_or_path = "lmsys/vicuna-7b-v1.5",
                         .use_rslora = true};
  lora::AdapterModules modules;
  modules["language_model.model.layers.3.self_attn.q_proj"] = {Matrix::Random(2, 6), Matrix::Random(5, 2)};
  modules["language_model.model.layers.3.self_attn.v_proj"] = {Matrix::Random(2, 6), Matrix::Random(3, 2)};
  lora::save_peft_adapter(dir, spec, modules);
  const auto loaded = lora::load_peft_adapter(dir);
  CHECK(loaded.spec.r == 2);
  CHECK(loaded.spec.lora_alpha == 4.5);
  CHECK(loaded.spec.lora_dropout == 0.1);
  CHECK(loaded.spec.use_rslora);
  CHECK(loaded.spec.base_model_name_or_path == "lmsys/vicuna-7b-v1.5");
  CHECK(loaded.spec.target_modules == std::vector<std::string>{"q_proj", "v_proj"});
  REQUIRE(loaded.modules.size() == 2);
  for (const auto& [path, w] : modules) {
    CHECK(loaded.modules.at(path).A == w.A);
    CHECK(loaded.modules.at(path).B == w.B);
  }
  fs::remove_all(dir);
}

TEST_CASE("peft adapter save refuses wrong ranks untargeted modules and NaN", "[io][peft]") {
  const auto dir = peft_scratch_dir("bad_save");
  lora::AdapterSpec spec;
  spec.r = 2;
  spec.target_modules = {"q_proj"};
  CHECK_THROWS_WITH(lora::save_peft_adapter(
                        dir, spec, {{"model.layers.0.self_attn.q_proj", {Matrix::Zero(3, 4), Matrix::Zero(4, 2)}}}),
                    Contains("'model.layers.0.self_attn.q_proj'") && Contains("lora_A is [3, 4], expected [2, in]"));
  CHECK_THROWS_WITH(lora::save_peft_adapter(
                        dir, spec, {{"model.layers.0.self_attn.q_proj", {Matrix::Zero(2, 4), Matrix::Zero(4, 3)}}}),
                    Contains("lora_B is [4, 3], expected [out, 2]"));
  CHECK_THROWS_WITH(lora::save_peft_adapter(
                        dir, spec, {{"model.layers.0.self_attn.k_proj", {Matrix::Zero(2, 4), Matrix::Zero(4, 2)}}}),
                    Contains("'model.layers.0.self_attn.k_proj' matches none of target_modules [q_proj]"));
  Matrix nan = Matrix::Zero(4, 2);
  nan(1, 1) = std::nanf("");
  CHECK_THROWS_WITH(
      lora::save_peft_adapter(dir, spec, {{"model.layers.0.self_attn.q_proj", {Matrix::Zero(2, 4), nan}}}),
      Contains("NaN or Inf"));
  CHECK_FALSE(fs::exists(dir / "adapter_config.json"));
  CHECK_FALSE(fs::exists(dir / "adapter_model.safetensors"));
  fs::remove_all(dir);
}

TEST_CASE("peft adapter load names missing and mismatched keys", "[io][peft]") {
  const auto dir = peft_scratch_dir("bad_load");
  fs::copy_file(kPeftDir / "adapter_config.json", dir / "adapter_config.json");
  const auto peft = io::SafetensorsFile::open(kPeftDir / "adapter_model.safetensors");
  const auto write_without = [&](const std::string& dropped, io::TensorMap extra = {}) {
    io::TensorMap tensors = std::move(extra);
    for (const auto& name : peft.names())
      if (name != dropped)
        tensors.emplace(name, io::TensorData::from_raw(peft.info(name).dtype, peft.info(name).shape, peft.raw(name)));
    io::write_safetensors(dir / "adapter_model.safetensors", tensors, peft.metadata());
  };
  write_without("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight");
  CHECK_THROWS_WITH(lora::load_peft_adapter(dir),
                    Contains("missing 'base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight'"));
  write_without("base_model.model.model.layers.0.mlp.up_proj.lora_A.weight");
  CHECK_THROWS_WITH(lora::load_peft_adapter(dir),
                    Contains("missing 'base_model.model.model.layers.0.mlp.up_proj.lora_A.weight'"));

  io::TensorMap wrong_rank;
  wrong_rank.emplace("base_model.model.model.layers.0.mlp.up_proj.lora_A.weight",
                     io::TensorData::from_matrix(Matrix::Zero(3, 8)));
  write_without("base_model.model.model.layers.0.mlp.up_proj.lora_A.weight", std::move(wrong_rank));
  CHECK_THROWS_WITH(lora::load_peft_adapter(dir), Contains("up_proj.lora_A.weight' is [3, 8], but r = 4"));

  io::TensorMap stray;
  stray.emplace("base_model.model.lm_head.weight", io::TensorData::from_matrix(Matrix::Zero(32, 8)));
  write_without("", std::move(stray));
  CHECK_THROWS_WITH(lora::load_peft_adapter(dir), Contains("unexpected tensor 'base_model.model.lm_head.weight'"));

  write_without("");
  CHECK(lora::load_peft_adapter(dir).modules.size() == 14);
  auto config = nlohmann::json::parse(read_text(kPeftDir / "adapter_config.json"));
  config["use_dora"] = true;
  io::write_file_atomically(dir / "adapter_config.json", config.dump());
  CHECK_THROWS_WITH(lora::load_peft_adapter(dir), Contains("use_dora"));
  config["use_dora"] = false;
  config["rank_pattern"] = {{"q_proj", 8}};
  io::write_file_atomically(dir / "adapter_config.json", config.dump());
  CHECK_THROWS_WITH(lora::load_peft_adapter(dir), Contains("rank_pattern"));
  config["rank_pattern"] = nlohmann::json::object();
  config.erase("r");
  io::write_file_atomically(dir / "adapter_config.json", config.dump());
  CHECK_THROWS_WITH(lora::load_peft_adapter(dir), Contains("\"r\" is missing"));
  fs::remove(dir / "adapter_config.json");
  CHECK_THROWS_WITH(lora::load_peft_adapter(dir), Contains("cannot open") && Contains("adapter_config.json"));
  fs::remove_all(dir);
}
