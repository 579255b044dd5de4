// Every umbrella header together in one translation unit: the modules' names stay in their namespaces, and the
// recipe's vocabulary in namespace vidlora names the module types (docs/architecture.md, "Namespaces").
#include <catch2/catch.hpp>

#include <vidlora/vidlora.hpp>
#include <vidlora/model.hpp>
#include <vidlora/video.hpp>
#include <vidlora/train.hpp>

#include <type_traits>

TEST_CASE("all umbrella headers compile together and vidlora:: holds the recipe's vocabulary", "[api]") {
  STATIC_REQUIRE(vidlora::LrPolicy<vidlora::Linear>);  // vidlora::Linear is the learning-rate policy ...
  STATIC_REQUIRE(std::is_same_v<vidlora::Linear, vidlora::schedule::Linear>);
  vidlora::model::Linear projector(4, 3, /*seed=*/1);  // ... and the projector's linear layer stays in model::
  CHECK(projector.forward(vidlora::Matrix::Zero(2, 4)).rows() == 2);
  STATIC_REQUIRE(
      std::is_same_v<vidlora::Trainer<vidlora::presets::Cpu>, vidlora::train::Trainer<vidlora::presets::Cpu>>);
  STATIC_REQUIRE(
      std::is_same_v<vidlora::Sampler<vidlora::SceneChange>, vidlora::video::Sampler<vidlora::video::SceneChange>>);
  STATIC_REQUIRE(
      std::is_same_v<vidlora::Quantizer<vidlora::NF4, 64>, vidlora::quant::Quantizer<vidlora::quant::NF4, 64>>);
}
