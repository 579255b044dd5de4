#include <catch2/catch.hpp>

#include <vidlora/lora.hpp>
#include <vidlora/presets.hpp>

#include <string>

using namespace vidlora;

// Evaluated at compile time: the rules are constexpr.
static_assert(select_lora_rank(100000, 16) == 8);
static_assert(select_lora_rank(100000, 80) == 64);
static_assert(default_alpha(16) == 32);
static_assert(dropout_for_dataset_size(4999) == 0.1);
static_assert(is_target<Basic>("model.layers.0.self_attn.q_proj"));
static_assert(!is_target<Basic>("model.layers.0.mlp.gate_proj"));

TEST_CASE("vram caps the rank as the presets do", "[lora][rules]") {
  // (vram GB, rank): ≤16 → 8, ≤24 → 16, ≤40 → 32, more → 64
  const std::pair<int, int> rows[] = {{1, 8},   {8, 8},   {16, 8},  {17, 16}, {24, 16}, {25, 32},
                                      {40, 32}, {41, 64}, {48, 64}, {80, 64}, {141, 64}};
  for (auto [vram, rank] : rows) {
    INFO("vram " << vram);
    CHECK(max_rank_for_vram(vram) == rank);
    CHECK(select_lora_rank(1000000, vram) == rank);  // a large data set leaves the VRAM cap
  }
  // The presets T4 16GB r8, L4 24GB r16, A100 40GB r32, H100 80GB r64.
  CHECK(select_lora_rank(50000, 16) == 8);
  CHECK(select_lora_rank(50000, 24) == 16);
  CHECK(select_lora_rank(50000, 40) == 32);
  CHECK(select_lora_rank(50000, 80) == 64);
}

TEST_CASE("small data sets get smaller ranks", "[lora][rules]") {
  // (samples, rank): <1k → 8, <5k → 16, <20k → 32, more → 64
  const std::pair<long, int> rows[] = {{1, 8},     {999, 8},    {1000, 16},  {4999, 16},
                                       {5000, 32}, {19999, 32}, {20000, 64}, {10000000, 64}};
  for (auto [n, rank] : rows) {
    INFO("dataset " << n);
    CHECK(max_rank_for_dataset(n) == rank);
    CHECK(select_lora_rank(n, 80) == rank);  // an H100 leaves the data-set cap
  }
  CHECK(select_lora_rank(500, 80) == 8);     // the smaller cap wins either way
  CHECK(select_lora_rank(3000, 40) == 16);
  CHECK(select_lora_rank(3000, 16) == 8);
  CHECK(select_lora_rank(10000, 24) == 16);
  CHECK(select_lora_rank(10000, 40) == 32);
}

TEST_CASE("alpha defaults to twice the rank", "[lora][rules]") {
  for (int r : {1, 4, 8, 16, 32, 64}) CHECK(default_alpha(r) == 2 * r);
  CHECK(default_alpha(select_lora_rank(50000, 24)) == 32);  // L4: r16 / alpha 32
}

TEST_CASE("dropout follows the data set size table", "[lora][rules]") {
  const std::pair<long, double> rows[] = {{1, 0.1},     {4999, 0.1},   {5000, 0.05},
                                          {12000, 0.05}, {20000, 0.05}, {20001, 0.01}, {1000000, 0.01}};
  for (auto [n, p] : rows) {
    INFO("dataset " << n);
    CHECK(dropout_for_dataset_size(n) == p);
  }
}

TEST_CASE("rules reject non-positive data set sizes and vram", "[lora][rules][errors]") {
  using Catch::Contains;
  CHECK_THROWS_AS(select_lora_rank(0, 16), Error);
  CHECK_THROWS_WITH(select_lora_rank(-5, 16), Contains("dataset_size") && Contains("-5"));
  CHECK_THROWS_WITH(select_lora_rank(1000, 0), Contains("gpu_vram_gb") && Contains("0"));
  CHECK_THROWS_WITH(select_lora_rank(1000, -8), Contains("-8"));
  CHECK_THROWS_WITH(dropout_for_dataset_size(0), Contains("dataset_size"));
  CHECK_THROWS_WITH(default_alpha(0), Contains("rank"));
  CHECK_THROWS_AS(max_rank_for_vram(-1), Error);
  CHECK_THROWS_AS(max_rank_for_dataset(0), Error);
}

TEST_CASE("basic targets the four attention projections", "[lora][targets]") {
  REQUIRE(Basic::modules.size() == 4);
  CHECK(Basic::modules[0] == "q_proj");
  CHECK(Basic::modules[1] == "k_proj");
  CHECK(Basic::modules[2] == "v_proj");
  CHECK(Basic::modules[3] == "o_proj");
}

TEST_CASE("extended adds the three mlp projections", "[lora][targets]") {
  REQUIRE(Extended::modules.size() == 7);
  for (std::size_t i = 0; i < 4; ++i) CHECK(Extended::modules[i] == Basic::modules[i]);
  CHECK(Extended::modules[4] == "gate_proj");
  CHECK(Extended::modules[5] == "up_proj");
  CHECK(Extended::modules[6] == "down_proj");
}

TEST_CASE("is_target matches the exact name or a dotted suffix as PEFT does", "[lora][targets]") {
  CHECK(is_target<Basic>("q_proj"));
  CHECK(is_target<Basic>("model.layers.3.self_attn.k_proj"));
  CHECK(is_target<Basic>("language_model.model.layers.0.self_attn.o_proj"));
  CHECK_FALSE(is_target<Basic>("model.layers.3.mlp.up_proj"));
  CHECK(is_target<Extended>("model.layers.3.mlp.up_proj"));
  CHECK(is_target<Extended>("model.layers.3.mlp.down_proj"));
  CHECK_FALSE(is_target<Extended>("model.layers.3.self_attn.xq_proj"));  // suffix without the dot
  CHECK_FALSE(is_target<Extended>("model.layers.3.self_attn.q_proj.lora_A"));
  CHECK_FALSE(is_target<Extended>("lm_head"));
  CHECK_FALSE(is_target<Extended>(""));
  CHECK_FALSE(is_target<Basic>(".q_proj_x"));
}

namespace {
template <class P>
void check_preset_rank() {
  INFO("preset with " << P::vram_gb << " GB");
  CHECK(select_lora_rank(100000, P::vram_gb) == P::lora_r);
  CHECK(default_alpha(P::lora_r) == P::lora_alpha);
}
}  // namespace

TEST_CASE("rank rule and alpha rule reproduce every preset's lora_r and lora_alpha", "[lora][rules][presets]") {
  check_preset_rank<presets::T4>();
  check_preset_rank<presets::L4>();
  check_preset_rank<presets::A100>();
  check_preset_rank<presets::H100>();
  check_preset_rank<presets::Cpu>();
}
