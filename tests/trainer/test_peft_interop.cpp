// The trainer's PEFT adapter on the tiny LLaMA fixture gives, in PEFT, the logits our decoder gives.
// tests/fixtures/trainer/adapter/ was written by this file's "writes" test (VIDLORA_WRITE_TRAINER_FIXTURE=1);
// tools/reference/trainer_adapter_check.py loaded it with PEFT and stored PEFT's logits in peft_logits.json.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>

#include <fixtures.hpp>
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
// The tiny run both tests train: a character codec, 8 clips, seeded random features.
TextCodec tiny_codec() {
  TextCodec codec;
  codec.encode = [](const std::string& s) {
    std::vector<int> ids;
    for (char ch : s) ids.push_back(10 + (ch - 'a') % 40);
    return ids;
  };
  codec.decode = [](const std::vector<int>& ids) { return std::to_string(ids.size()); };
  codec.prompt_ids = {1, 60, 5};
  codec.placeholder_id = 60;
  codec.eos_id = 2;
  return codec;
}
std::vector<Clip> tiny_clips() {
  std::vector<Clip> clips;
  for (int i = 0; i < 8; ++i) {
    Clip clip;
    clip.id = fmt::format("c{}", i);
    clip.video = fmt::format("c{}.mp4", i);
    clip.caption = std::string(3 + i % 3, static_cast<char>('a' + i));
    clips.push_back(clip);
  }
  return clips;
}
Matrix tiny_features(const Clip& cl) { return model::random_normal(4, 8, 1.0, 5, static_cast<std::uint64_t>(cl.id[1])); }
}  // namespace

TEST_CASE("trainer adapter on the tiny llama fixture matches PEFT logits", "[trainer][peft]") {
  const fs::path base = fixture_path("model/llama");
  const auto config = model::DecoderConfig::from_file(base / "config.json");
  const auto weights = io::SafetensorsFile::open(base / "model.safetensors");

  if (std::getenv("VIDLORA_WRITE_TRAINER_FIXTURE")) {  // regenerate the adapter with the Trainer
    TrainerConfig c = TrainerConfig::from_preset<presets::Cpu>();
    c.stages[0].epochs = 1;
    c.stages[1].epochs = 2;
    c.stages[0].learning_rate = c.stages[1].learning_rate = 2e-2;
    c.output_dir = fs::temp_directory_path() / "vidlora_trainer_fixture";
    c.progress = nullptr;
    Trainer<presets::Cpu> t(c, config, weights, model::Mlp2xGelu(8, config.hidden_size, 3), tiny_codec(), tiny_features);
    t.train(tiny_clips(), {});
    fs::remove_all(fixture_path("trainer/adapter"));
    fs::copy(c.output_dir / "adapter", fixture_path("trainer/adapter"), fs::copy_options::recursive);
  }

  model::Decoder<presets::Cpu::lora_r, presets::Cpu::lora_alpha> decoder(config, weights, cpu_lora());
  decoder.load_adapter(io::SafetensorsFile::open(fixture_path("trainer/adapter/adapter_model.safetensors")));
  const Matrix ours = decoder.logits(decoder.forward(decoder.embed(kIds), {1, static_cast<Eigen::Index>(kIds.size()), {}}, false));
  const auto ref = load_fixture("trainer/peft_logits.json");
  REQUIRE(ref.at("input_ids").get<std::vector<int>>() == kIds);
  const Matrix peft = json_matrix<float>(ref.at("logits"));
  REQUIRE(peft.rows() == ours.rows());
  REQUIRE(peft.cols() == ours.cols());
  // The adapter is not a no-op: PEFT's logits differ from the base model's.
  const Matrix base_logits = json_matrix<float>(ref.at("base_logits"));
  CHECK((peft - base_logits).cwiseAbs().maxCoeff() > 1e-3f);
  CHECK(normwise_error(ours, peft) < 1e-5);
}


TEST_CASE("training continues from an adapter made with PEFT in Python: its factors, alpha and logits", "[trainer][peft]") {
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
  const Matrix ours = t.decoder().logits(t.decoder().forward(t.decoder().embed(kIds), {1, static_cast<Eigen::Index>(kIds.size()), {}}, false));
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
  fs::remove_all(c.output_dir);
}

TEST_CASE("an initial adapter of another rank or other modules is refused, naming the difference", "[trainer][peft][errors]") {
  const fs::path base = fixture_path("model/llama");
  const auto config = model::DecoderConfig::from_file(base / "config.json");
  const auto weights = io::SafetensorsFile::open(base / "model.safetensors");
  TrainerConfig c = TrainerConfig::from_preset<presets::Cpu>();
  c.output_dir = fs::temp_directory_path() / "vidlora_trainer_python_adapter_errors";
  c.progress = nullptr;
  auto make = [&] {
    Trainer<presets::Cpu> t(c, config, weights, model::Mlp2xGelu(8, config.hidden_size, 3), tiny_codec(), tiny_features);
  };
  c.initial_adapter = fixture_path("io/peft_adapter");  // PEFT's r = 4 adapter
  CHECK_THROWS_WITH(make(), Catch::Contains("has r 4, but preset Cpu trains r 8"));
  c.initial_adapter = fixture_path("trainer/python_adapter");
  c.target_modules = {"q_proj", "v_proj"};
  CHECK_THROWS_WITH(make(), Catch::Contains("adapts layers.0.mlp.down_proj, which this run does not train"));
}
