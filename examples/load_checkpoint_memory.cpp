// load_checkpoint_memory: loads a LLaVA / LLaVA-NeXT-Video save_pretrained directory with an NF4
// (or bf16) decoder base and reports the host memory it took: peak resident set (VmHWM), what the
// loaded model holds, the largest shard, and whether the peak stays within
//   model bytes + largest shard + 1 GB
// (issue 10's bound for streaming a big checkpoint), with the wall time.
//
//   load_checkpoint_memory DIR [--base nf4|bf16] [--keep-pages]
//
// --keep-pages reads the same way but leaves every mapped page read resident until loading ends
// (CheckpointReadOptions::release_pages = false): the memory loading took before pages were released.
// Exit status: 0 within the bound, 1 over it, 2 on an error. tools/make_7b_checkpoint.py writes a
// 7B-shaped directory to try it on (docs/benchmarks.md has the numbers).

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include <vidlora/core/error.hpp>
#include <vidlora/io/checkpoint_dir.hpp>
#include <vidlora/model/bf16_weight.hpp>
#include <vidlora/model/llava_model.hpp>
#include <vidlora/quant/quantized_weight.hpp>

namespace io = vidlora::io;

namespace {

// A field of /proc/self/status in bytes ("VmHWM", "VmRSS"); 0 where it is missing.
std::size_t status_bytes(std::string_view field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with(field) && line.size() > field.size() && line[field.size()] == ':')
      return static_cast<std::size_t>(std::stoull(line.substr(field.size() + 1))) * 1024;
  return 0;
}

double gb(std::size_t bytes) { return static_cast<double>(bytes) / 1e9; }

struct Parts {
  std::size_t vision = 0, projector = 0, decoder = 0, decoder_linear = 0;
  std::size_t total() const { return vision + projector + decoder; }
};

template <class Vision, class Projector, class Decoder>
Parts parts_of(const Vision& vision, const Projector& projector, const Decoder& decoder) {
  Parts p;
  p.vision = vision.weight_bytes();
  for (const auto* l : {&projector.linear_1(), &projector.linear_2()})  // weights and their gradient buffers
    p.projector += static_cast<std::size_t>(l->weight().size() + l->bias().size() + l->grad_weight().size() +
                                            l->grad_bias().size()) *
                   sizeof(float);
  p.decoder = decoder.weight_bytes();
  p.decoder_linear = decoder.linear_weight_bytes();
  return p;
}

template <class Base>
int run(const std::filesystem::path& dir, std::string_view base_name, bool keep_pages) {
  namespace fs = std::filesystem;
  const io::CheckpointDir index = io::CheckpointDir::open(dir);
  std::size_t largest_shard = 0, checkpoint_bytes = 0;
  for (const auto& shard : index.shard_files()) {
    const std::size_t size = fs::file_size(index.root() / shard);
    largest_shard = std::max(largest_shard, size);
    checkpoint_bytes += size;
  }
  const std::size_t rss_before = status_bytes("VmRSS");

  const auto start = std::chrono::steady_clock::now();
  Parts parts;
  if (keep_pages) {  // LlavaModel's parts, from a checkpoint that keeps what it read resident
    const auto config = vidlora::model::LlavaConfig::from_file(dir / "config.json");
    const auto weights = io::CheckpointDir::open(dir, {.release_pages = false});
    const vidlora::model::ClipVision vision(config.vision, weights, vidlora::model::ClipVisionOptions::from(config));
    const auto projector = vidlora::model::Mlp2xGelu::load(weights, config);
    const vidlora::model::Decoder<16, 32, Base> decoder(config.text, weights);
    parts = parts_of(vision, projector, decoder);
  } else {
    const vidlora::model::LlavaModel<16, 32, Base> model(dir);
    parts = parts_of(model.vision(), model.projector(), model.decoder());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  const std::size_t peak = status_bytes("VmHWM");
  const std::size_t bound = parts.total() + largest_shard + 1'000'000'000;
  fmt::print("checkpoint      {} ({} shards, {:.2f} GB; largest shard {:.2f} GB)\n", dir.string(),
             index.shard_files().size(), gb(checkpoint_bytes), gb(largest_shard));
  fmt::print("decoder base    {}{}\n", base_name, keep_pages ? " (--keep-pages: mapped pages stay resident)" : "");
  fmt::print("load time       {:.1f} s\n", seconds);
  fmt::print(
      "model bytes     {:.3f} GB: decoder {:.3f} GB (linear weights {:.3f} GB as {}, embeddings + head + "
      "norms {:.3f} GB), vision tower {:.3f} GB, projector {:.3f} GB (with its gradient buffers)\n",
      gb(parts.total()), gb(parts.decoder), gb(parts.decoder_linear), base_name,
      gb(parts.decoder - parts.decoder_linear), gb(parts.vision), gb(parts.projector));
  fmt::print("RSS before      {:.3f} GB\n", gb(rss_before));
  fmt::print("peak RSS        {:.3f} GB (VmHWM); peak above the model: {:.3f} GB\n", gb(peak),
             gb(peak > parts.total() ? peak - parts.total() : 0));
  fmt::print("bound           {:.3f} GB = model + largest shard + 1 GB: {}\n", gb(bound),
             peak <= bound ? "within" : "EXCEEDED");
  return peak <= bound ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::filesystem::path dir;
    std::string base = "nf4";
    bool keep_pages = false;
    for (int i = 1; i < argc; ++i) {
      const std::string_view arg = argv[i];
      if (arg == "--base" && i + 1 < argc) {
        base = argv[++i];
      } else if (arg == "--keep-pages") {
        keep_pages = true;
      } else if (arg == "-h" || arg == "--help") {
        std::puts("usage: load_checkpoint_memory DIR [--base nf4|bf16] [--keep-pages]");
        return 0;
      } else if (!arg.starts_with("--") && dir.empty()) {
        dir = arg;
      } else {
        vidlora::fail("unknown argument '{}' (usage: load_checkpoint_memory DIR [--base nf4|bf16] [--keep-pages])",
                      arg);
      }
    }
    vidlora::require(!dir.empty(), "usage: load_checkpoint_memory DIR [--base nf4|bf16] [--keep-pages]");
    if (base == "nf4") return run<vidlora::NF4Weight>(dir, "NF4", keep_pages);
    if (base == "bf16") return run<vidlora::model::Bf16Weight>(dir, "bf16", keep_pages);
    vidlora::fail("--base {}: expected nf4 or bf16", base);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "load_checkpoint_memory: %s\n", e.what());
    return 2;
  }
}
