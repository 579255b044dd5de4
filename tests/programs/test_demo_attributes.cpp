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
