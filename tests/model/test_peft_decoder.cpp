// Adapters trained in Python with PEFT 0.21 (tools/reference/peft_targets_cases.py) on a decoder:
// run-time rank and alpha, rsLoRA, layers_to_transform, a regex with exclude_modules, ranks vidlora does not
// compile (held zero-padded: model/held_adapter.hpp) — logits equal PEFT's.

#include <catch2/catch.hpp>

#include <algorithm>
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

// The adapter's logits through hold_adapter: held at the next compiled rank R, Decoder<R, 2R> with the rescaled alpha.
Matrix held_adapter_logits(const std::string& name, int* rank_used) {
  const auto ref = vidlora::test::load_fixture("lora/peft_targets/reference.json");
  const auto config = model::DecoderConfig::from_file(kPeftDir + "/base/config.json");
  const auto weights = io::CheckpointDir::open(kPeftDir + "/base");
  const lora::PeftAdapter adapter = lora::load_peft_adapter(kPeftDir + "/" + name);
  model::DecoderOptions options = model::decoder_options_for(adapter, config);
  const model::HeldAdapter held = model::hold_adapter(adapter, options);
  CHECK(held.padded());
  CHECK(held.r == adapter.spec.r);
  // Each factor is the file's, with zero rows of A and zero columns of B beyond r.
  for (const auto& [module, w] : adapter.modules) {
    const Matrix a = model::load_matrix<float>(held.factors, lora::peft_key(module, 'A'), held.rank, w.A.cols());
    const Matrix b = model::load_matrix<float>(held.factors, lora::peft_key(module, 'B'), w.B.rows(), held.rank);
    CHECK(a.topRows(held.r) == w.A);
    CHECK(b.leftCols(held.r) == w.B);
    CHECK(a.bottomRows(held.rank - held.r).isZero(0.0));
    CHECK(b.rightCols(held.rank - held.r).isZero(0.0));
  }
  const std::vector<int> ids = json_flat_ints(ref["input_ids"]);
  model::SequenceBatch batch;
  batch.batch = 2;
  batch.seq_len = static_cast<Eigen::Index>(ids.size() / 2);
  return lora::dispatch_rank(held.rank, [&]<int R>() {
    model::Decoder<R, 2 * R> decoder(config, weights, options);
    decoder.load_adapter(held.factors);
    int lora_slots = 0;
    std::vector<std::string> adapted;
    decoder.for_each_lora([&](const std::string& path, auto& lin) {
      adapted.push_back(path);
      // PEFT's scaling for r at rank R: the same double without rsLoRA (R / r scales alpha / r by a power of two)
      if (!adapter.spec.use_rslora) CHECK(lin.alpha_value() / R == adapter.spec.scaling());
      CHECK(lin.scaling() == static_cast<float>(adapter.spec.scaling()));
      ++lora_slots;
    });
    CHECK(lora_slots == static_cast<int>(adapter.modules.size()));
    std::sort(adapted.begin(), adapted.end());
    CHECK(adapted == ref[name]["adapted"].get<std::vector<std::string>>());  // the modules PEFT adapted
    *rank_used = R;
    return Matrix(decoder.logits(decoder.forward(decoder.embed(ids), batch, false)));
  });
}

}  // namespace

TEST_CASE("PEFT adapters of ranks 12 and 6 (rsLoRA) and 2 held zero-padded at ranks 16 8 and 4 give PEFT's logits",
          "[model][lora][peft][reference]") {
  const auto ref = vidlora::test::load_fixture("lora/peft_targets/reference.json");
  for (const auto& [name, rank] : {std::pair<std::string, int>{"rank12", 16}, {"rank6_rslora", 8}, {"rank2", 4}}) {
    CAPTURE(name);
    int used = 0;
    const Matrix logits = held_adapter_logits(name, &used);
    CHECK(used == rank);
    CHECK(normwise_error(logits, json_3d(ref[name]["logits"])) < 1e-5);
    CHECK(normwise_error(json_3d(ref["base_logits"]), json_3d(ref[name]["logits"])) > 1e-3);  // the adapter matters
  }
}

TEST_CASE("held_rank keeps a compiled rank and takes the next one up for others and refuses out-of-range ranks",
          "[model][lora][peft][errors]") {
  CHECK(model::held_rank(1) == 4);
  CHECK(model::held_rank(4) == 4);
  CHECK(model::held_rank(5) == 8);
  CHECK(model::held_rank(12) == 16);
  CHECK(model::held_rank(129) == 256);
  CHECK(model::held_rank(256) == 256);
  REQUIRE_THROWS_WITH(model::held_rank(257), Contains("r = 257 is above the largest compiled rank, 256"));
  REQUIRE_THROWS_WITH(model::held_rank(0), Contains("r = 0 is not a rank"));
  // An adapter at a compiled rank is held as it is: the file's factors, its own alpha.
  const auto config = model::DecoderConfig::from_file(kPeftDir + "/base/config.json");
  const lora::PeftAdapter a = lora::load_peft_adapter(kPeftDir + "/regex_exclude");
  model::DecoderOptions options = model::decoder_options_for(a, config);
  const model::HeldAdapter held = model::hold_adapter(a, options);
  CHECK_FALSE(held.padded());
  CHECK(held.rank == 16);
  CHECK(options.lora.alpha == 24.0);
  CHECK(held.factors.tensors().empty());  // (loaded from the adapter's file: no copy)
  // A factor whose shape is not the adapter's r is named.
  lora::PeftAdapter wrong = a;
  wrong.modules.begin()->second.A = Matrix::Zero(3, 32);
  REQUIRE_THROWS_WITH(model::hold_adapter(wrong, options),
                      Contains(wrong.modules.begin()->first) && Contains("r = 16"));
}

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
