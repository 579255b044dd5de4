// Adapters trained in Python with PEFT 0.21 (tools/reference/peft_targets_cases.py) on a decoder:
// run-time rank and alpha, rsLoRA, layers_to_transform, a regex with exclude_modules — logits equal PEFT's.

#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <vidlora/io.hpp>
#include <vidlora/lora.hpp>
#include <vidlora/model.hpp>

#include "model_fixtures.hpp"

using namespace vidlora;
using Catch::Contains;
using vidlora::test::json_3d;
using vidlora::test::json_flat_ints;
using vidlora::test::normwise_error;

namespace {

const std::string kPeftDir = vidlora::test::fixture_path("lora/peft_targets");

// The adapter's logits through dispatch_rank: Decoder<r, 2r> with the adapter's run-time alpha.
Matrix adapter_logits(const std::string& name, int* rank_used) {
  const auto ref = vidlora::test::load_fixture("lora/peft_targets/reference.json");
  const auto config = model::DecoderConfig::from_file(kPeftDir + "/base/config.json");
  const auto weights = io::CheckpointDir::open(kPeftDir + "/base");
  const lora::PeftAdapter adapter = lora::load_peft_adapter(kPeftDir + "/" + name);
  const model::DecoderOptions options = model::decoder_options_for(adapter, config);
  const std::vector<int> ids = json_flat_ints(ref["input_ids"]);
  model::SequenceBatch batch;
  batch.batch = 2;
  batch.seq_len = static_cast<Eigen::Index>(ids.size() / 2);
  return lora::dispatch_rank(adapter.spec.r, [&]<int R>() {
    model::Decoder<R, 2 * R> decoder(config, weights, options);
    decoder.load_adapter(io::SafetensorsFile::open(kPeftDir + "/" + name + "/adapter_model.safetensors"));
    int lora_slots = 0;
    decoder.for_each_lora([&](const std::string&, auto& lin) {
      CHECK(lin.alpha_value() == adapter.spec.lora_alpha);
      CHECK(lin.scaling() == static_cast<float>(adapter.spec.scaling()));
      ++lora_slots;
    });
    CHECK(lora_slots == static_cast<int>(adapter.modules.size()));
    *rank_used = R;
    return Matrix(decoder.logits(decoder.forward(decoder.embed(ids), batch, false)));
  });
}

}  // namespace

TEST_CASE("a PEFT adapter with r=8, alpha 12, rsLoRA and layers_to_transform gives PEFT's logits",
          "[model][lora][peft][reference]") {
  const auto ref = vidlora::test::load_fixture("lora/peft_targets/reference.json");
  int rank = 0;
  const Matrix logits = adapter_logits("list_layers_rslora", &rank);
  CHECK(rank == 8);
  CHECK(normwise_error(logits, json_3d(ref["list_layers_rslora"]["logits"])) < 1e-5);
  // The adapter changes the logits (the comparison is not the base model's).
  CHECK(normwise_error(json_3d(ref["base_logits"]), json_3d(ref["list_layers_rslora"]["logits"])) > 1e-2);
}

TEST_CASE("a PEFT adapter with r=16, a regex target and exclude_modules gives PEFT's logits",
          "[model][lora][peft][reference]") {
  const auto ref = vidlora::test::load_fixture("lora/peft_targets/reference.json");
  int rank = 0;
  CHECK(normwise_error(adapter_logits("regex_exclude", &rank), json_3d(ref["regex_exclude"]["logits"])) < 1e-5);
  CHECK(rank == 16);
}

TEST_CASE("decoder_options_for names the module an adapter lacks or cannot place", "[model][lora][peft][errors]") {
  const auto config = model::DecoderConfig::from_file(kPeftDir + "/base/config.json");
  lora::PeftAdapter a = lora::load_peft_adapter(kPeftDir + "/regex_exclude");
  const auto options = model::decoder_options_for(a, config);
  CHECK(options.target_modules.size() == a.modules.size());
  CHECK(options.lora.alpha == 24.0);

  lora::PeftAdapter missing = a;
  missing.modules.erase("model.layers.2.self_attn.k_proj");
  REQUIRE_THROWS_WITH(model::decoder_options_for(missing, config),
                      Contains("model.layers.2.self_attn.k_proj") && Contains("no lora_A"));
  lora::PeftAdapter stray = a;
  stray.modules["model.embed_tokens"] = stray.modules.begin()->second;
  REQUIRE_THROWS_WITH(model::decoder_options_for(stray, config),
                      Contains("model.embed_tokens") && Contains("not a decoder"));
  lora::PeftAdapter deep = a;
  deep.modules["model.layers.7.self_attn.q_proj"] = deep.modules.begin()->second;
  REQUIRE_THROWS_WITH(model::decoder_options_for(deep, config), Contains("layer 7 of a 3-layer"));
}
