#include <catch2/catch.hpp>

#include <vidlora/core/error.hpp>
#include <vidlora/train/random_vision_weights.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

using namespace vidlora;

namespace {

model::ClipVisionConfig tiny_vision(int image_size, int patch_size, int hidden) {
  model::ClipVisionConfig c;
  c.hidden_size = hidden;
  c.intermediate_size = 2 * hidden;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.image_size = image_size;
  c.patch_size = patch_size;
  return c;
}

}  // namespace

TEST_CASE("the 2-D sine-cosine position embedding: MAE's values, the row's half first", "[train][random_vision]") {
  // grid 2, width 8: per axis the frequencies 1 and 10000^(-1/2) = 0.01. Hand-written values of
  // MAE's get_2d_sincos_pos_embed with its halves swapped (its meshgrid(w, h) puts the column first).
  const Matrix e = train::sincos_2d_position_embedding(2, 8);
  REQUIRE(e.rows() == 4);
  REQUIRE(e.cols() == 8);
  const auto expected = [](double x, double y) {
    return std::vector<double>{std::sin(y), std::sin(0.01 * y), std::cos(y), std::cos(0.01 * y),
                               std::sin(x), std::sin(0.01 * x), std::cos(x), std::cos(0.01 * x)};
  };
  // patches row by row: (x, y) = (0, 0), (1, 0), (0, 1), (1, 1)
  const double xy[4][2] = {{0, 0}, {1, 0}, {0, 1}, {1, 1}};
  for (int p = 0; p < 4; ++p) {
    const auto want = expected(xy[p][0], xy[p][1]);
    for (int k = 0; k < 8; ++k) {
      INFO("patch " << p << " feature " << k);
      CHECK(e(p, k) == Approx(want[static_cast<std::size_t>(k)]).margin(1e-7));
    }
  }
  CHECK_THROWS_WITH(train::sincos_2d_position_embedding(2, 6), Catch::Contains("divisible by 4, got 6"));
}

TEST_CASE("a random vision tower with sin-cos positions differs from CLIP's init only in the position embedding",
          "[train][random_vision]") {
  const auto c = tiny_vision(24, 8, 16);  // 3x3 patches
  const auto clip = train::random_clip_vision_weights(c, 5);
  const auto sincos = train::random_clip_vision_weights(c, 5, train::RandomVisionPositions::sincos_2d);
  const std::string pos = "vision_model.embeddings.position_embedding.weight";
  REQUIRE(clip.tensors().size() == sincos.tensors().size());
  for (const auto& [name, entry] : clip.tensors()) {
    INFO(name);
    REQUIRE(sincos.contains(name));
    CHECK(sincos.shape(name) == entry.shape);
    if (name != pos) CHECK(sincos.read_float(name) == entry.data);
  }
  const auto p = sincos.read_float(pos);
  REQUIRE(sincos.shape(pos) == std::vector<std::int64_t>{10, 16});
  for (int k = 0; k < 16; ++k) CHECK(p[static_cast<std::size_t>(k)] == 0.0f);  // CLS
  const Matrix want = train::sincos_2d_position_embedding(3, 16);
  for (int r = 0; r < 9; ++r)
    for (int k = 0; k < 16; ++k) CHECK(p[static_cast<std::size_t>((r + 1) * 16 + k)] == want(r, k));
  // CLIP's init: small (std 0.02), nowhere near the sin-cos values
  double sum_sq = 0;
  for (float v : clip.read_float(pos)) sum_sq += static_cast<double>(v) * v;
  CHECK(std::sqrt(sum_sq / (10.0 * 16.0)) == Approx(0.02).epsilon(0.35));
}

TEST_CASE("an unknown position embedding name is an error listing the known ones", "[train][random_vision]") {
  CHECK(train::random_vision_positions_from_string("sincos_2d") == train::RandomVisionPositions::sincos_2d);
  CHECK(train::random_vision_positions_from_string("clip_init") == train::RandomVisionPositions::clip_init);
  CHECK_THROWS_WITH(train::random_vision_positions_from_string("learned"),
                    Catch::Contains("unknown position embedding 'learned'") && Catch::Contains("clip_init, sincos_2d"));
}
