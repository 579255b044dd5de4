// The whole recipe against transformers + PEFT: ten optimizer steps of the two-stage Trainer on a tiny
// LLaVA-NeXT-Video (tools/reference/trainer_trajectory.py) give the reference's loss at every step.
// Stage 1 trains the projector, stage 2 the projector and LoRA on the seven target modules, each with its
// own AdamW (transformers' decay groups), cosine schedule with warmup, gradient clipping at 1.0, label
// smoothing 0.1, batch 2 x accumulation 2, LoRA dropout off. The features the Python model's projector
// received are fed through the Trainer's feature function; PEFT's initial lora_A is loaded so both sides
// start from the same point.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <vidlora/io/checkpoint_dir.hpp>
#include <vidlora/io/safetensors.hpp>
#include <vidlora/model/config.hpp>
#include <vidlora/presets/gpu_presets.hpp>
#include <vidlora/train/trainer.hpp>

namespace fs = std::filesystem;
using namespace vidlora;

namespace {

const fs::path kDir = fs::path(VIDLORA_FIXTURE_DIR) / "trainer" / "trajectory";

nlohmann::json reference() {
  std::ifstream in(kDir / "reference.json");
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

// Captions in the fixture are token ids; the codec reads and writes them as space-separated numbers.
train::TextCodec id_codec(const nlohmann::json& ref) {
  train::TextCodec c;
  c.encode = [](const std::string& text) {
    std::vector<int> ids;
    std::istringstream in(text);
    for (int id; in >> id;) ids.push_back(id);
    return ids;
  };
  c.decode = [](const std::vector<int>& ids) {
    std::string s;
    for (int id : ids) {
      if (!s.empty()) s += ' ';
      s += std::to_string(id);
    }
    return s;
  };
  c.prompt_ids = ref["prompt"].get<std::vector<int>>();
  c.placeholder_id = ref["video_token"].get<int>();
  c.eos_id = ref["eos"].get<int>();
  c.pad_id = ref["pad"].get<int>();
  return c;
}

}  // namespace

TEST_CASE("ten steps of the two-stage recipe give transformers + PEFT's losses", "[trainer][reference][trajectory]") {
  const auto ref = reference();
  const auto config = model::LlavaConfig::from_file(kDir / "config.json");
  const auto weights = io::CheckpointDir::open(kDir);
  const auto features = io::SafetensorsFile::open(kDir / "features.safetensors");

  using P = presets::Cpu;
  REQUIRE(P::lora_r == ref["rank"].get<int>());
  REQUIRE(P::lora_alpha == ref["alpha"].get<int>());
  TrainerConfig c = TrainerConfig::from_preset<P>();
  c.stages.clear();
  for (const auto& s : ref["stages"])
    c.stages.push_back({s["name"].get<std::string>(), s["train_lora"].get<bool>(), s["epochs"].get<int>(),
                        s["lr"].get<double>(), s["warmup_ratio"].get<double>()});
  static_assert(std::is_same_v<P::lr_policy, schedule::Cosine>, "the reference uses the cosine schedule");
  c.batch_size = ref["batch"].get<int>();
  c.gradient_accumulation_steps = ref["accumulation"].get<int>();
  c.weight_decay = ref["weight_decay"].get<double>();
  c.max_grad_norm = ref["max_grad_norm"].get<double>();
  c.label_smoothing = ref["label_smoothing"].get<double>();
  c.lora_dropout = 0.0;
  c.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  c.output_dir = fs::temp_directory_path() / fmt::format("vidlora_trajectory_{}", ::getpid());
  c.progress = nullptr;
  fs::remove_all(c.output_dir);

  std::vector<train::Clip> train;
  const auto captions = ref["captions"].get<std::vector<std::vector<int>>>();
  for (std::size_t i = 0; i < captions.size(); ++i) {
    train::Clip clip;
    clip.id = fmt::format("clip{}", i);
    clip.video = clip.id + ".mp4";
    for (int id : captions[i]) {
      if (!clip.caption.empty()) clip.caption += ' ';
      clip.caption += std::to_string(id);
    }
    train.push_back(clip);
  }
  Trainer<P> trainer(c, config.text, weights, model::Mlp2xGelu::load(weights, 32, config.text.hidden_size),
                     id_codec(ref), [&](const train::Clip& clip) { return features.matrix(clip.id); });
  const auto lora_a = io::SafetensorsFile::open(kDir / "lora_A.safetensors");
  int loaded = 0;
  trainer.decoder().for_each_lora([&](const std::string& path, auto& layer) {
    const std::string key = path.substr(path.find("layers.")) + ".lora_A.weight";
    const Matrix a = lora_a.matrix(key);
    REQUIRE(a.rows() == layer.lora_A().rows());
    REQUIRE(a.cols() == layer.lora_A().cols());
    layer.lora_A() = a;
    ++loaded;
  });
  CHECK(loaded == 2 * 7);

  const TrainResult r = trainer.train(train, {});
  const auto want = ref["losses"].get<std::vector<double>>();
  REQUIRE(r.losses.size() == want.size());
  for (std::size_t k = 0; k < want.size(); ++k) {
    CAPTURE(k);
    CHECK(std::abs(r.losses[k] - want[k]) < 1e-4);
  }
  // the loss falls over the run, so the steps really moved the parameters
  CHECK(want.back() < want.front() - 1.0);

  // and the trained tensors agree: the projector and every lora_B, normwise
  const auto final = io::SafetensorsFile::open(kDir / "final.safetensors");
  auto normwise = [](const Matrix& got, const Matrix& expected) {
    return (got - expected).cwiseAbs().maxCoeff() / expected.cwiseAbs().maxCoeff();
  };
  CHECK(normwise(trainer.projector().linear_1().weight(), final.matrix("linear_1.weight")) < 1e-4);
  CHECK(normwise(trainer.projector().linear_2().weight(), final.matrix("linear_2.weight")) < 1e-4);
  trainer.decoder().for_each_lora([&](const std::string& path, auto& layer) {
    const std::string key = path.substr(path.find("layers.")) + ".lora_B.weight";
    CAPTURE(key);
    CHECK(normwise(layer.lora_B(), final.matrix(key)) < 1e-4);
  });
  fs::remove_all(c.output_dir);
}
