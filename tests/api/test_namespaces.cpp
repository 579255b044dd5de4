// namespace vidlora holds the recipe's vocabulary and nothing else, re-exported one way: a block at the end of the
// header that defines the name (docs/architecture.md, "Namespaces"). Reads every public header.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

namespace fs = std::filesystem;

namespace {

// The vocabulary as docs/architecture.md lists it; a name added to or dropped from namespace vidlora changes
// this list and the docs together.
const std::set<std::string> kVocabulary{
    // policies and their concepts
    "lora::LoraLinear", "lora::QLoraLinear", "lora::DenseWeight", "lora::FrozenWeight", "lora::TargetModuleSet",
    "lora::Basic", "lora::Extended", "lora::AttentionGateUp", "quant::Quantizer", "quant::NF4", "quant::FP4",
    "quant::QuantFormat", "quant::NF4Weight", "quant::FP4Weight", "schedule::Scheduler", "schedule::LrPolicy",
    "schedule::Constant", "schedule::ConstantWithWarmup", "schedule::Cosine", "schedule::CosineRestarts",
    "schedule::Linear", "schedule::WarmRestarts", "video::Sampler", "video::SamplingPolicy", "video::Uniform",
    "video::SceneChange", "video::Motion", "optim::AdamW", "optim::clip_grad_norm",
    // the recipe's rules
    "lora::select_lora_rank", "lora::default_alpha", "lora::dropout_for_dataset_size", "lora::max_rank_for_vram",
    // the Trainer
    "train::Trainer", "train::TrainerConfig", "train::StageSettings", "train::TrainResult", "train::EarlyStopping",
    // options aggregates
    "lora::LoraOptions", "schedule::ScheduleOptions", "optim::AdamWOptions", "optim::ClipOptions",
    "loss::CrossEntropyOptions", "video::SamplerOptions", "video::SceneChangeOptions", "video::MotionOptions",
    "train::EarlyStoppingOptions", "model::GenerationOptions", "eval::CaptionMetricsOptions", "eval::MeteorOptions",
    "eval::CiderOptions"};

std::string read(const fs::path& p) {
  std::ifstream in(p);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

TEST_CASE("namespace vidlora re-exports exactly the recipe's vocabulary, from the defining headers", "[api]") {
  const fs::path root = fs::path(VIDLORA_SOURCE_DIR) / "include" / "vidlora";
  // A block "namespace vidlora {" ... "}" at the top level of a header (not vidlora::<module>).
  const std::regex block(R"(\nnamespace vidlora \{([^\n]*)\n((?:[^}\n][^\n]*\n|\n)*)\})");
  const std::regex using_decl(R"(^using ([a-z]+::\w+);$)");
  std::set<std::string> exported;
  int blocks = 0;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (!entry.is_regular_file()) continue;
    const std::string file = fs::relative(entry.path(), root.parent_path()).generic_string();
    const std::string text = read(entry.path());
    const bool umbrella = entry.path().parent_path() == root;
    for (auto it = std::sregex_iterator(text.begin(), text.end(), block); it != std::sregex_iterator(); ++it) {
      std::istringstream body((*it)[2].str());
      std::string line;
      bool has_using = false;
      while (std::getline(body, line)) {
        std::smatch m;
        if (!std::regex_match(line, m, using_decl)) continue;
        has_using = true;
        INFO(file << ": using " << m[1]);
        CHECK_FALSE(umbrella);                      // umbrellas only include
        CHECK(kVocabulary.count(m[1].str()) == 1);  // only the vocabulary ...
        CHECK(exported.insert(m[1].str()).second);  // ... each name once
        const std::string module = m[1].str().substr(0, m[1].str().find("::"));
        CHECK(file.rfind("vidlora/" + module + "/", 0) == 0);  // from the module that defines it
      }
      if (has_using) {
        ++blocks;
        INFO(file);
        CHECK((*it)[1].str().find("the recipe's vocabulary") != std::string::npos);  // one style, one comment
      }
    }
  }
  CHECK(blocks > 10);
  for (const auto& name : kVocabulary) {
    INFO(name << " is in the vocabulary but no header re-exports it");
    CHECK(exported.count(name) == 1);
  }
}
