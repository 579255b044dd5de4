// PEFT's module selection (regex and list target_modules, exclude_modules, layers_to_transform /
// layers_pattern) against the modules PEFT 0.21 adapted (tools/reference/peft_targets_cases.py), the
// LoraConfig fields refused by name, the vision-tower refusal and the run-time rank dispatch.

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <vidlora/lora.hpp>

#include "fixtures.hpp"

using namespace vidlora;
using Catch::Contains;

namespace {

const std::string kDir = vidlora::test::fixture_path("lora/peft_targets");

nlohmann::json reference() { return vidlora::test::load_fixture("lora/peft_targets/reference.json"); }

// A copy of an adapter directory whose adapter_config.json is changed by `edit`.
struct EditedAdapter {
  std::filesystem::path dir;
  template <class Edit>
  EditedAdapter(const std::string& source, const std::string& name, Edit edit)
      : dir(std::filesystem::temp_directory_path() / ("vidlora_peft_targets_" + name)) {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    std::filesystem::copy_file(std::filesystem::path(source) / "adapter_model.safetensors",
                               dir / "adapter_model.safetensors");
    nlohmann::json c = nlohmann::json::parse(std::ifstream(std::filesystem::path(source) / "adapter_config.json"));
    edit(c);
    std::ofstream(dir / "adapter_config.json") << c.dump(2);
  }
  ~EditedAdapter() { std::filesystem::remove_all(dir); }
};

}  // namespace

TEST_CASE("target resolution selects exactly the modules PEFT adapted on a tiny LLaVA", "[lora][peft][reference]") {
  const auto ref = reference();
  REQUIRE(ref["matching"].size() == 6);
  for (const auto& c : ref["matching"]) {
    const auto& cfg = c["config"];
    CAPTURE(cfg.dump());
    lora::AdapterSpec spec;
    if (cfg["target_modules"].is_string())
      spec.target_regex = cfg["target_modules"].get<std::string>();
    else
      spec.target_modules = cfg["target_modules"].get<std::vector<std::string>>();
    if (cfg.contains("exclude_modules")) {
      if (cfg["exclude_modules"].is_string())
        spec.exclude_regex = cfg["exclude_modules"].get<std::string>();
      else
        spec.exclude_modules = cfg["exclude_modules"].get<std::vector<std::string>>();
    }
    if (cfg.contains("layers_to_transform")) {
      const auto& l = cfg["layers_to_transform"];
      spec.layers_to_transform = l.is_array() ? l.get<std::vector<int>>() : std::vector<int>{l.get<int>()};
    }
    if (cfg.contains("layers_pattern")) spec.layers_pattern = {cfg["layers_pattern"].get<std::string>()};
    const lora::PeftTargets targets = spec.targets();
    const auto adapted = c["adapted"].get<std::vector<std::string>>();
    const std::set<std::string> expected(adapted.begin(), adapted.end());
    int hits = 0;
    for (const auto& name : c["modules"]) {
      const std::string key = name.get<std::string>();
      CAPTURE(key);
      CHECK(targets.matches(key) == (expected.count(key) > 0));
      hits += targets.matches(key) ? 1 : 0;
    }
    CHECK(hits == static_cast<int>(expected.size()));
  }
}

TEST_CASE("adapter_config.json with a regex, exclude_modules and layers_to_transform loads", "[lora][peft][io]") {
  const auto regex = lora::load_peft_adapter(kDir + "/regex_exclude");
  REQUIRE(regex.spec.target_regex.has_value());
  CHECK(regex.spec.target_modules.empty());
  CHECK(regex.spec.exclude_modules == std::vector<std::string>{"layers.1.self_attn.k_proj"});
  CHECK(regex.spec.r == 16);
  CHECK(regex.modules.size() == reference()["regex_exclude"]["adapted"].size());
  const auto list = lora::load_peft_adapter(kDir + "/list_layers_rslora");
  CHECK(list.spec.layers_to_transform == std::vector<int>{0, 2});
  CHECK(list.spec.layers_pattern == std::vector<std::string>{"layers"});
  CHECK(list.spec.use_rslora);
  CHECK(list.spec.scaling() == Approx(12.0 / std::sqrt(8.0)).epsilon(1e-15));
  CHECK(list.modules.size() == 6);

  // Written back by vidlora, the regex and layer fields survive the round trip.
  const auto dir = std::filesystem::temp_directory_path() / "vidlora_peft_targets_roundtrip";
  std::filesystem::remove_all(dir);
  lora::save_peft_adapter(dir, regex);
  const auto again = lora::load_peft_adapter(dir);
  CHECK(again.spec.target_regex == regex.spec.target_regex);
  CHECK(again.spec.exclude_modules == regex.spec.exclude_modules);
  lora::save_peft_adapter(dir, list);
  CHECK(lora::load_peft_adapter(dir).spec.layers_to_transform == list.spec.layers_to_transform);
  std::filesystem::remove_all(dir);
}

TEST_CASE("an adapter on the CLIP vision tower is refused naming its tensors", "[lora][peft][errors]") {
  try {
    (void)lora::load_peft_adapter(kDir + "/llava_vision");
    FAIL("accepted");
  } catch (const Error& e) {
    const std::string what = e.what();
    CHECK_THAT(what, Contains("vision tower") && Contains("8 tensors"));
    for (const char* key : {"base_model.model.model.vision_tower.encoder.layers.0.self_attn.q_proj.lora_A.weight",
                            "base_model.model.model.vision_tower.encoder.layers.1.self_attn.v_proj.lora_B.weight"})
      CHECK_THAT(what, Contains(key));
  }
}

TEST_CASE("LoraConfig fields that change the adapter's math are refused by name", "[lora][peft][errors]") {
  const std::string src = kDir + "/regex_exclude";
  const auto refused = [&](const std::string& key, const nlohmann::json& value, const std::vector<std::string>& words) {
    EditedAdapter a(src, key, [&](nlohmann::json& c) { c[key] = value; });
    CAPTURE(key, value.dump());
    try {
      (void)lora::load_peft_adapter(a.dir);
      FAIL("accepted");
    } catch (const Error& e) {
      CHECK_THAT(e.what(), Contains("adapter_config.json"));
      for (const auto& w : words) CHECK_THAT(e.what(), Contains(w));
    }
  };
  refused("use_dora", true, {"use_dora"});
  refused("lora_bias", true, {"lora_bias"});
  refused("use_qalora", true, {"use_qalora"});
  refused("fan_in_fan_out", true, {"fan_in_fan_out"});
  refused("rank_pattern", {{"q_proj", 8}}, {"rank_pattern"});
  refused("alpha_pattern", {{"q_proj", 4}}, {"alpha_pattern"});
  refused("modules_to_save", 3,
          {"modules_to_save", "not a list of strings"});  // a list: tests/trainer/test_peft_projector.cpp
  refused("trainable_token_indices", {1, 2}, {"trainable_token_indices"});
  refused("target_parameters", {"experts.weight"}, {"target_parameters"});
  refused("layer_replication", {{0, 2}}, {"layer_replication"});
  refused("init_lora_weights", "pissa", {"init_lora_weights", "pissa"});
  refused("bias", "all", {"bias", "all"});
  refused("peft_type", "IA3", {"peft_type", "IA3"});
  refused("target_modules", R"(model\.(?P<x>q)_proj)", {"target_modules", "(?P<x>q)"});
  refused("layers_to_transform", "first", {"layers_to_transform"});
  // A module the config does not select but that has tensors.
  refused("exclude_modules", {"up_proj"}, {"model.layers.0.mlp.up_proj", "does not select it"});
  // What PEFT itself refuses: no peft_type; layers_to_transform beside a regular expression.
  refused("peft_type", nullptr, {"peft_type", "missing"});
  refused("layers_to_transform", {0}, {"layers_to_transform", "regular expression"});
  refused("init_lora_weights", "loftq", {"init_lora_weights", "changes the base weights"});
  refused("init_lora_weights", "warm", {"init_lora_weights", "not an initialisation vidlora knows"});
  // PEFT scales by any lora_alpha; LoraOptions reads 0 as "the template alpha", so 0 and below would run otherwise.
  refused("lora_alpha", 0, {"lora_alpha 0", "positive"});
  refused("lora_alpha", -8, {"lora_alpha -8", "positive"});
}

TEST_CASE("adapter_config.json fields are PEFT's LoraConfig fields or off", "[lora][peft][reference][errors]") {
  // tools/reference/peft_config_fields.py: dataclasses.fields(LoraConfig) of PEFT 0.21.2.
  const nlohmann::json f = vidlora::test::load_fixture("lora/peft_lora_config_fields.json");
  CHECK(f["versions"]["peft"] == std::string(lora::kPeftFormatVersion));
  std::set<std::string> ours;
  for (std::string_view rest = lora::kLoraConfigFields; !rest.empty();) {
    const auto space = rest.find(' ');
    ours.emplace(rest.substr(0, space));
    rest = space == std::string_view::npos ? std::string_view() : rest.substr(space + 1);
  }
  CHECK(ours == f["fields"].get<std::set<std::string>>());
  for (const auto& name : f["fields"]) CHECK(lora::lora_config_field(name.get<std::string>()));
  for (const auto& name : f["written"]) CHECK(lora::lora_config_field(name.get<std::string>()));
  CHECK_FALSE(lora::lora_config_field("lora"));  // whole names only
  CHECK_FALSE(lora::lora_config_field("r "));
  CHECK_FALSE(lora::lora_config_field(""));
  // Every feature flag of the release is off at null, false or empty: the rule for fields vidlora does not know.
  for (const auto& [key, value] : f["off_values"].items()) {
    CAPTURE(key);
    CHECK((value.is_null() || value == false || (value.is_structured() && value.empty())));
  }
  // PEFT drops a field it does not know, with a warning; vidlora refuses it when it is set.
  CHECK(f["unknown_field"]["kept"] == false);
  CHECK_THAT(f["unknown_field"]["warnings"][0].get<std::string>(), Contains("vidlora_unknown_field"));
  const std::string src = kDir + "/regex_exclude";
  const auto base = lora::load_peft_adapter(src);
  for (const nlohmann::json& value : {nlohmann::json(true), nlohmann::json(1), nlohmann::json("yes"),
                                      nlohmann::json({1}), nlohmann::json({{"k", 1}})}) {
    EditedAdapter a(src, "unknown_set", [&](nlohmann::json& c) { c["use_future_lora"] = value; });
    CAPTURE(value.dump());
    try {
      (void)lora::load_peft_adapter(a.dir);
      FAIL("accepted");
    } catch (const Error& e) {
      CHECK_THAT(e.what(), Contains("adapter_config.json") && Contains("\"use_future_lora\" = " + value.dump()) &&
                               Contains("PEFT 0.21.2") && Contains("remove it"));
    }
  }
  for (const nlohmann::json& value : {nlohmann::json(nullptr), nlohmann::json(false), nlohmann::json(0),
                                      nlohmann::json::array(), nlohmann::json::object(), nlohmann::json("")}) {
    EditedAdapter a(src, "unknown_off", [&](nlohmann::json& c) {
      c["use_future_lora"] = value;
      c["runtime_config"] = {{"ephemeral_gpu_offload", false}};  // known (PEFT drops it with a warning)
    });
    CAPTURE(value.dump());
    const auto loaded = lora::load_peft_adapter(a.dir);
    CHECK(loaded.spec.r == base.spec.r);
    CHECK(loaded.spec.lora_alpha == base.spec.lora_alpha);
    CHECK(loaded.spec.target_regex == base.spec.target_regex);
  }
}

TEST_CASE("initialisations that set only lora_A and lora_B are plain LoRA adapters", "[lora][peft]") {
  for (const char* how : {"gaussian", "orthogonal", "eva"}) {
    EditedAdapter a(kDir + "/regex_exclude", std::string("init_") + how,
                    [&](nlohmann::json& c) { c["init_lora_weights"] = how; });
    CAPTURE(how);
    CHECK(lora::load_peft_adapter(a.dir).modules.size() > 0);
  }
}

TEST_CASE("an adapter saved as a PyTorch pickle is refused naming the file and the fix", "[lora][peft][errors]") {
  EditedAdapter a(kDir + "/regex_exclude", "pickle", [](nlohmann::json&) {});
  std::filesystem::rename(a.dir / "adapter_model.safetensors", a.dir / "adapter_model.bin");
  CHECK_THROWS_WITH(lora::load_peft_adapter(a.dir),
                    Contains("adapter_model.bin (a PyTorch pickle") && Contains("safe_serialization=True"));
}

TEST_CASE("a run-time rank dispatches to its compile-time LoraLinear and others are refused", "[lora][rank]") {
  for (const int r : lora::kSupportedRanks) {
    const int got = lora::dispatch_rank(r, []<int R>() { return LoraLinear<R, 2 * R>::rank; });
    CHECK(got == r);
  }
  CHECK(lora::is_supported_rank(64));
  CHECK_FALSE(lora::is_supported_rank(12));
  REQUIRE_THROWS_WITH(lora::dispatch_rank(12, []<int R>() { return R; }), Contains("r = 12") && Contains("4, 8, 16"));
  REQUIRE_THROWS_AS(lora::dispatch_rank(0, []<int R>() { return R; }), Error);
}

TEST_CASE("a run-time alpha replaces the template alpha in the scaling", "[lora][rank]") {
  LoraOptions o;
  o.alpha = 12.0;
  const Matrix w = Matrix::Random(16, 16);
  CHECK(LoraLinear<8, 16>(w, o).scaling() == static_cast<float>(12.0 / 8));
  o.use_rslora = true;
  CHECK(LoraLinear<8, 16>(w, o).scaling() == static_cast<float>(12.0 / std::sqrt(8.0)));
  CHECK(LoraLinear<8, 16>(w, o).alpha_value() == 12.0);
  CHECK(LoraLinear<8, 16>(w).scaling() == 2.0f);  // 0: the template Alpha
  o.alpha = -1;
  REQUIRE_THROWS_WITH((LoraLinear<8, 16>(w, o)), Contains("alpha -1"));
}
