// The device-memory cap of a run: preset vram_gb minus the 2 GiB reserve, or max_memory_gb; and the
// constexpr estimate of each preset's default model under that cap.
#include <catch2/catch.hpp>

#include <vidlora/presets.hpp>
#include <vidlora/presets/memory_cap.hpp>

#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>

using namespace vidlora;
using namespace vidlora::presets;

namespace {
constexpr std::size_t GiB = std::size_t{1} << 30;
struct Tiny : T4 {
  static constexpr int vram_gb = 2;
};
}  // namespace

TEST_CASE("the default cap is the preset's vram_gb minus a 2 GiB reserve", "[presets]") {
  STATIC_REQUIRE(kDeviceMemoryReserveGiB == 2.0);
  STATIC_REQUIRE(default_memory_cap_bytes<T4>() == 14 * GiB);
  STATIC_REQUIRE(default_memory_cap_bytes<L4>() == 22 * GiB);
  STATIC_REQUIRE(default_memory_cap_bytes<A100>() == 38 * GiB);
  STATIC_REQUIRE(default_memory_cap_bytes<H100>() == 78 * GiB);
  CHECK(memory_cap_bytes<T4>() == 14 * GiB);
  CHECK(memory_cap_bytes<H100>(DeviceMemoryOptions{.max_memory_gb = 14}) == 14 * GiB);  // an H100 run as a T4
  CHECK(memory_cap_bytes<T4>(DeviceMemoryOptions{.max_memory_gb = 0.5}) == GiB / 2);
}

TEST_CASE("a bad max_memory_gb is an error naming the option", "[presets][errors]") {
  CHECK_THROWS_WITH(memory_cap_bytes<T4>(DeviceMemoryOptions{.max_memory_gb = -1}), Catch::Contains("max_memory_gb"));
  CHECK_THROWS_WITH(
      memory_cap_bytes<T4>(DeviceMemoryOptions{.max_memory_gb = std::numeric_limits<double>::quiet_NaN()}),
      Catch::Contains("max_memory_gb"));
  CHECK_THROWS_WITH(memory_cap_bytes<T4>(DeviceMemoryOptions{.max_memory_gb = 1e-9}), Catch::Contains("below 1 MiB"));
  CHECK_THROWS_WITH(memory_cap_bytes(2, DeviceMemoryOptions{}), Catch::Contains("not positive"));
  CHECK(memory_cap_bytes(2, DeviceMemoryOptions{.max_memory_gb = 1}) == GiB);
}

TEST_CASE("each preset's default model is estimated to fit under its default cap", "[presets]") {
  // The estimate's own runtime overhead (CUDA context) lives in the reserve, outside the allocator.
  STATIC_REQUIRE(estimated_allocator_bytes<T4>(T4::default_model) < default_memory_cap_bytes<T4>());
  STATIC_REQUIRE(estimated_allocator_bytes<L4>(L4::default_model) < default_memory_cap_bytes<L4>());
  STATIC_REQUIRE(estimated_allocator_bytes<A100>(A100::default_model) < default_memory_cap_bytes<A100>());
  STATIC_REQUIRE(estimated_allocator_bytes<H100>(H100::default_model) < default_memory_cap_bytes<H100>());
  // The recipe's H100 row on the 7B fits at bf16, its precision, but not with today's fp32 activations
  // (docs/presets.md): the cap would stop that step, naming a tensor. The A100 row fits either way.
  constexpr auto fp32_allocator_bytes = [](const MemoryEstimate& e) {
    return e.total() - e.overhead - e.activations + e.activations_fp32;
  };
  STATIC_REQUIRE(fp32_allocator_bytes(estimate_memory<H100>(models::LlavaNextVideo7B)) >
                 static_cast<double>(default_memory_cap_bytes<H100>()));
  STATIC_REQUIRE(fp32_allocator_bytes(estimate_memory<A100>(models::LlavaNextVideo7B)) <
                 static_cast<double>(default_memory_cap_bytes<A100>()));
  // The device step today holds the H100 row's 7B under the cap: its saved activations in bf16.
  constexpr auto h100 = estimate_memory<H100>(models::LlavaNextVideo7B);
  STATIC_REQUIRE(h100.total_device() - h100.overhead < static_cast<double>(default_memory_cap_bytes<H100>()));
  const double t4 = estimated_allocator_bytes<T4>(models::LlavaNextVideo7B) / static_cast<double>(GiB);
  CHECK(t4 == Approx(4.30).margin(0.01));  // docs/presets.md's 5.30 GiB total minus 1 GiB runtime overhead
}

TEST_CASE("docs/presets.md's cap table states the code's caps", "[presets]") {
  std::ifstream in(std::string(VIDLORA_SOURCE_DIR) + "/docs/presets.md");
  REQUIRE(in);
  std::stringstream doc;
  doc << in.rdbuf();
  auto row = [](std::string_view name, int vram, std::size_t cap) {
    return "| " + std::string(name) + " | " + std::to_string(vram) + " | " + std::to_string(cap / GiB) + " GiB |";
  };
  CHECK(doc.str().find(row("T4", T4::vram_gb, default_memory_cap_bytes<T4>())) != std::string::npos);
  CHECK(doc.str().find(row("L4", L4::vram_gb, default_memory_cap_bytes<L4>())) != std::string::npos);
  CHECK(doc.str().find(row("A100", A100::vram_gb, default_memory_cap_bytes<A100>())) != std::string::npos);
  CHECK(doc.str().find(row("H100", H100::vram_gb, default_memory_cap_bytes<H100>())) != std::string::npos);
}

TEST_CASE("a cap above the GPU's free memory is named with both sizes, and one that fits is not", "[presets]") {
  // An L4 (about 22.5 GiB reported, 22.0 GiB free once the context is made) under the L4 preset's default cap.
  const std::size_t l4_total = GiB * 45 / 2, l4_free = 22 * GiB - GiB / 64;
  const auto warning = cap_above_free_memory(memory_cap_bytes<L4>(), l4_free, l4_total);
  REQUIRE(warning.has_value());
  CHECK_THAT(*warning, Catch::Contains("22.00 GiB") && Catch::Contains("21.98 GiB of 22.50 GiB") &&
                           Catch::Contains("--max-memory-gb"));
  CHECK_FALSE(cap_above_free_memory(memory_cap_bytes<L4>(), 22 * GiB, l4_total).has_value());  // equal: fits
  CHECK_FALSE(cap_above_free_memory(memory_cap_bytes<T4>(), 79 * GiB, 80 * GiB).has_value());  // a T4 run on an H100
  CHECK(cap_above_free_memory(memory_cap_bytes<H100>(), 39 * GiB, 40 * GiB).has_value());      // an H100 run on an A100
}
