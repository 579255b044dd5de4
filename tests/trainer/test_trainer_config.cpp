// TrainerConfig::from_preset<P>(): every preset field reaches the configuration the Trainer runs with.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <vidlora/presets/active_preset.hpp>
#include <vidlora/train/trainer.hpp>

using namespace vidlora;

namespace {

template <class P>
std::string expected_precision() {
  return P::bf16 ? "bf16" : (P::fp16 ? "fp16" : "fp32");
}

template <class P>
void check_every_field(const TrainerConfig& c) {
  INFO("preset " << P::name);
  CHECK(c.preset == P::name);
  REQUIRE(c.stages.size() == 2);
  // stage 1: the recipe's projector-only stage
  CHECK(c.stages[0].name == P::stage1.name);
  CHECK_FALSE(c.stages[0].train_lora);
  CHECK(c.stages[0].epochs == P::stage1.num_epochs);
  CHECK(c.stages[0].learning_rate == P::stage1.learning_rate);
  CHECK(c.stages[0].warmup_ratio == P::stage1.warmup_ratio);
  // stage 2: projector + LoRA at the preset's learning rate and warmup
  CHECK(c.stages[1].train_lora);
  CHECK(c.stages[1].epochs == presets::stage2_of<P>().num_epochs);
  CHECK(c.stages[1].learning_rate == P::learning_rate);
  CHECK(c.stages[1].warmup_ratio == P::warmup_ratio);
  CHECK(c.batch_size == P::batch_size);
  CHECK(c.gradient_accumulation_steps == P::gradient_accumulation_steps);
  CHECK(c.num_frames == P::num_frames);
  CHECK(c.precision == expected_precision<P>());
  CHECK(c.loss_scaler.enabled == P::fp16);  // torch.amp.GradScaler for the fp16 presets, at its defaults
  CHECK(c.loss_scaler.init_scale == 65536.0);
  CHECK(c.loss_scaler.growth_interval == 2000);
  CHECK(c.weight_decay == P::weight_decay);
  CHECK(c.max_grad_norm == P::max_grad_norm);
  CHECK(c.label_smoothing == P::label_smoothing);
  CHECK(c.lora_dropout == P::lora_dropout);
  CHECK(c.target_modules == std::vector<std::string>(P::target_set::modules.begin(), P::target_set::modules.end()));
  CHECK(c.load_in_4bit == P::load_in_4bit);
  CHECK(c.gradient_checkpointing == P::gradient_checkpointing);
  CHECK(c.patience == P::patience);
}

// Every value differs from TrainerConfig{}'s defaults and from the shipped presets, so a field that
// from_preset does not copy shows up here even where a shipped preset happens to equal the default.
struct Unusual : presets::Cpu {
  static constexpr std::string_view name = "Unusual";
  static constexpr presets::StageConfig stage1{.name = "unusual-stage1",
                                               .train_projector = true,
                                               .train_lora = false,
                                               .num_epochs = 3,
                                               .learning_rate = 5e-4,
                                               .warmup_ratio = 0.15};
  static constexpr int batch_size = 3;
  static constexpr int gradient_accumulation_steps = 5;
  static constexpr int num_frames = 7;
  static constexpr double learning_rate = 7e-4;
  static constexpr double warmup_ratio = 0.2;
  static constexpr double label_smoothing = 0.07;
  static constexpr int patience = 9;
  static constexpr double weight_decay = 0.02;
  static constexpr double max_grad_norm = 0.7;
  static constexpr double lora_dropout = 0.15;
  using target_set = lora::AttentionGateUp;
  static constexpr bool load_in_4bit = true;
  static constexpr bool gradient_checkpointing = true;
  static constexpr bool bf16 = true;
};

}  // namespace

TEMPLATE_LIST_TEST_CASE("from_preset carries every field of each shipped preset into the run's config",
                        "[trainer][presets]", presets::AllPresets) {
  check_every_field<TestType>(TrainerConfig::from_preset<TestType>());
}

TEST_CASE("from_preset copies fields whose values differ from every default", "[trainer][presets]") {
  const TrainerConfig defaults;
  const TrainerConfig c = TrainerConfig::from_preset<Unusual>();
  check_every_field<Unusual>(c);
  // The test can fail: none of these equals the default it would keep if the field were not wired.
  CHECK(c.batch_size != defaults.batch_size);
  CHECK(c.gradient_accumulation_steps != defaults.gradient_accumulation_steps);
  CHECK(c.num_frames != defaults.num_frames);
  CHECK(c.precision != defaults.precision);
  CHECK(c.weight_decay != defaults.weight_decay);
  CHECK(c.max_grad_norm != defaults.max_grad_norm);
  CHECK(c.label_smoothing != defaults.label_smoothing);
  CHECK(c.lora_dropout != defaults.lora_dropout);
  CHECK(c.target_modules != defaults.target_modules);
  CHECK(c.load_in_4bit != defaults.load_in_4bit);
  CHECK(c.gradient_checkpointing != defaults.gradient_checkpointing);
  CHECK(c.patience != defaults.patience);
  CHECK(c.stages[0].learning_rate != presets::kRecipeStage1.learning_rate);
  CHECK(c.stages[1].learning_rate != presets::T4::learning_rate);
  CHECK(c.stages[1].warmup_ratio != presets::T4::warmup_ratio);
}

TEST_CASE("stage 2 trains at the recipe's per-GPU rates and warmups, stage 1 at the recipe's stage-1 values",
          "[trainer][presets]") {
  // The recipe: A100 and H100 2e-4, T4 and L4 1e-4; T4 warms up over 5 %, the others 3 %.
  const auto t4 = TrainerConfig::from_preset<presets::T4>();
  const auto l4 = TrainerConfig::from_preset<presets::L4>();
  const auto a100 = TrainerConfig::from_preset<presets::A100>();
  const auto h100 = TrainerConfig::from_preset<presets::H100>();
  CHECK(t4.stages[1].learning_rate == 1e-4);
  CHECK(t4.stages[1].warmup_ratio == 0.05);
  CHECK(l4.stages[1].learning_rate == 1e-4);
  CHECK(l4.stages[1].warmup_ratio == 0.03);
  CHECK(a100.stages[1].learning_rate == 2e-4);
  CHECK(a100.stages[1].warmup_ratio == 0.03);
  CHECK(h100.stages[1].learning_rate == 2e-4);
  CHECK(h100.stages[1].warmup_ratio == 0.03);
  for (const auto* c : {&t4, &l4, &a100, &h100}) {
    CHECK(c->stages[0].epochs == 1);
    CHECK(c->stages[0].learning_rate == 2e-4);
    CHECK(c->stages[0].warmup_ratio == 0.1);
    CHECK(c->stages[1].epochs == 4);
  }
  CHECK(t4.precision == "fp16");
  CHECK(a100.precision == "bf16");
  CHECK(TrainerConfig::from_preset<presets::Cpu>().precision == "fp32");
}
