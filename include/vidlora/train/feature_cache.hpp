#pragma once
// FeatureCache: frozen vision features computed once per (video, sampler, frame count, encoder) and
// kept on disk, one safetensors file per clip, read back memory-mapped.
//
// The file name is a 64-bit FNV-1a hash of the key; the file's metadata repeats the key plus the
// video's size and modification time. A file whose key differs (hash collision) or whose video
// changed since (size or mtime) is stale: it is recomputed and replaced (atomically).
//
// A note kept with the features (get_noted / ensure_noted: what the encoder had to say about the video, a clip
// FFmpeg decoded through damage or one shorter than the frames asked) comes back with them, so a clip read from
// the cache is told about as when it was encoded. An entry without one (written before notes, or with nothing to
// say) reads back with an empty note.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include <fmt/format.h>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/io/safetensors.hpp>
#include <vidlora/io/safetensors_writer.hpp>

namespace vidlora::train {

struct FeatureKey {
  std::filesystem::path video;
  std::string sampler;  // e.g. "uniform", "scene_change"
  int frames = 0;
  std::string encoder;  // names the encoder and its weights, e.g. "clip-demo-seed7-pool2"
};

// A clip's features and the note kept with them (empty: nothing to note).
struct NotedFeatures {
  Matrix features;
  std::string note;
};

inline std::uint64_t fnv1a64(std::string_view s, std::uint64_t h = 0xcbf29ce484222325ULL) {
  for (const char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

class FeatureCache {
 public:
  explicit FeatureCache(std::filesystem::path dir) : dir_(std::move(dir)) { std::filesystem::create_directories(dir_); }

  const std::filesystem::path& dir() const { return dir_; }
  long hits() const { return hits_; }
  long misses() const { return misses_; }
  long stale() const { return stale_; }

  std::filesystem::path path_of(const FeatureKey& key) const {
    return dir_ / fmt::format("{:016x}.safetensors", fnv1a64(key_string(key)));
  }

  using Compute = std::function<Matrix(const std::filesystem::path&)>;
  using NotedCompute = std::function<NotedFeatures(const std::filesystem::path&)>;

  // The cached features of `key`, or compute(key.video) stored first.
  Matrix get(const FeatureKey& key, const Compute& compute) { return get_noted(key, noted(compute)).features; }
  // The same with the entry's note: the one compute gave, stored beside the features.
  NotedFeatures get_noted(const FeatureKey& key, const NotedCompute& compute) {
    if (const auto file = valid_entry(key)) {
      ++hits_;
      return {file->matrix("features"), note_of(*file)};
    }
    return store(key, compute);
  }

  // Makes sure `key` is cached without reading cached features: a valid entry (its header checked, its tensor left
  // unread) stays, else compute(key.video) is stored. True when it computed. What a program runs over its clips before
  // training, to encode them all while the vision tower has the GPU to itself.
  bool ensure(const FeatureKey& key, const Compute& compute) { return ensure_noted(key, noted(compute)); }
  // The same, with the entry's note (read from its header, or the one compute gave) in `*note` when given.
  bool ensure_noted(const FeatureKey& key, const NotedCompute& compute, std::string* note = nullptr) {
    if (const auto file = valid_entry(key)) {
      ++hits_;
      if (note) *note = note_of(*file);
      return false;
    }
    NotedFeatures f = store(key, compute);
    if (note) *note = std::move(f.note);
    return true;
  }

  static std::string key_string(const FeatureKey& k) {
    return fmt::format("{}\n{}\n{}\n{}", std::filesystem::absolute(k.video).lexically_normal().string(), k.sampler,
                       k.frames, k.encoder);
  }

 private:
  static std::map<std::string, std::string> metadata_of(const FeatureKey& k) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(k.video, ec);
    const auto mtime = std::filesystem::last_write_time(k.video, ec);
    return {{"key", key_string(k)},
            {"video_size", ec ? "?" : std::to_string(size)},
            {"video_mtime", ec ? "?" : std::to_string(mtime.time_since_epoch().count())}};
  }

  static constexpr const char* kNote = "note";

  static NotedCompute noted(const Compute& compute) {
    return [&compute](const std::filesystem::path& video) { return NotedFeatures{compute(video), {}}; };
  }
  static std::string note_of(const io::SafetensorsFile& file) {
    const auto it = file.metadata().find(kNote);
    return it == file.metadata().end() ? std::string() : it->second;
  }

  // The entry of `key` when it exists, names this key and its video as it is now and holds the features; a stale
  // or unreadable one is counted and left to be replaced. Its metadata is the key's, and a note when it has one.
  std::optional<io::SafetensorsFile> valid_entry(const FeatureKey& key) {
    const auto path = path_of(key);
    if (!std::filesystem::exists(path)) return std::nullopt;
    try {
      auto file = io::SafetensorsFile::open(path);
      auto metadata = file.metadata();
      metadata.erase(kNote);
      if (metadata == metadata_of(key) && file.contains("features")) return file;
    } catch (const std::exception&) {
      // unreadable: recomputed
    }
    ++stale_;
    return std::nullopt;
  }

  NotedFeatures store(const FeatureKey& key, const NotedCompute& compute) {
    ++misses_;
    NotedFeatures f = compute(key.video);
    require(f.features.size() > 0, "FeatureCache: the encoder returned no features for {}", key.video.string());
    io::TensorMap t;
    t.emplace("features", io::TensorData::from_matrix(f.features));
    auto metadata = metadata_of(key);
    if (!f.note.empty()) metadata.emplace(kNote, f.note);
    io::write_safetensors(path_of(key), t, metadata);
    return f;
  }

  std::filesystem::path dir_;
  long hits_ = 0, misses_ = 0, stale_ = 0;
};

}  // namespace vidlora::train
