#include <catch2/catch.hpp>

#include "../../examples/demo_attributes.hpp"

TEST_CASE("demo captions are read back into the grammar's attributes", "[programs][demo]") {
  const auto a = demo::read_caption_attributes(
      "노란 배경에서 흰 사각형이 아래에서 위로 움직인다. 장면이 바뀌어 보라 배경이 나타난다.");
  CHECK(a.background == "노란");
  CHECK(a.colour == "흰");
  CHECK(a.shape == "사각형이");
  CHECK(a.motion == "아래에서 위로 움직인다.");
  CHECK(a.scene_change == "보라");
  CHECK(a.shake == "no");
  const auto b = demo::read_caption_attributes("검은 배경에서 주황 원이 제자리에 멈춰 있다. 잠시 빠르게 흔들린다.");
  CHECK(b.background == "검은");
  CHECK(b.colour == "주황");
  CHECK(b.shape == "원이");
  CHECK(b.motion == "제자리에 멈춰 있다.");
  CHECK(b.scene_change == "none");
  CHECK(b.shake == "yes");
  // the third shape make_demo_data.sh draws with SHAPES=...,triangle; "삼각형이" is not "사각형이"
  const auto t = demo::read_caption_attributes("흰 배경에서 파란 삼각형이 위에서 아래로 움직인다.");
  CHECK(t.shape == "삼각형이");
  CHECK(t.motion == "위에서 아래로 움직인다.");
  CHECK(demo::attributes_right({"흰 배경에서 파란 사각형이 위에서 아래로 움직인다."},
                               {"흰 배경에서 파란 삼각형이 위에서 아래로 움직인다."})[2] == 0);
}

TEST_CASE("an impossible motion or a broken phrase is never counted right", "[programs][demo]") {
  const auto a =
      demo::read_caption_attributes("파란 배경에서 빨간 원이 아래에서 아래로 움직인다. 장면이 바뀌어 배경이 나타난다.");
  CHECK(a.motion.empty());
  CHECK(a.scene_change.empty());
  const std::vector<std::string> refs{
      "파란 배경에서 빨간 원이 아래에서 위로 움직인다. 장면이 바뀌어 흰 배경이 나타난다."};
  const auto right = demo::attributes_right(
      {"파란 배경에서 빨간 원이 아래에서 아래로 움직인다. 장면이 바뀌어 배경이 나타난다."}, refs);
  CHECK(right == std::array<int, 6>{1, 1, 1, 0, 0, 1});
  CHECK(demo::attributes_right(refs, refs) == std::array<int, 6>{1, 1, 1, 1, 1, 1});
}

TEST_CASE("balanced accuracy: a rare event never named scores one half, not its frequency", "[programs][demo]") {
  const std::string still = "파란 배경에서 빨간 원이 제자리에 멈춰 있다.";
  const std::string shaking = still + " 잠시 빠르게 흔들린다.";
  // 4 clips: one shakes. "Never shakes" is right on 3 of 4 (75%) but names none of the shakes.
  const std::vector<std::string> refs{still, still, still, shaking};
  const std::vector<std::string> never{still, still, still, still};
  CHECK(demo::attributes_right(never, refs)[5] == 3);
  const auto b = demo::attributes_balanced_accuracy(never, refs);
  CHECK(b[5] == Approx(0.5));  // (3/3 + 0/1) / 2
  CHECK(b[2] == Approx(1.0));  // the shape: one value, always right
  // naming the shake on the shaking clip and on one still clip: (2/3 + 1/1) / 2
  const auto c = demo::attributes_balanced_accuracy({still, shaking, still, shaking}, refs);
  CHECK(c[5] == Approx(5.0 / 6.0));
  // two shapes, one named right of each: (1/2 + 1/2) / 2; a reference that does not parse counts for nothing
  const std::string square = "파란 배경에서 빨간 사각형이 제자리에 멈춰 있다.";
  const auto d =
      demo::attributes_balanced_accuracy({still, still, square, square, still}, {still, square, square, still, "?"});
  CHECK(d[2] == Approx(0.5));
  CHECK(demo::attributes_balanced_accuracy({}, {}) == std::array<double, 6>{});
}
