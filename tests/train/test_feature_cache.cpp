// FeatureCache: one safetensors file per (video, sampler, frames, encoder), recomputed when the video changed or
// the file cannot be read; ensure() fills the cache without reading valid entries back.
#include <catch2/catch.hpp>
#include <fixtures.hpp>
#include <vidlora/train/feature_cache.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

using namespace vidlora;
namespace fs = std::filesystem;

namespace {

void write_video(const fs::path& p, std::size_t bytes) {
  std::ofstream(p, std::ios::binary) << std::string(bytes, 'v');
}

// A cache in a fresh directory holding the video a.mp4 (100 bytes), and an encoder stand-in whose features name
// the call (100 × its count + 0.25 × the index), so a recomputation shows.
struct CacheCase {
  test::TempDir dir;
  train::FeatureCache cache;
  int calls = 0;
  std::function<Matrix(const fs::path&)> compute = [this](const fs::path&) {
    ++calls;
    Matrix m(3, 4);
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = 0.25f * static_cast<float>(i) + 100.0f * calls;
    return m;
  };
  explicit CacheCase(const std::string& name) : dir("feature_cache_" + name), cache(dir.path / "cache") {
    write_video(video("a.mp4"), 100);
  }
  fs::path video(const std::string& file) const { return dir.path / file; }
};

}  // namespace

TEST_CASE("feature cache computes a clip's features once, then reads the same values back", "[feature_cache]") {
  CacheCase c("once");
  const train::FeatureKey key{c.video("a.mp4"), "uniform", 8, "clip-test"};
  const Matrix first = c.cache.get(key, c.compute);
  const Matrix second = c.cache.get(key, c.compute);
  CHECK(c.calls == 1);
  CHECK(c.cache.misses() == 1);
  CHECK(c.cache.hits() == 1);
  CHECK(c.cache.stale() == 0);
  REQUIRE(second.rows() == 3);
  REQUIRE(second.cols() == 4);
  CHECK(second == first);
  CHECK(second(2, 3) == 0.25f * 11 + 100.0f);
  CHECK(fs::exists(c.cache.path_of(key)));

  // Another sampler, frame count or encoder is another entry.
  const train::FeatureKey other{c.video("a.mp4"), "uniform", 8, "clip-other"};
  CHECK(c.cache.path_of(other) != c.cache.path_of(key));
  CHECK(c.cache.get(other, c.compute)(0, 0) == 200.0f);
  CHECK(c.calls == 2);
}

TEST_CASE("feature cache recomputes a clip whose video changed or whose file cannot be read", "[feature_cache]") {
  CacheCase c("stale");
  const train::FeatureKey key{c.video("a.mp4"), "scene_change", 4, "clip-test"};
  CHECK(c.cache.get(key, c.compute)(0, 0) == 100.0f);

  write_video(c.video("a.mp4"), 120);  // another size: the entry is stale
  CHECK(c.cache.get(key, c.compute)(0, 0) == 200.0f);
  CHECK(c.cache.stale() == 1);
  CHECK(c.cache.get(key, c.compute)(0, 0) == 200.0f);  // and replaced
  CHECK(c.cache.hits() == 1);

  fs::resize_file(c.cache.path_of(key), 10);  // truncated: unreadable, recomputed
  CHECK(c.cache.get(key, c.compute)(0, 0) == 300.0f);
  CHECK(c.cache.stale() == 2);
  CHECK(c.cache.misses() == 3);
  CHECK(c.calls == 3);
}

TEST_CASE("feature cache ensure stores what is missing and leaves valid entries as they are", "[feature_cache]") {
  CacheCase c("ensure");
  write_video(c.video("b.mp4"), 50);
  const train::FeatureKey a{c.video("a.mp4"), "uniform", 8, "clip-test"};
  const train::FeatureKey b{c.video("b.mp4"), "uniform", 8, "clip-test"};

  CHECK(c.cache.ensure(a, c.compute));
  CHECK(c.cache.ensure(b, c.compute));
  CHECK_FALSE(c.cache.ensure(a, c.compute));
  CHECK_FALSE(c.cache.ensure(b, c.compute));
  CHECK(c.calls == 2);
  CHECK(c.cache.hits() == 2);
  CHECK(c.cache.misses() == 2);
  // What training reads afterwards is what ensure stored, without computing again.
  CHECK(c.cache.get(a, c.compute)(0, 0) == 100.0f);
  CHECK(c.cache.get(b, c.compute)(0, 0) == 200.0f);
  CHECK(c.calls == 2);

  write_video(c.video("a.mp4"), 101);  // a changed video is computed again by ensure
  CHECK(c.cache.ensure(a, c.compute));
  CHECK(c.cache.get(a, c.compute)(0, 0) == 300.0f);
  CHECK(c.cache.stale() == 1);
}

TEST_CASE("feature cache refuses an encoder that returns no features, naming the video", "[feature_cache]") {
  CacheCase c("empty");
  const train::FeatureKey key{c.video("a.mp4"), "uniform", 8, "clip-test"};
  const auto nothing = [](const fs::path&) { return Matrix(); };
  CHECK_THROWS_WITH(c.cache.get(key, nothing), Catch::Contains("returned no features") && Catch::Contains("a.mp4"));
  CHECK_THROWS_WITH(c.cache.ensure(key, nothing), Catch::Contains("returned no features"));
  CHECK_FALSE(fs::exists(c.cache.path_of(key)));
}

TEST_CASE("feature cache keeps a clip's note with its features and gives it back from the cache", "[feature_cache]") {
  CacheCase c("note");
  write_video(c.video("b.mp4"), 50);
  const train::FeatureKey a{c.video("a.mp4"), "uniform", 8, "clip-test"};
  const train::FeatureKey b{c.video("b.mp4"), "uniform", 8, "clip-test"};
  const std::string note = "note: a.mp4: FFmpeg concealed damage in 1 of 30 decoded frames\nnote: a.mp4 has 3 frames";
  const auto noted = [&](const fs::path& video) {
    return train::NotedFeatures{c.compute(video), video.filename() == "a.mp4" ? note : std::string()};
  };

  const train::NotedFeatures first = c.cache.get_noted(a, noted);
  CHECK(first.note == note);
  CHECK(first.features(0, 0) == 100.0f);
  const train::NotedFeatures again = c.cache.get_noted(a, noted);  // read back: the same note, not computed again
  CHECK(again.note == note);
  CHECK(again.features(0, 0) == 100.0f);
  CHECK(c.calls == 1);
  std::string told = "stale";
  CHECK_FALSE(c.cache.ensure_noted(a, noted, &told));  // ensure reads it from the header
  CHECK(told == note);
  CHECK(c.cache.get(a, c.compute)(0, 0) == 100.0f);  // a noted entry is valid for get() too
  CHECK(c.calls == 1);

  CHECK(c.cache.ensure_noted(b, noted, &told));  // nothing to note: computed, an empty note
  CHECK(told.empty());
  CHECK_FALSE(c.cache.ensure_noted(b, noted, &told));
  CHECK(told.empty());
  CHECK_FALSE(io::SafetensorsFile::open(c.cache.path_of(b)).metadata().contains("note"));

  // An entry written without a note (get(), or before notes) reads back with an empty one.
  const train::FeatureKey plain{c.video("a.mp4"), "uniform", 4, "clip-test"};
  CHECK(c.cache.get(plain, c.compute)(0, 0) == 300.0f);
  CHECK(c.cache.get_noted(plain, noted).note.empty());
  CHECK(c.calls == 3);

  write_video(c.video("a.mp4"), 101);  // a changed video: computed again, with the note compute gives now
  const std::string none =
      c.cache.get_noted(a,
                        [&](const fs::path& v) {
                          return train::NotedFeatures{c.compute(v), {}};
                        })
          .note;
  CHECK(none.empty());
  CHECK(c.cache.stale() == 1);
  CHECK(c.cache.get_noted(a, noted).note.empty());
  CHECK(c.calls == 4);
}
