// The projector inside a PEFT adapter (modules_to_save=["multi_modal_projector"]: how a two-stage LLaVA fine-tune
// with PEFT saves "projector + LoRA"), both ways, on the tiny LLaVA-NeXT-Video fixture:
// tests/fixtures/model/llava_next_video_adapter/ is PEFT's save_pretrained of such an adapter with PEFT's logits
// (tools/reference/peft_projector_adapter.py).
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <fixtures.hpp>

#include "../model/model_fixtures.hpp"
#include "tiny_adapter_run.hpp"
#include <vidlora/io/checkpoint_dir.hpp>
#include <vidlora/io/safetensors.hpp>
#include <vidlora/model/llava_model.hpp>
#include <vidlora/model/peft_decoder.hpp>
#include <vidlora/presets/gpu_presets.hpp>
#include <vidlora/train/trainer.hpp>

namespace fs = std::filesystem;
using namespace vidlora;
using namespace vidlora::test;
using Catch::Contains;

namespace {

const fs::path kBase = fixture_path("model/llava_next_video");
const fs::path kAdapter = fixture_path("model/llava_next_video_adapter/adapter");
constexpr int kRank = presets::Cpu::lora_r, kAlpha = presets::Cpu::lora_alpha;

// The base fixture's right-padded batch through `model`: logits [2 · 14, vocab].
template <class Model>
Matrix batch_logits(Model& model) {
  const auto ref = model_reference("llava_next_video");
  std::vector<Matrix> visual;
  std::vector<std::vector<int>> prompts;
  for (std::size_t b = 0; b < 2; ++b) {
    visual.push_back(model.visual_tokens(clip_pixels(ref["pixel_values_videos"], b), 2));
    prompts.push_back(ref["prompts"][b].get<std::vector<int>>());
  }
  return model.logits(prompts, visual);
}

struct ScratchDir {
  fs::path dir;
  explicit ScratchDir(const std::string& name) : dir(fs::temp_directory_path() / name) {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~ScratchDir() { fs::remove_all(dir); }
};

// A copy of the fixture adapter whose config and tensors `edit` changes.
void write_edited_adapter(const fs::path& dir, const std::function<void(nlohmann::json&, io::TensorMap&)>& edit) {
  auto config = nlohmann::json::parse(std::ifstream(kAdapter / "adapter_config.json"));
  const auto file = io::SafetensorsFile::open(kAdapter / "adapter_model.safetensors");
  io::TensorMap tensors;
  for (const auto& name : file.names())
    tensors.emplace(name, io::TensorData::from_raw(file.info(name).dtype, file.info(name).shape, file.raw(name)));
  edit(config, tensors);
  fs::create_directories(dir);
  io::write_safetensors(dir / "adapter_model.safetensors", tensors, file.metadata());
  std::ofstream(dir / "adapter_config.json") << config.dump(2);
}

}  // namespace

TEST_CASE("a PEFT adapter that saves the projector gives PEFT's logits on LLaVA-NeXT-Video",
          "[trainer][peft][llava][reference]") {
  const auto ref = load_fixture("model/llava_next_video_adapter/reference.json");
  const lora::PeftAdapter adapter = lora::load_peft_adapter(kAdapter);
  CHECK(adapter.spec.modules_to_save == std::vector<std::string>{"multi_modal_projector"});
  CHECK(adapter.spec.r == kRank);
  CHECK(adapter.modules.size() == 14);
  CHECK(adapter.saved_tensors == std::vector<std::string>{"model.multi_modal_projector.linear_1.bias",
                                                          "model.multi_modal_projector.linear_1.weight",
                                                          "model.multi_modal_projector.linear_2.bias",
                                                          "model.multi_modal_projector.linear_2.weight"});
  const auto config = model::LlavaConfig::from_file(kBase / "config.json");
  // The decoder's options refuse an adapter whose saved modules the caller does not say it loads.
  CHECK_THROWS_WITH(model::decoder_options_for(adapter, config.text),
                    Contains("saves modules beside LoRA (modules_to_save [multi_modal_projector]: "
                             "model.multi_modal_projector.linear_1.bias") &&
                        Contains("SavedModules::loaded_by_caller"));
  model::LlavaModel<kRank, kAlpha> model(
      kBase, model::decoder_options_for(adapter, config.text, {}, model::SavedModules::loaded_by_caller));
  model.decoder().load_adapter(io::SafetensorsFile::open(kAdapter / "adapter_model.safetensors"));
  const Matrix peft = json_3d(ref["logits"]);
  // The LoRA factors alone, on the base model's projector, are not PEFT's model: the projector matters.
  CHECK(normwise_error(batch_logits(model), peft) > 1e-2);
  const Matrix base_w1 = model.projector().linear_1().weight();
  REQUIRE(train::load_projector_from_adapter(kAdapter, adapter, model.projector()));
  CHECK((model.projector().linear_1().weight() - base_w1).cwiseAbs().maxCoeff() > 1e-2f);
  CHECK(normwise_error(batch_logits(model), peft) < 1e-5);
  CHECK(normwise_error(json_3d(ref["base_logits"]), peft) > 1e-2);  // (the fixture's adapter is not a no-op)
}

TEST_CASE("the trainer's adapter of a LLaVA model carries its projector as PEFT saves one", "[trainer][peft][llava]") {
  const auto ref = load_fixture("model/llava_next_video_adapter/reference.json");
  const lora::PeftAdapter adapter = lora::load_peft_adapter(kAdapter);
  const auto config = model::LlavaConfig::from_file(kBase / "config.json");
  model::LlavaModel<kRank, kAlpha> model(
      kBase, model::decoder_options_for(adapter, config.text, {}, model::SavedModules::loaded_by_caller));
  model.decoder().load_adapter(io::SafetensorsFile::open(kAdapter / "adapter_model.safetensors"));
  REQUIRE(train::load_projector_from_adapter(kAdapter, adapter, model.projector()));

  // What save_run_outputs writes at the end of a run, with the fixture's values and settings.
  TrainerConfig c = TrainerConfig::from_preset<presets::Cpu>();
  c.lora_dropout = 0.0;
  c.base_model_name_or_path = "tests/fixtures/model/llava_next_video";
  const ScratchDir out("vidlora_peft_projector_out");
  train::save_run_outputs(out.dir, c, model.decoder(), model.projector());
  const fs::path written = out.dir / "adapter";
  // The same adapter_config.json as PEFT's, field for field, and the same tensor names with the same values.
  CHECK(nlohmann::json::parse(std::ifstream(written / "adapter_config.json")) ==
        nlohmann::json::parse(std::ifstream(kAdapter / "adapter_config.json")));
  const auto ours = io::SafetensorsFile::open(written / "adapter_model.safetensors");
  const auto peft = io::SafetensorsFile::open(kAdapter / "adapter_model.safetensors");
  CHECK(ours.names() == ref["keys"].get<std::vector<std::string>>());
  REQUIRE(ours.names() == peft.names());
  for (const auto& name : peft.names()) {
    INFO(name);
    CHECK(ours.info(name).shape == peft.info(name).shape);
    CHECK(ours.info(name).dtype == peft.info(name).dtype);
    CHECK(ours.matrix(name) == peft.matrix(name));
  }
  // projector.safetensors still comes too (caption --trained reads it), with the same values.
  model::Mlp2xGelu from_file = model.projector();
  from_file.linear_1().weight().setZero();
  train::load_projector(out.dir / "projector.safetensors", from_file);
  CHECK(train::same_projector_values(from_file, model.projector()));
  if (const char* keep = std::getenv("VIDLORA_KEEP_PROJECTOR_ADAPTER"))  // for peft_projector_adapter.py --check
    fs::copy(written, keep, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
}

TEST_CASE("an initial adapter that carries the projector starts the trainer's projector", "[trainer][peft][llava]") {
  const auto config = model::LlavaConfig::from_file(kBase / "config.json");
  const auto weights = io::CheckpointDir::open(kBase);
  const lora::PeftAdapter adapter = lora::load_peft_adapter(kAdapter);
  model::Mlp2xGelu base = model::Mlp2xGelu::load(weights, config);
  model::Mlp2xGelu expected = base;
  REQUIRE(train::load_projector_from_adapter(kAdapter, adapter, expected));
  REQUIRE_FALSE(train::same_projector_values(base, expected));

  const ScratchDir out("vidlora_peft_projector_trainer");
  TrainerConfig c = TrainerConfig::from_preset<presets::Cpu>();
  c.stages[0].epochs = 1;
  c.stages[1].epochs = 0;
  c.stages[0].learning_rate = 1e-12;  // the optimizer's steps stay far below the adapter's change to the projector
  c.output_dir = out.dir;
  c.progress = nullptr;
  c.initial_adapter = kAdapter;
  const auto features = [](const train::Clip& cl) {
    return model::random_normal(4, 32, 1.0, 5, static_cast<std::uint64_t>(cl.id[1]));  // the tower's width
  };
  Trainer<presets::Cpu> t(c, config.text, weights, base, tiny_codec(), features);
  CHECK(train::same_projector_values(t.projector(), expected));
  // A stage of projector steps moves it on from the adapter's values, not from the base model's.
  const auto result = t.train(tiny_clips(), {});
  REQUIRE(result.steps > 0);
  const auto near = [](const auto& x, const auto& y) { return (x - y).cwiseAbs().maxCoeff() < 1e-6f; };
  CHECK(near(t.projector().linear_1().bias(), expected.linear_1().bias()));
  CHECK(near(t.projector().linear_2().bias(), expected.linear_2().bias()));
  CHECK(near(t.projector().linear_1().weight(), expected.linear_1().weight()));
  CHECK((expected.linear_2().bias() - base.linear_2().bias()).cwiseAbs().maxCoeff() > 1e-2f);
}

TEST_CASE("a PEFT adapter saving a module other than the projector is refused by name", "[trainer][peft][errors]") {
  const auto config = model::LlavaConfig::from_file(kBase / "config.json");
  const auto weights = io::CheckpointDir::open(kBase);
  const ScratchDir scratch("vidlora_peft_projector_errors");
  const auto projector_error = [&](const std::string& name,
                                   const std::function<void(nlohmann::json&, io::TensorMap&)>& edit) {
    const fs::path dir = scratch.dir / name;
    write_edited_adapter(dir, edit);
    model::Mlp2xGelu p = model::Mlp2xGelu::load(weights, config);
    try {
      (void)train::load_projector_from_adapter(dir, lora::load_peft_adapter(dir), p);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  // lm_head saved beside the projector (modules_to_save ["multi_modal_projector", "lm_head"]).
  CHECK_THAT(projector_error("lm_head",
                             [](nlohmann::json& c, io::TensorMap& t) {
                               c["modules_to_save"] = {"multi_modal_projector", "lm_head"};
                               t.emplace("base_model.model.lm_head.weight",
                                         io::TensorData::from_matrix(Matrix::Zero(64, 32)));
                             }),
             Contains("saves 'lm_head.weight', which vidlora does not train") && Contains("adapter"));
  // A projector tensor missing from the file.
  CHECK_THAT(projector_error("missing",
                             [](nlohmann::json&, io::TensorMap& t) {
                               t.erase("base_model.model.model.multi_modal_projector.linear_2.bias");
                             }),
             Contains("modules_to_save [multi_modal_projector] selects the projector's "
                      "multi_modal_projector.linear_2.bias, but adapter_model.safetensors has no tensor "
                      "base_model.model.model.multi_modal_projector.linear_2.bias (PEFT refuses to load it too)"));
  // ... and every one of them: modules_to_save without its tensors is not an adapter without a projector.
  CHECK_THAT(
      projector_error("none",
                      [](nlohmann::json&, io::TensorMap& t) {
                        for (const char* n : {"linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias"})
                          t.erase(std::string("base_model.model.model.multi_modal_projector.") + n);
                      }),
      Contains("selects the projector's multi_modal_projector.linear_1.bias, but"));
  // A tensor under the projector that the projector does not have.
  CHECK_THAT(projector_error("extra",
                             [](nlohmann::json&, io::TensorMap& t) {
                               t.emplace("base_model.model.model.multi_modal_projector.linear_3.weight",
                                         io::TensorData::from_matrix(Matrix::Zero(2, 2)));
                             }),
             Contains("saves 'model.multi_modal_projector.linear_3.weight'"));
  // A projector tensor of the wrong shape.
  CHECK_THAT(projector_error("shape",
                             [](nlohmann::json&, io::TensorMap& t) {
                               t.erase("base_model.model.model.multi_modal_projector.linear_1.weight");
                               t.emplace("base_model.model.model.multi_modal_projector.linear_1.weight",
                                         io::TensorData::from_matrix(Matrix::Zero(32, 8)));
                             }),
             Contains("linear_1.weight is [32, 8], expected [32, 32]"));
  // The older transformers layout (base_model.model.multi_modal_projector.*) is the same projector.
  CHECK(projector_error("older_layout", [](nlohmann::json&, io::TensorMap& t) {
          io::TensorMap moved;
          for (auto& [name, data] : t) {
            const std::string from = "base_model.model.model.multi_modal_projector.";
            moved.emplace(
                name.starts_with(from) ? "base_model.model.multi_modal_projector." + name.substr(from.size()) : name,
                data);
          }
          t = std::move(moved);
        }) == "accepted");
  // An entry selecting a part of the projector ("linear_1", as PEFT's suffix rule matches it) takes that part only.
  {
    const fs::path dir = scratch.dir / "part";
    write_edited_adapter(dir, [](nlohmann::json& c, io::TensorMap& t) {
      c["modules_to_save"] = {"linear_1"};
      t.erase("base_model.model.model.multi_modal_projector.linear_2.weight");
      t.erase("base_model.model.model.multi_modal_projector.linear_2.bias");
    });
    model::Mlp2xGelu base = model::Mlp2xGelu::load(weights, config);
    model::Mlp2xGelu part = base, whole = base;
    REQUIRE(train::load_projector_from_adapter(dir, lora::load_peft_adapter(dir), part));
    REQUIRE(train::load_projector_from_adapter(kAdapter, lora::load_peft_adapter(kAdapter), whole));
    CHECK(part.linear_1().weight() == whole.linear_1().weight());
    CHECK(part.linear_1().bias() == whole.linear_1().bias());
    CHECK(part.linear_2().weight() == base.linear_2().weight());
    CHECK(part.linear_2().bias() == base.linear_2().bias());
    CHECK(whole.linear_2().weight() != base.linear_2().weight());
  }
  // An entry selecting nothing in the model ("mm_projector") saves nothing: the model's projector stays.
  {
    const fs::path dir = scratch.dir / "nothing";
    write_edited_adapter(dir, [](nlohmann::json& c, io::TensorMap& t) {
      c["modules_to_save"] = {"mm_projector"};
      for (const char* n : {"linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias"})
        t.erase(std::string("base_model.model.model.multi_modal_projector.") + n);
    });
    model::Mlp2xGelu p = model::Mlp2xGelu::load(weights, config);
    CHECK_FALSE(train::load_projector_from_adapter(dir, lora::load_peft_adapter(dir), p));
  }
  // Projector tensors without modules_to_save in the config are not the adapter's: the file is refused whole.
  write_edited_adapter(scratch.dir / "unlisted",
                       [](nlohmann::json& c, io::TensorMap&) { c["modules_to_save"] = nullptr; });
  CHECK_THROWS_WITH(lora::load_peft_adapter(scratch.dir / "unlisted"),
                    Contains("unexpected tensor 'base_model.model.model.multi_modal_projector.linear_1.bias'"));
  write_edited_adapter(scratch.dir / "string",
                       [](nlohmann::json& c, io::TensorMap&) { c["modules_to_save"] = "multi_modal_projector"; });
  CHECK_THROWS_WITH(lora::load_peft_adapter(scratch.dir / "string"),
                    Contains("\"modules_to_save\" \"multi_modal_projector\" is not a list of strings"));
  // The trainer refuses an initial adapter that saves lm_head before any step.
  TrainerConfig c = TrainerConfig::from_preset<presets::Cpu>();
  c.output_dir = scratch.dir / "out";
  c.progress = nullptr;
  c.initial_adapter = scratch.dir / "lm_head";
  CHECK_THROWS_WITH((Trainer<presets::Cpu>(c, config.text, weights, model::Mlp2xGelu::load(weights, config),
                                           tiny_codec(), tiny_features)),
                    Contains("lm_head.weight"));
}

TEST_CASE("save_peft_adapter writes modules_to_save tensors only under the listed modules", "[trainer][peft][errors]") {
  const ScratchDir scratch("vidlora_peft_projector_save");
  lora::AdapterSpec spec;
  spec.r = 2;
  spec.target_modules = {"q_proj"};
  const lora::AdapterModules modules{{"model.layers.0.self_attn.q_proj", {Matrix::Ones(2, 4), Matrix::Ones(4, 2)}}};
  io::TensorMap saved;
  saved.emplace("model.multi_modal_projector.linear_1.weight", io::TensorData::from_matrix(Matrix::Ones(3, 3)));
  CHECK_THROWS_WITH(lora::save_peft_adapter(scratch.dir / "a", spec, modules, saved),
                    Contains("'model.multi_modal_projector.linear_1.weight' is under none of modules_to_save []"));
  spec.modules_to_save = {"multi_modal_projector"};
  lora::save_peft_adapter(scratch.dir / "a", spec, modules, saved);
  const auto back = lora::load_peft_adapter(scratch.dir / "a");
  CHECK(back.saved_tensors == std::vector<std::string>{"model.multi_modal_projector.linear_1.weight"});
  CHECK(back.spec.modules_to_save == spec.modules_to_save);
  CHECK_THROWS_WITH(lora::save_peft_adapter(scratch.dir / "b", back), Contains("pass them as `saved`"));
  // A config naming a module to save with no tensor of it given: PEFT could not load that file.
  CHECK_THROWS_WITH(lora::save_peft_adapter(scratch.dir / "c", back.spec, back.modules),
                    Contains("modules_to_save entry 'multi_modal_projector' selects none of the tensors given"));
  // PEFT's rule is a suffix of the module path, as PEFT matches it: "projector" selects multi_modal_projector too.
  spec.modules_to_save = {"projector"};
  CHECK(lora::saved_module_tensor(spec, "model.multi_modal_projector.linear_1.weight"));
  CHECK_FALSE(lora::saved_module_tensor(spec, "model.multi_modal_projector_weight"));
  spec.modules_to_save = {"lm_head"};
  CHECK_FALSE(lora::saved_module_tensor(spec, "model.multi_modal_projector.linear_1.weight"));
}
