// Loading in bounded host memory: io::CheckpointDir drops each tensor's mapped pages once it has
// been converted (CheckpointReadOptions::release_pages), and load_matrix / load_vector read floats
// straight into the result. Neither may change a single bit of what a model loads, and streaming must
// keep the peak resident set near the model's own size instead of model + every shard read.

#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <vidlora/io.hpp>
#include <vidlora/lora.hpp>
#include <vidlora/model.hpp>
#include <vidlora/quant.hpp>

#include "model_fixtures.hpp"

using namespace vidlora;
namespace fs = std::filesystem;

namespace {

const std::string kLlavaDir = vidlora::test::model_dir("llava_next_video");

// Every tensor of `dir` in a TensorTable: the generic read path (std::vector<float>, then a cast).
model::TensorTable table_of(const io::CheckpointDir& dir) {
  model::TensorTable table;
  for (const auto& name : dir.names()) {
    const Vector v = dir.vector(name);
    table.insert(name, dir.info(name).shape, std::vector<float>(v.data(), v.data() + v.size()));
  }
  return table;
}

bool same_blocks(const quant::QuantizedBlocks& a, const quant::QuantizedBlocks& b) {
  return a.packed == b.packed && a.absmax == b.absmax && a.qabsmax == b.qabsmax && a.nested_absmax == b.nested_absmax &&
         a.absmax_offset == b.absmax_offset && a.numel == b.numel && a.blocksize == b.blocksize;
}

// Every frozen weight of two decoders is the same, bit for bit (NF4: the codes and the quantized scales).
template <class D>
void check_same_decoder(const D& a, const D& b) {
  CHECK(a.embed_tokens() == b.embed_tokens());
  CHECK(a.head_weight() == b.head_weight());
  CHECK(a.weight_bytes() == b.weight_bytes());
  int differing = 0;
  for (Eigen::Index l = 0; l < a.num_layers(); ++l)
    for (const auto module : model::kDecoderModules) {
      const auto& x = a.slot(l, module).base();
      const auto& y = b.slot(l, module).base();
      if constexpr (requires { x.blocks(); }) {
        differing += !same_blocks(x.blocks(), y.blocks());
      } else {
        differing += !(x.to_dense() == y.to_dense());
      }
    }
  CHECK(differing == 0);
}

std::vector<float> test_pixels(Eigen::Index frames, const model::ClipVisionConfig& c) {
  std::vector<float> px(static_cast<std::size_t>(frames * c.num_channels * c.image_size * c.image_size));
  for (std::size_t i = 0; i < px.size(); ++i) px[i] = static_cast<float>(static_cast<int>(i * 37 % 101) - 50) / 50.0f;
  return px;
}

template <class Base>
void check_decoders_identical() {
  const auto config = model::LlavaConfig::from_file(fs::path(kLlavaDir) / "config.json");
  const auto streamed = io::CheckpointDir::open(kLlavaDir);
  const auto resident = io::CheckpointDir::open(kLlavaDir, {.release_pages = false});
  REQUIRE(streamed.options().release_pages);
  REQUIRE(streamed.shard_files().size() == 3);
  const model::TensorTable table = table_of(resident);
  const model::Decoder<4, 8, Base> a(config.text, streamed), b(config.text, resident), c(config.text, table);
  check_same_decoder(a, b);
  check_same_decoder(a, c);
}

// /proc/self/status fields in bytes.
std::size_t status_bytes(std::string_view field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with(field) && line.size() > field.size() && line[field.size()] == ':')
      return static_cast<std::size_t>(std::stoull(line.substr(field.size() + 1))) * 1024;
  return 0;
}

// Resets VmHWM to the current resident set (Linux: "5" to /proc/self/clear_refs); false where refused.
bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

// A LLaMA decoder checkpoint of random bf16 weights in `shards` shards, with its index.
struct GeneratedCheckpoint {
  fs::path dir;
  model::DecoderConfig config;
  std::size_t bytes = 0;                  // all shards
  std::size_t largest_tensor_floats = 0;  // elements of the biggest tensor
};

GeneratedCheckpoint write_bf16_decoder(const fs::path& dir, int hidden, int inter, int layers, int vocab, int shards) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  GeneratedCheckpoint out{dir, model::DecoderConfig::from_json({{"model_type", "llama"},
                                                                {"hidden_size", hidden},
                                                                {"intermediate_size", inter},
                                                                {"num_hidden_layers", layers},
                                                                {"num_attention_heads", 8},
                                                                {"vocab_size", vocab}})};
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> tensors{{"model.embed_tokens.weight", {vocab, hidden}},
                                                                         {"model.norm.weight", {hidden}},
                                                                         {"lm_head.weight", {vocab, hidden}}};
  for (int l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const char* m : {"q_proj", "k_proj", "v_proj", "o_proj"})
      tensors.push_back({p + "self_attn." + m + ".weight", {hidden, hidden}});
    tensors.push_back({p + "mlp.gate_proj.weight", {inter, hidden}});
    tensors.push_back({p + "mlp.up_proj.weight", {inter, hidden}});
    tensors.push_back({p + "mlp.down_proj.weight", {hidden, inter}});
    tensors.push_back({p + "input_layernorm.weight", {hidden}});
    tensors.push_back({p + "post_attention_layernorm.weight", {hidden}});
  }
  nlohmann::json weight_map = nlohmann::json::object();
  std::uint64_t state = 0x9E3779B97F4A7C15ull;
  const std::size_t per_shard =
      (tensors.size() + static_cast<std::size_t>(shards) - 1) / static_cast<std::size_t>(shards);
  for (int s = 0; s < shards; ++s) {
    const std::string file =
        "model-0000" + std::to_string(s + 1) + "-of-0000" + std::to_string(shards) + ".safetensors";
    io::TensorMap map;
    for (std::size_t t = static_cast<std::size_t>(s) * per_shard; t < std::min(tensors.size(), (s + 1) * per_shard);
         ++t) {
      const auto& [name, shape] = tensors[t];
      std::size_t n = 1;
      for (auto d : shape) n *= static_cast<std::size_t>(d);
      out.largest_tensor_floats = std::max(out.largest_tensor_floats, n);
      std::vector<std::byte> bytes(2 * n);
      for (std::size_t i = 0; i < n; ++i) {  // xorshift: values in (-0.02, 0.02) as bf16
        state ^= state << 13, state ^= state >> 7, state ^= state << 17;
        const float v = (static_cast<float>(state >> 40) / 16777216.0f - 0.5f) * 0.04f;
        const std::uint16_t bits = io::float_to_bf16_bits(v);
        std::memcpy(bytes.data() + 2 * i, &bits, 2);
      }
      map.emplace(name, io::TensorData::from_raw(io::Dtype::BF16, shape, bytes));
      weight_map[name] = file;
    }
    io::write_safetensors(dir / file, map);
    out.bytes += fs::file_size(dir / file);
  }
  std::ofstream(dir / "model.safetensors.index.json")
      << nlohmann::json{{"metadata", nlohmann::json::object()}, {"weight_map", weight_map}}.dump();
  return out;
}

}  // namespace

TEST_CASE("streamed loading gives the same decoder weights, bit for bit, as resident pages and the generic path",
          "[model][streaming]") {
  SECTION("NF4 base") { check_decoders_identical<NF4Weight>(); }
  SECTION("bf16 base") { check_decoders_identical<model::Bf16Weight>(); }
  SECTION("float base") { check_decoders_identical<DenseWeight>(); }
}

TEST_CASE("LlavaModel with an NF4 base streams a sharded directory to the same model as resident pages",
          "[model][streaming][llava]") {
  const model::LlavaModel<4, 8, NF4Weight> model(kLlavaDir);
  const auto config = model::LlavaConfig::from_file(fs::path(kLlavaDir) / "config.json");
  const auto resident = io::CheckpointDir::open(kLlavaDir, {.release_pages = false});
  const model::ClipVision vision(config.vision, resident, model::ClipVisionOptions::from(config));
  const auto projector = model::Mlp2xGelu::load(resident, config);
  const model::Decoder<4, 8, NF4Weight> decoder(config.text, resident);
  check_same_decoder(model.decoder(), decoder);
  CHECK(model.vision().weight_bytes() == vision.weight_bytes());
  CHECK(model.projector().linear_1().weight() == projector.linear_1().weight());
  CHECK(model.projector().linear_2().bias() == projector.linear_2().bias());
  const auto pixels = test_pixels(2, config.vision);
  CHECK(model.vision().features(pixels, 2) == vision.features(pixels, 2));
}

TEST_CASE("streamed NF4 loading of a 200 MB bf16 checkpoint peaks near the model's size, resident pages do not",
          "[model][streaming][memory]") {
  if (!reset_peak_rss()) {
    WARN("/proc/self/clear_refs is not writable here: the peak-RSS check is left to load_checkpoint_memory");
    return;
  }
  // hidden 1024, MLP 2816, 8 layers, vocabulary 8192: 117 M parameters, 235 MB of bf16 in 3 shards.
  const fs::path dir = fs::temp_directory_path() / ("vidlora_streaming_" + std::to_string(::getpid()));
  const auto ckpt = write_bf16_decoder(dir, 1024, 2816, 8, 8192, 3);
  const std::size_t largest_tensor = ckpt.largest_tensor_floats * sizeof(float);
  INFO("checkpoint " << ckpt.bytes << " bytes; largest tensor " << largest_tensor << " bytes as float");

  const auto load_growth = [&](bool release_pages, std::size_t& model_bytes) {
    const auto weights = io::CheckpointDir::open(dir, {.release_pages = release_pages});
    REQUIRE(reset_peak_rss());
    const std::size_t before = status_bytes("VmRSS");
    const model::Decoder<4, 8, NF4Weight> decoder(ckpt.config, weights);
    model_bytes = decoder.weight_bytes();
    return status_bytes("VmHWM") - before;
  };
  std::size_t model = 0, model_again = 0;
  const std::size_t streamed = load_growth(true, model);
  const std::size_t resident = load_growth(false, model_again);
  fs::remove_all(dir);
  INFO("model " << model << " bytes; peak growth streamed " << streamed << ", with resident pages " << resident);
  CHECK(model == model_again);
  // Streaming: the model plus about one tensor in flight (its float copy, its pages, quantization
  // scratch) and allocator slack. Resident pages: every byte of the checkpoint on top.
  CHECK(streamed <= model + 3 * largest_tensor + (32u << 20));
  CHECK(resident >= ckpt.bytes * 8 / 10);
  CHECK(streamed + ckpt.bytes / 2 < resident + model);
}
