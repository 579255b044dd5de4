#pragma once
// A Hugging Face checkpoint directory: `model.safetensors.index.json` ({"weight_map": {tensor name:
// shard file}}) with shards opened lazily on first use, or a single `model.safetensors`. Tensors
// are found by name across shards; a missing tensor or a wrong shape is an error naming the key
// (and both shapes). Reading streams: once matrix() / vector() has converted a tensor, its
// memory-mapped pages leave the resident set (CheckpointReadOptions::release_pages), so loading a
// model from a checkpoint of any size holds the model plus the tensor being read, not every shard read.

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/io/safetensors.hpp>

namespace vidlora::io {

inline constexpr std::string_view kSafetensorsIndexName = "model.safetensors.index.json";
inline constexpr std::string_view kSafetensorsSingleName = "model.safetensors";

struct CheckpointReadOptions {
  // Drop each tensor's mapped pages once matrix() / vector() has converted it (the values are the
  // same either way; false keeps every page read resident until the checkpoint is closed).
  bool release_pages = true;
};

class CheckpointDir {
 public:
  // A shard holding a tensor the index maps to an earlier file (check_shard_against_index).
  struct IndexDisagreement : Error {
    using Error::Error;
  };

  // `path` is a checkpoint directory (index or single file inside), an index .json, or a
  // single .safetensors file.
  static CheckpointDir open(const std::filesystem::path& path, CheckpointReadOptions options = {}) {
    namespace fs = std::filesystem;
    CheckpointDir dir;
    dir.options_ = options;
    if (fs::is_directory(path)) {
      dir.root_ = path;
      // Both: one of them is stale, and which one is meant cannot be told (transformers would load the single file,
      // a copy of the shards may differ from it): an error naming both.
      if (fs::exists(path / kSafetensorsIndexName) && fs::exists(path / kSafetensorsSingleName))
        fail(
            "checkpoint '{}' holds both {} and {}: remove the one that is not this model's (transformers would load "
            "{})",
            path.string(), kSafetensorsSingleName, kSafetensorsIndexName, kSafetensorsSingleName);
      if (fs::exists(path / kSafetensorsIndexName)) {
        dir.load_index(path / kSafetensorsIndexName);
      } else if (fs::exists(path / kSafetensorsSingleName)) {
        dir.load_single(path / kSafetensorsSingleName);
      } else {
        fail("checkpoint '{}': neither {} nor {} found", path.string(), kSafetensorsIndexName, kSafetensorsSingleName);
      }
    } else if (fs::is_regular_file(path) && path.extension() == ".json") {
      dir.root_ = path.parent_path();
      dir.load_index(path);
    } else if (fs::is_regular_file(path)) {
      dir.root_ = path.parent_path();
      dir.load_single(path);
    } else {
      fail("checkpoint '{}' does not exist", path.string());
    }
    return dir;
  }

  const std::filesystem::path& root() const { return root_; }
  std::size_t size() const { return weight_map_.size(); }
  bool contains(std::string_view name) const { return weight_map_.find(name) != weight_map_.end(); }

  // Every tensor name, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(weight_map_.size());
    for (const auto& [name, shard] : weight_map_) out.push_back(name);
    return out;
  }

  // The index's "metadata" object (e.g. total_size); empty for a single file.
  const nlohmann::json& index_metadata() const { return index_metadata_; }

  // The shard holding `name`, opened (and validated) on first use.
  const SafetensorsFile& file_of(std::string_view name) const {
    const auto it = weight_map_.find(name);
    if (it == weight_map_.end()) {
      if (const auto holder = unlisted_holder(name))
        fail(
            "checkpoint '{}': tensor '{}' is in shard '{}', but {} does not list it: the index is out of date "
            "(transformers would load it)",
            root_.string(), name, *holder, kSafetensorsIndexName);
      fail("checkpoint '{}': missing tensor '{}' ({} tensors in the checkpoint)", root_.string(), name,
           weight_map_.size());
    }
    const SafetensorsFile* opened = nullptr;
    try {
      opened = &shard(it->second);
    } catch (const IndexDisagreement&) {
      throw;
    } catch (const Error& e) {
      fail("checkpoint '{}': tensor '{}' lives in shard '{}', which cannot be read: {}", root_.string(), name,
           it->second, e.what());
    }
    const SafetensorsFile& file = *opened;
    if (!file.contains(name))
      fail("checkpoint '{}': {} maps tensor '{}' to '{}', which has no such tensor", root_.string(),
           kSafetensorsIndexName, name, it->second);
    return file;
  }

  const CheckpointReadOptions& options() const { return options_; }

  // The shard files (relative to root()), sorted; one entry for a single-file checkpoint.
  std::vector<std::string> shard_files() const {
    std::vector<std::string> out;
    for (const auto& [name, shard] : weight_map_)
      if (std::find(out.begin(), out.end(), shard) == out.end()) out.push_back(shard);
    std::sort(out.begin(), out.end());
    return out;
  }

  const TensorInfo& info(std::string_view name) const { return file_of(name).info(name); }
  // The bytes as stored, inside the mapping: never released here (the caller reads them later;
  // release(name) when done).
  std::span<const std::byte> raw(std::string_view name) const { return file_of(name).raw(name); }
  Matrix matrix(std::string_view name) const {
    const SafetensorsFile& file = file_of(name);
    Matrix m = file.matrix(name);
    if (options_.release_pages) file.release(name);
    return m;
  }
  Vector vector(std::string_view name) const {
    const SafetensorsFile& file = file_of(name);
    Vector v = file.vector(name);
    if (options_.release_pages) file.release(name);
    return v;
  }
  // Drops tensor `name`'s mapped pages from the resident set (SafetensorsFile::release).
  std::size_t release(std::string_view name) const { return file_of(name).release(name); }

  // Throws unless tensor `name` has exactly `shape`; the message names the key and both shapes.
  void expect_shape(std::string_view name, const std::vector<std::int64_t>& shape) const {
    const TensorInfo& t = info(name);
    if (t.shape != shape)
      fail("checkpoint '{}': tensor '{}' has shape {}, expected {}", root_.string(), name, dims_string(t.shape),
           dims_string(shape));
  }
  void expect_shape(std::string_view name, std::int64_t rows, std::int64_t cols) const {
    expect_shape(name, std::vector<std::int64_t>{rows, cols});
  }

  // The 2-D tensor `name` after checking it is [rows, cols].
  Matrix matrix(std::string_view name, std::int64_t rows, std::int64_t cols) const {
    expect_shape(name, rows, cols);
    return matrix(name);
  }
  // The 1-D tensor `name` after checking it is [size].
  Vector vector(std::string_view name, std::int64_t size) const {
    expect_shape(name, std::vector<std::int64_t>{size});
    return vector(name);
  }

 private:
  void load_index(const std::filesystem::path& index_path) {
    std::ifstream in(index_path, std::ios::binary);
    if (!in) fail("checkpoint index '{}': cannot open", index_path.string());
    const nlohmann::json index = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (index.is_discarded() || !index.is_object())
      fail("checkpoint index '{}': not a JSON object", index_path.string());
    const auto map_it = index.find("weight_map");
    if (map_it == index.end() || !map_it->is_object())
      fail("checkpoint index '{}': no \"weight_map\" object", index_path.string());
    for (const auto& [name, shard] : map_it->items()) {
      if (!shard.is_string())
        fail("checkpoint index '{}': weight_map entry '{}' is not a file name", index_path.string(), name);
      const std::string file = shard.get<std::string>();
      const std::filesystem::path relative(file);
      bool escapes = file.empty() || relative.is_absolute();
      for (const auto& part : relative) escapes = escapes || part == "..";
      if (escapes)
        fail("checkpoint index '{}': tensor '{}' maps to '{}', which is not a file inside the checkpoint directory",
             index_path.string(), name, file);
      weight_map_.emplace(name, file);
    }
    if (const auto meta = index.find("metadata"); meta != index.end()) index_metadata_ = *meta;
    root_ = index_path.parent_path();
    indexed_ = true;
    std::map<std::string, std::string> first_tensor;  // shard -> a tensor it should hold
    for (const auto& [name, shard] : weight_map_) first_tensor.emplace(shard, name);
    for (const auto& [shard, name] : first_tensor)  // shards are parsed lazily, but must exist now
      if (!std::filesystem::is_regular_file(root_ / shard))
        fail("checkpoint index '{}': shard '{}' (holding '{}' and others) does not exist", index_path.string(), shard,
             name);
  }

  void load_single(const std::filesystem::path& file) {
    auto opened = std::make_unique<SafetensorsFile>(SafetensorsFile::open(file));
    const std::string key = file.filename().string();
    for (const auto& name : opened->names()) weight_map_.emplace(name, key);
    shards_->files.emplace(key, std::move(opened));
  }

  const SafetensorsFile& shard(const std::string& file) const {
    std::lock_guard lock(shards_->mutex);
    auto& slot = shards_->files[file];
    if (!slot) {
      auto opened = std::make_unique<SafetensorsFile>(SafetensorsFile::open(root_ / file));
      if (indexed_) check_shard_against_index(file, *opened);
      slot = std::move(opened);
    }
    return *slot;
  }

  // transformers loads every tensor of every shard the index names, in file-name order, a later shard's copy
  // replacing an earlier one, whatever the index says. A shard holding a tensor the index maps to an earlier file
  // would be the copy transformers keeps while this reader takes the index's: refused, naming both, rather than read
  // the other way. (A copy in an earlier file than the index's is the one transformers replaces: ignored, as it does.
  // A tensor the index does not list is never read here; one a model asks for is an error saying where it is.)
  void check_shard_against_index(const std::string& file, const SafetensorsFile& opened) const {
    for (const auto& name : opened.names()) {
      const auto it = weight_map_.find(name);
      if (it != weight_map_.end() && file > it->second)
        throw IndexDisagreement(
            fmt::format("checkpoint '{}': tensor '{}' is in shard '{}' as well as in '{}', where {} maps it: one copy "
                        "is stale (transformers would take the one in '{}', the later file name); remove it or mend "
                        "the index",
                        root_.string(), name, file, it->second, kSafetensorsIndexName, file));
    }
  }

  // The last shard (the copy transformers would load) holding `name` though the index does not list it, for the error
  // saying so.
  std::optional<std::string> unlisted_holder(std::string_view name) const {
    std::optional<std::string> last;
    if (!indexed_) return last;
    for (const auto& file : shard_files()) {
      try {
        if (shard(file).contains(name)) last = file;
      } catch (const Error&) {
        // a shard that cannot be read says so when one of its own tensors is read
      }
    }
    return last;
  }

  struct Shards {  // behind a pointer so CheckpointDir stays movable
    std::mutex mutex;
    std::map<std::string, std::unique_ptr<SafetensorsFile>> files;
  };

  std::filesystem::path root_;
  CheckpointReadOptions options_;
  std::map<std::string, std::string, std::less<>> weight_map_;  // tensor name -> shard file (relative)
  bool indexed_ = false;                                        // weight_map_ came from model.safetensors.index.json
  nlohmann::json index_metadata_ = nlohmann::json::object();
  std::unique_ptr<Shards> shards_ = std::make_unique<Shards>();
};

}  // namespace vidlora::io
