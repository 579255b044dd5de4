// Every umbrella header together in one translation unit: no name re-exported into vidlora clashes.
#include <catch2/catch.hpp>

#include <vidlora/trainer.hpp>  // vidlora.hpp + model.hpp + video.hpp + the trainer headers

#include <type_traits>

TEST_CASE("all umbrella headers compile together and keep policy and projector names apart", "[api]") {
  STATIC_REQUIRE(vidlora::LrPolicy<vidlora::Linear>);  // vidlora::Linear is the learning-rate policy
  STATIC_REQUIRE(std::is_same_v<vidlora::LinearProjector, vidlora::model::Linear>);
  STATIC_REQUIRE(!std::is_same_v<vidlora::VideoDecoderOptions, vidlora::DecoderOptions>);
  vidlora::LinearProjector projector(4, 3, /*seed=*/1);
  CHECK(projector.forward(vidlora::Matrix::Zero(2, 4)).rows() == 2);
}
