// FeatureCache: one safetensors file per (video, sampler, frames, encoder), recomputed when the video changed or
// the file cannot be read; ensure() fills the cache without reading valid entries back.
#include <catch2/catch.hpp>
#include <vidlora/train/feature_cache.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

using namespace vidlora;
namespace fs = std::filesystem;

namespace {

struct FeatureCacheDir {
  fs::path path;
  explicit FeatureCacheDir(const std::string& name)
      : path(fs::temp_directory_path() / ("vidlora_feature_cache_" + name + "_" + std::to_string(::getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~FeatureCacheDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

void write_video(const fs::path& p, std::size_t bytes) {
  std::ofstream(p, std::ios::binary) << std::string(bytes, 'v');
}

// An encoder stand-in: features that name the call (its count), so a recomputation shows.
struct CountingEncoder {
  int calls = 0;
  Matrix operator()(const fs::path&) {
    ++calls;
    Matrix m(3, 4);
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = 0.25f * static_cast<float>(i) + 100.0f * calls;
    return m;
  }
};

}  // namespace

TEST_CASE("feature cache computes a clip's features once, then reads the same values back", "[feature_cache]") {
  FeatureCacheDir dir("once");
  write_video(dir.path / "a.mp4", 100);
  train::FeatureCache cache(dir.path / "cache");
  CountingEncoder enc;
  const auto compute = [&](const fs::path& v) { return enc(v); };
  const train::FeatureKey key{dir.path / "a.mp4", "uniform", 8, "clip-test"};

  const Matrix first = cache.get(key, compute);
  const Matrix second = cache.get(key, compute);
  CHECK(enc.calls == 1);
  CHECK(cache.misses() == 1);
  CHECK(cache.hits() == 1);
  CHECK(cache.stale() == 0);
  REQUIRE(second.rows() == 3);
  REQUIRE(second.cols() == 4);
  CHECK(second == first);
  CHECK(second(2, 3) == 0.25f * 11 + 100.0f);
  CHECK(fs::exists(cache.path_of(key)));

  // Another sampler, frame count or encoder is another entry.
  const train::FeatureKey other{dir.path / "a.mp4", "uniform", 8, "clip-other"};
  CHECK(cache.path_of(other) != cache.path_of(key));
  CHECK(cache.get(other, compute)(0, 0) == 200.0f);
  CHECK(enc.calls == 2);
}

TEST_CASE("feature cache recomputes a clip whose video changed or whose file cannot be read", "[feature_cache]") {
  FeatureCacheDir dir("stale");
  write_video(dir.path / "a.mp4", 100);
  train::FeatureCache cache(dir.path / "cache");
  CountingEncoder enc;
  const auto compute = [&](const fs::path& v) { return enc(v); };
  const train::FeatureKey key{dir.path / "a.mp4", "scene_change", 4, "clip-test"};
  CHECK(cache.get(key, compute)(0, 0) == 100.0f);

  write_video(dir.path / "a.mp4", 120);  // another size: the entry is stale
  CHECK(cache.get(key, compute)(0, 0) == 200.0f);
  CHECK(cache.stale() == 1);
  CHECK(cache.get(key, compute)(0, 0) == 200.0f);  // and replaced
  CHECK(cache.hits() == 1);

  fs::resize_file(cache.path_of(key), 10);  // truncated: unreadable, recomputed
  CHECK(cache.get(key, compute)(0, 0) == 300.0f);
  CHECK(cache.stale() == 2);
  CHECK(cache.misses() == 3);
  CHECK(enc.calls == 3);
}

TEST_CASE("feature cache ensure stores what is missing and leaves valid entries as they are", "[feature_cache]") {
  FeatureCacheDir dir("ensure");
  write_video(dir.path / "a.mp4", 100);
  write_video(dir.path / "b.mp4", 50);
  train::FeatureCache cache(dir.path / "cache");
  CountingEncoder enc;
  const auto compute = [&](const fs::path& v) { return enc(v); };
  const train::FeatureKey a{dir.path / "a.mp4", "uniform", 8, "clip-test"};
  const train::FeatureKey b{dir.path / "b.mp4", "uniform", 8, "clip-test"};

  CHECK(cache.ensure(a, compute));
  CHECK(cache.ensure(b, compute));
  CHECK_FALSE(cache.ensure(a, compute));
  CHECK_FALSE(cache.ensure(b, compute));
  CHECK(enc.calls == 2);
  CHECK(cache.hits() == 2);
  CHECK(cache.misses() == 2);
  // What training reads afterwards is what ensure stored, without computing again.
  CHECK(cache.get(a, compute)(0, 0) == 100.0f);
  CHECK(cache.get(b, compute)(0, 0) == 200.0f);
  CHECK(enc.calls == 2);

  write_video(dir.path / "a.mp4", 101);  // a changed video is computed again by ensure
  CHECK(cache.ensure(a, compute));
  CHECK(cache.get(a, compute)(0, 0) == 300.0f);
  CHECK(cache.stale() == 1);
}

TEST_CASE("feature cache refuses an encoder that returns no features, naming the video", "[feature_cache]") {
  FeatureCacheDir dir("empty");
  write_video(dir.path / "a.mp4", 10);
  train::FeatureCache cache(dir.path / "cache");
  const train::FeatureKey key{dir.path / "a.mp4", "uniform", 8, "clip-test"};
  const auto nothing = [](const fs::path&) { return Matrix(); };
  CHECK_THROWS_WITH(cache.get(key, nothing), Catch::Contains("returned no features") && Catch::Contains("a.mp4"));
  CHECK_THROWS_WITH(cache.ensure(key, nothing), Catch::Contains("returned no features"));
  CHECK_FALSE(fs::exists(cache.path_of(key)));
}
