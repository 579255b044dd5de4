// The trainer's PEFT adapter on the tiny LLaMA fixture gives, in PEFT, the logits our decoder gives.
// tests/fixtures/trainer/adapter/ was written by tools/fixtures/write_trainer_adapter.cpp (the tiny run of
// tiny_adapter_run.hpp); tools/reference/trainer_adapter_check.py loaded it with PEFT and stored PEFT's logits in
// peft_logits.json. The test reruns the tiny run and checks that the Trainer still writes that adapter.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include <fixtures.hpp>

#include "tiny_adapter_run.hpp"
#include <vidlora/io/safetensors.hpp>
#include <vidlora/model/config.hpp>
#include <vidlora/presets/gpu_presets.hpp>
#include <vidlora/train/trainer.hpp>

namespace fs = std::filesystem;
using namespace vidlora;
using namespace vidlora::test;

namespace {
const std::vector<int> kIds{1, 5, 9, 3, 30, 7, 12, 40};

model::DecoderOptions cpu_lora() {
  model::DecoderOptions o;
  for (auto m : presets::Cpu::target_set::modules) o.target_modules.emplace_back(m);
  return o;
}
}  // namespace

TEST_CASE("trainer adapter on the tiny llama fixture matches PEFT logits", "[trainer][peft]") {
  const fs::path base = fixture_path("model/llama");
  const auto config = model::DecoderConfig::from_file(base / "config.json");
  const auto weights = io::SafetensorsFile::open(base / "model.safetensors");

  // The Trainer writes today the adapter PEFT was checked on (tools/fixtures/write_trainer_adapter.cpp wrote the
  // fixture, tools/reference/trainer_adapter_check.py ran PEFT on it): same config, same tensors.
  const fs::path out = fs::temp_directory_path() / "vidlora_trainer_peft_interop";
  fs::remove_all(out);
  train_tiny_adapter(base, out);
  const fs::path fixture = fixture_path("trainer/adapter");
  CHECK(nlohmann::json::parse(std::ifstream(out / "adapter" / "adapter_config.json")) ==
        nlohmann::json::parse(std::ifstream(fixture / "adapter_config.json")));
  const auto fresh = io::SafetensorsFile::open(out / "adapter" / "adapter_model.safetensors");
  const auto committed = io::SafetensorsFile::open(fixture / "adapter_model.safetensors");
  REQUIRE(fresh.names() == committed.names());
  for (const auto& name : committed.names()) {
    INFO(name);
    const Matrix f = fresh.matrix(name);
    const Matrix c = committed.matrix(name);
    REQUIRE(f.rows() == c.rows());
    REQUIRE(f.cols() == c.cols());
    CHECK(normwise_error(f, c) < 1e-6);
  }

  model::Decoder<presets::Cpu::lora_r, presets::Cpu::lora_alpha> decoder(config, weights, cpu_lora());
  decoder.load_adapter(fresh);
  const Matrix ours =
      decoder.logits(decoder.forward(decoder.embed(kIds), {1, static_cast<Eigen::Index>(kIds.size()), {}}, false));
  const auto ref = load_fixture("trainer/peft_logits.json");
  REQUIRE(ref.at("input_ids").get<std::vector<int>>() == kIds);
  const Matrix peft = json_matrix<float>(ref.at("logits"));
  REQUIRE(peft.rows() == ours.rows());
  REQUIRE(peft.cols() == ours.cols());
  // The adapter is not a no-op: PEFT's logits differ from the base model's.
  const Matrix base_logits = json_matrix<float>(ref.at("base_logits"));
  CHECK((peft - base_logits).cwiseAbs().maxCoeff() > 1e-3f);
  CHECK(normwise_error(ours, peft) < 1e-5);
  fs::remove_all(out);
}

TEST_CASE("training continues from an adapter made with PEFT in Python: its factors, alpha and logits",
          "[trainer][peft]") {
  const fs::path base = fixture_path("model/llama");
  const auto config = model::DecoderConfig::from_file(base / "config.json");
  const auto weights = io::SafetensorsFile::open(base / "model.safetensors");
  const auto ref = load_fixture("trainer/python_adapter_logits.json");
  REQUIRE(ref.at("input_ids").get<std::vector<int>>() == kIds);
  REQUIRE(ref.at("lora_alpha").get<double>() != presets::Cpu::lora_alpha);  // the adapter's alpha must win

  TrainerConfig c = TrainerConfig::from_preset<presets::Cpu>();
  c.stages[0].epochs = 1;
  c.stages[1].epochs = 2;
  c.stages[0].learning_rate = c.stages[1].learning_rate = 2e-2;
  c.output_dir = fs::temp_directory_path() / "vidlora_trainer_python_adapter";
  fs::remove_all(c.output_dir);
  c.progress = nullptr;
  c.initial_adapter = fixture_path("trainer/python_adapter");
  Trainer<presets::Cpu> t(c, config, weights, model::Mlp2xGelu(8, config.hidden_size, 3), tiny_codec(), tiny_features);

  // Before any step the decoder is PEFT's model: the Python factors under PEFT's alpha (24 / 8 = 3).
  CHECK(t.decoder().slot(0, "q_proj").lora().scaling() == Approx(3.0));
  const Matrix ours = t.decoder().logits(
      t.decoder().forward(t.decoder().embed(kIds), {1, static_cast<Eigen::Index>(kIds.size()), {}}, false));
  const Matrix peft = json_matrix<float>(ref.at("logits"));
  CHECK((peft - json_matrix<float>(ref.at("base_logits"))).cwiseAbs().maxCoeff() > 1e-2f);  // not a no-op adapter
  CHECK(normwise_error(ours, peft) < 1e-5);

  // Training moves the factors on from there, and the adapter written keeps r and the adapter's alpha.
  const Matrix b0 = t.decoder().slot(1, "v_proj").lora().lora_B();
  const auto result = t.train(tiny_clips(), {});
  CHECK(result.steps > 0);
  CHECK((t.decoder().slot(1, "v_proj").lora().lora_B() - b0).cwiseAbs().maxCoeff() > 0.0f);
  const auto saved = lora::load_peft_adapter(c.output_dir / "adapter");
  CHECK(saved.spec.r == 8);
  CHECK(saved.spec.lora_alpha == 24.0);
  CHECK_FALSE(saved.spec.use_rslora);
  // ... and its lora_dropout (0 there, 0.05 in the preset), as PEFT continuing the adapter would train.
  REQUIRE(presets::Cpu::lora_dropout != 0.0);
  CHECK(t.config().lora_dropout == 0.0);
  CHECK(saved.spec.lora_dropout == 0.0);
  fs::remove_all(c.output_dir);
}

TEST_CASE("an initial adapter of another rank or other modules is refused, naming the difference",
          "[trainer][peft][errors]") {
  const fs::path base = fixture_path("model/llama");
  const auto config = model::DecoderConfig::from_file(base / "config.json");
  const auto weights = io::SafetensorsFile::open(base / "model.safetensors");
  TrainerConfig c = TrainerConfig::from_preset<presets::Cpu>();
  c.output_dir = fs::temp_directory_path() / "vidlora_trainer_python_adapter_errors";
  c.progress = nullptr;
  auto make = [&] {
    Trainer<presets::Cpu> t(c, config, weights, model::Mlp2xGelu(8, config.hidden_size, 3), tiny_codec(),
                            tiny_features);
  };
  c.initial_adapter = fixture_path("io/peft_adapter");  // PEFT's r = 4 adapter
  CHECK_THROWS_WITH(make(), Catch::Contains("has r 4, but preset Cpu trains r 8"));
  c.initial_adapter = fixture_path("trainer/python_adapter");
  c.target_modules = {"q_proj", "v_proj"};
  CHECK_THROWS_WITH(make(), Catch::Contains("adapts layers.0.mlp.down_proj, which this run does not train"));
}
