#include <catch2/catch.hpp>

#include <vidlora/lora.hpp>
#include <vidlora/presets.hpp>

#include <array>
#include <string>

using namespace vidlora;

namespace {

// The recipe's rank table, both sides of every threshold: VRAM ≤ 16 → 8; ≤ 24 → 16; ≤ 40 → 16 below 5,000
// samples, else 32; above 40 → 32 below 10,000 samples, else 64.
struct RankRow {
  long dataset_size;
  int gpu_vram_gb;
  int rank;
};
constexpr std::array kRankTable{
    // ≤ 16 GB: 8 whatever the data
    RankRow{1, 1, 8},
    RankRow{1, 16, 8},
    RankRow{4999, 16, 8},
    RankRow{5000, 16, 8},
    RankRow{10000, 16, 8},
    RankRow{1000000, 16, 8},
    // 16 | 17 GB and ≤ 24 GB: 16 whatever the data
    RankRow{1, 17, 16},
    RankRow{100, 24, 16},
    RankRow{4999, 24, 16},
    RankRow{5000, 24, 16},
    RankRow{10000, 24, 16},
    RankRow{1000000, 24, 16},
    // 24 | 25 GB and ≤ 40 GB: 16 below 5,000 samples, 32 from 5,000
    RankRow{4999, 25, 16},
    RankRow{5000, 25, 32},
    RankRow{1, 40, 16},
    RankRow{4999, 40, 16},
    RankRow{5000, 40, 32},
    RankRow{9999, 40, 32},
    RankRow{10000, 40, 32},
    RankRow{1000000, 40, 32},
    // 40 | 41 GB and more: 32 below 10,000 samples, 64 from 10,000
    RankRow{1, 41, 32},
    RankRow{4999, 41, 32},
    RankRow{5000, 41, 32},
    RankRow{9999, 41, 32},
    RankRow{10000, 41, 64},
    RankRow{9999, 80, 32},
    RankRow{10000, 80, 64},
    RankRow{1000000, 141, 64},
};

constexpr bool rank_table_holds() {
  for (const RankRow& row : kRankTable)
    if (select_lora_rank(row.dataset_size, row.gpu_vram_gb) != row.rank) return false;
  return true;
}

}  // namespace

// The whole table at compile time: the rule is constexpr.
static_assert(rank_table_holds());
static_assert(select_lora_rank(10000, 80) == 64);  // the example: 10,000 clips on an 80 GB card
static_assert(select_lora_rank(100, 24) == 16);    // a small set on a 24 GB card
static_assert(max_rank_for_vram(16) == 8 && max_rank_for_vram(24) == 16 && max_rank_for_vram(40) == 32 &&
              max_rank_for_vram(80) == 64);
static_assert(default_alpha(16) == 32);
static_assert(dropout_for_dataset_size(4999) == 0.1);
static_assert(lora::is_target<Basic>("model.layers.0.self_attn.q_proj"));
static_assert(!lora::is_target<Basic>("model.layers.0.mlp.gate_proj"));

TEST_CASE("select_lora_rank is the recipe's table on both sides of every threshold", "[lora][rules]") {
  for (const RankRow& row : kRankTable) {
    INFO("dataset " << row.dataset_size << ", " << row.gpu_vram_gb << " GB");
    const long n = row.dataset_size;  // a run-time value: the same function outside constant evaluation
    CHECK(select_lora_rank(n, row.gpu_vram_gb) == row.rank);
  }
}

TEST_CASE("max_rank_for_vram is select_lora_rank's rank for a large data set", "[lora][rules]") {
  for (int vram : {1, 8, 16, 17, 24, 25, 40, 41, 48, 80, 141}) {
    INFO("vram " << vram);
    CHECK(max_rank_for_vram(vram) == select_lora_rank(1000000, vram));
    CHECK(max_rank_for_vram(vram) == select_lora_rank(10000, vram));
  }
}

TEST_CASE("alpha defaults to twice the rank", "[lora][rules]") {
  for (int r : {1, 4, 8, 16, 32, 64}) CHECK(default_alpha(r) == 2 * r);
  CHECK(default_alpha(select_lora_rank(50000, 24)) == 32);  // L4: r16 / alpha 32
}

TEST_CASE("dropout follows the data set size table", "[lora][rules]") {
  const std::pair<long, double> rows[] = {{1, 0.1},      {4999, 0.1},   {5000, 0.05},   {12000, 0.05},
                                          {20000, 0.05}, {20001, 0.01}, {1000000, 0.01}};
  for (auto [n, p] : rows) {
    INFO("dataset " << n);
    CHECK(dropout_for_dataset_size(n) == p);
  }
  CHECK(lora::kDropoutSmallDataset == dropout_for_dataset_size(1));
  CHECK(lora::kDropoutMediumDataset == dropout_for_dataset_size(5000));
  CHECK(lora::kDropoutLargeDataset == dropout_for_dataset_size(20001));
}

TEST_CASE("rules reject non-positive data set sizes and vram at run time", "[lora][rules][errors]") {
  using Catch::Contains;
  CHECK_THROWS_AS(select_lora_rank(0, 16), Error);
  CHECK_THROWS_WITH(select_lora_rank(-5, 16), Contains("dataset_size") && Contains("-5"));
  CHECK_THROWS_WITH(select_lora_rank(0, 80), Contains("dataset_size must be positive, got 0"));
  CHECK_THROWS_WITH(select_lora_rank(1000, 0), Contains("gpu_vram_gb must be positive, got 0"));
  CHECK_THROWS_WITH(select_lora_rank(1000, -8), Contains("-8"));
  CHECK_THROWS_WITH(dropout_for_dataset_size(0), Contains("dataset_size"));
  CHECK_THROWS_WITH(default_alpha(0), Contains("rank"));
  CHECK_THROWS_WITH(max_rank_for_vram(-1), Contains("gpu_vram_gb must be positive, got -1"));
}

TEST_CASE("basic targets the four attention projections", "[lora][targets]") {
  REQUIRE(Basic::modules.size() == 4);
  CHECK(Basic::modules[0] == "q_proj");
  CHECK(Basic::modules[1] == "k_proj");
  CHECK(Basic::modules[2] == "v_proj");
  CHECK(Basic::modules[3] == "o_proj");
}

TEST_CASE("attention-gate-up adds gate and up but not down", "[lora][targets]") {
  REQUIRE(AttentionGateUp::modules.size() == 6);
  for (std::size_t i = 0; i < 4; ++i) CHECK(AttentionGateUp::modules[i] == Basic::modules[i]);
  CHECK(AttentionGateUp::modules[4] == "gate_proj");
  CHECK(AttentionGateUp::modules[5] == "up_proj");
  CHECK_FALSE(lora::is_target<AttentionGateUp>("model.layers.0.mlp.down_proj"));
}

TEST_CASE("extended adds the three mlp projections", "[lora][targets]") {
  REQUIRE(Extended::modules.size() == 7);
  for (std::size_t i = 0; i < 4; ++i) CHECK(Extended::modules[i] == Basic::modules[i]);
  CHECK(Extended::modules[4] == "gate_proj");
  CHECK(Extended::modules[5] == "up_proj");
  CHECK(Extended::modules[6] == "down_proj");
}

TEST_CASE("is_target matches the exact name or a dotted suffix as PEFT does", "[lora][targets]") {
  CHECK(lora::is_target<Basic>("q_proj"));
  CHECK(lora::is_target<Basic>("model.layers.3.self_attn.k_proj"));
  CHECK(lora::is_target<Basic>("language_model.model.layers.0.self_attn.o_proj"));
  CHECK_FALSE(lora::is_target<Basic>("model.layers.3.mlp.up_proj"));
  CHECK(lora::is_target<Extended>("model.layers.3.mlp.up_proj"));
  CHECK(lora::is_target<Extended>("model.layers.3.mlp.down_proj"));
  CHECK_FALSE(lora::is_target<Extended>("model.layers.3.self_attn.xq_proj"));  // suffix without the dot
  CHECK_FALSE(lora::is_target<Extended>("model.layers.3.self_attn.q_proj.lora_A"));
  CHECK_FALSE(lora::is_target<Extended>("lm_head"));
  CHECK_FALSE(lora::is_target<Extended>(""));
  CHECK_FALSE(lora::is_target<Basic>(".q_proj_x"));
}

namespace {
template <class P>
void check_preset_rules() {
  INFO("preset " << P::name << " with " << P::vram_gb << " GB");
  STATIC_REQUIRE(P::lora_r == max_rank_for_vram(P::vram_gb));
  STATIC_REQUIRE(P::lora_alpha == default_alpha(P::lora_r));
  CHECK((P::lora_dropout == lora::kDropoutSmallDataset || P::lora_dropout == lora::kDropoutMediumDataset ||
         P::lora_dropout == lora::kDropoutLargeDataset));
}
}  // namespace

TEST_CASE("every preset's lora_r, lora_alpha and lora_dropout come from the lora rules", "[lora][rules][presets]") {
  presets::for_each_preset([](auto p) { check_preset_rules<decltype(p)>(); });
}
