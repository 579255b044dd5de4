#pragma once
// Captioning data sets: the AI-Hub layout (`videos/*.mp4` + `labels/*.json`, one label per clip) and
// a JSONL manifest (`{"video": path, "caption": text}` per line), split into train/val by folders
// (`train/`, `val/`) or by a seeded hash of the clip id. Labels that cannot be used (video missing or
// empty, unreadable JSON, no or empty caption) are skipped and counted in a SkipReport that names the first
// few files, never dropped silently and never an exception. Only the file system is touched here; a
// video that fails to decode is the trainer's to report.

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <vidlora/core/error.hpp>

namespace vidlora::train {

namespace fs = std::filesystem;

struct Clip {
  std::string id;        // label file stem (AI-Hub) or the manifest's "id" / the video's stem
  fs::path video;        // absolute or relative to the working directory, as found
  std::string caption;   // the supervised text (trimmed)
  std::string category;  // "" when the label has none
  nlohmann::json metadata = nlohmann::json::object();  // the label's "metadata" object, as written
  fs::path source;                                     // the label file, or the manifest with ":<line>"
};

// The video file extensions a data set's clips may have (lower case), in the order a label's stem is tried.
inline constexpr std::string_view kVideoExtensions[] = {".mp4", ".mkv", ".webm", ".mov", ".avi"};

enum class SkipReason { MissingVideo, UnreadableJson, MissingCaption, EmptyCaption, EmptyVideo };

inline std::string_view to_string(SkipReason r) {
  switch (r) {
    case SkipReason::MissingVideo: return "missing video";
    case SkipReason::UnreadableJson: return "unreadable JSON";
    case SkipReason::MissingCaption: return "no caption";
    case SkipReason::EmptyCaption: return "empty caption";
    case SkipReason::EmptyVideo: return "empty video";
  }
  return "?";
}

// What was skipped and why: a count per reason and the first `max_examples` entries in full.
struct SkipReport {
  std::array<std::size_t, 5> counts{};
  std::vector<std::string> examples;  // "labels/x.json: missing video (videos/x.mp4)"
  std::size_t max_examples = 5;

  void add(SkipReason reason, const std::string& where, const std::string& detail = {}) {
    ++counts[static_cast<std::size_t>(reason)];
    if (examples.size() < max_examples)
      examples.push_back(fmt::format("{}: {}{}", where, to_string(reason), detail.empty() ? "" : " (" + detail + ")"));
  }
  std::size_t count(SkipReason reason) const { return counts[static_cast<std::size_t>(reason)]; }
  std::size_t total() const {
    std::size_t n = 0;
    for (const std::size_t c : counts) n += c;
    return n;
  }
  bool empty() const { return total() == 0; }
  // One line for the log: "skipped 3 of 40 labels: 1 missing video, 2 unreadable JSON; first: a.json: ..., ..."
  std::string summary(std::size_t seen) const {
    if (empty()) return fmt::format("read {} labels, none skipped", seen);
    std::string parts;
    for (std::size_t r = 0; r < counts.size(); ++r)
      if (counts[r]) parts += fmt::format("{}{} {}", parts.empty() ? "" : ", ", counts[r], to_string(SkipReason(r)));
    std::string first;
    for (const auto& e : examples) first += (first.empty() ? "" : "; ") + e;
    return fmt::format("skipped {} of {} labels: {}; first: {}", total(), seen, parts, first);
  }
};

enum class SplitRule {
  Auto,     // folders when `root/train` and `root/val` exist, else Hash
  Folders,  // root/train/… and root/val/… (each an AI-Hub tree); a manifest's "split" field
  Hash,     // val when hash(seed, clip id) falls under val_fraction: stable as clips come and go
};

struct DatasetOptions {
  SplitRule split = SplitRule::Auto;
  double val_fraction = 0.1;        // Hash split: expected share of clips in val
  std::uint64_t seed = 0;           // Hash split: different seeds give different, independent splits
  std::string language = "korean";  // the caption object's key to read ("korean", or e.g. "english")
  std::size_t max_skip_examples = 5;
};

struct Dataset {
  std::vector<Clip> train;      // sorted by id
  std::vector<Clip> val;        // sorted by id
  std::size_t labels_seen = 0;  // labels (or manifest records) looked at, skipped ones included
  SkipReport skipped;
  std::string summary() const {
    return fmt::format("{} train + {} val clips; {}", train.size(), val.size(), skipped.summary(labels_seen));
  }
};

// True when clip `id` belongs to the validation split of the seeded hash rule: FNV-1a over the id's
// bytes, mixed with the seed by SplitMix64, compared (as a 53-bit fraction) with val_fraction.
inline bool in_validation(std::string_view id, std::uint64_t seed, double val_fraction) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : id) h = (h ^ c) * 0x100000001b3ull;
  std::uint64_t z = h ^ (seed + 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53 < val_fraction;
}

namespace detail {

inline std::string trim(std::string_view s) {
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return std::string(s);
}

// A caption value: a string, or an array of strings joined by single spaces.
inline std::optional<std::string> caption_text(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_array()) {
    std::string out;
    for (const auto& e : v) {
      if (!e.is_string()) return std::nullopt;
      const auto t = trim(e.get_ref<const std::string&>());
      if (!t.empty()) out += (out.empty() ? "" : " ") + t;
    }
    return out;
  }
  return std::nullopt;
}

// The label's caption in `language`: `caption.<language>` at the top level, else the first object
// named "caption" (or "captions") found depth-first inside objects (keys in sorted order) and arrays
// (the real release nests it), with the language key or, for a plain string value, the string itself.
inline std::optional<std::string> find_caption(const nlohmann::json& j, const std::string& language, int depth = 0) {
  if (depth > 6) return std::nullopt;
  if (j.is_object()) {
    for (const char* key : {"caption", "captions"}) {
      const auto it = j.find(key);
      if (it == j.end()) continue;
      if (it->is_object()) {
        const auto lang = it->find(language);
        if (lang != it->end()) return caption_text(*lang);
      } else if (auto text = caption_text(*it)) {
        return text;
      }
    }
    for (const auto& [k, v] : j.items())
      if (v.is_structured())
        if (auto found = find_caption(v, language, depth + 1)) return found;
  } else if (j.is_array()) {
    for (const auto& v : j)
      if (auto found = find_caption(v, language, depth + 1)) return found;
  }
  return std::nullopt;
}

// A string field at the top level or inside "metadata" / "video" / "clip_info".
inline std::string string_field(const nlohmann::json& j, std::initializer_list<const char*> keys) {
  for (const char* parent : {"", "metadata", "video", "clip_info", "info"}) {
    const nlohmann::json* obj = &j;
    if (*parent) {
      const auto it = j.find(parent);
      if (it == j.end() || !it->is_object()) continue;
      obj = &*it;
    }
    for (const char* key : keys) {
      const auto it = obj->find(key);
      if (it != obj->end() && it->is_string() && !it->get_ref<const std::string&>().empty())
        return it->get<std::string>();
    }
  }
  return {};
}

inline bool usable_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec) && fs::file_size(p, ec) > 0 && !ec;
}
// A video file that is there but holds no bytes (a failed copy or download): skipped as EmptyVideo, not MissingVideo.
inline bool empty_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec) && fs::file_size(p, ec) == 0 && !ec;
}

// The parser's message without its "; last read: '…'" tail, which quotes the file's raw bytes (invalid UTF-8 in a
// summary line makes tools treat the whole log as binary).
inline std::string parse_problem(const nlohmann::json::exception& e) {
  std::string what = e.what();
  if (const auto at = what.find("; last read:"); at != std::string::npos) what.resize(at);
  return what;
}

// JSON from `source` (a stream or a string), or nullopt with the parser's reason (line, column) in `problem`.
template <class Source>
std::optional<nlohmann::json> parse_json(Source&& source, std::string& problem) {
  try {
    return nlohmann::json::parse(std::forward<Source>(source));
  } catch (const nlohmann::json::exception& e) {
    problem = parse_problem(e);
    return std::nullopt;
  }
}

// The JSON in `p`, or nullopt with `problem` saying why (cannot be opened; the parser's line, column and reason).
inline std::optional<nlohmann::json> read_json_file(const fs::path& p, std::string& problem) {
  std::ifstream in(p, std::ios::binary);
  if (!in) {
    problem = "cannot be opened";
    return std::nullopt;
  }
  return parse_json(in, problem);
}

inline void sort_by_id(std::vector<Clip>& clips) {
  std::sort(clips.begin(), clips.end(), [](const Clip& a, const Clip& b) { return a.id < b.id; });
}

// Reads one AI-Hub tree (root/labels/*.json, videos under root/videos) into `out`.
inline void read_aihub_tree(const fs::path& root, const DatasetOptions& options, std::vector<Clip>& out,
                            Dataset& dataset) {
  const fs::path labels = root / "labels", videos = root / "videos";
  require(fs::is_directory(labels), "dataset: {} has no labels/ folder (expected videos/*.mp4 + labels/*.json)",
          root.string());
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(labels))
    if (e.is_regular_file() && e.path().extension() == ".json") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (const auto& file : files) {
    ++dataset.labels_seen;
    const std::string where = (fs::path("labels") / file.filename()).string();
    std::string problem;
    const auto j = read_json_file(file, problem);
    if (!j || !j->is_object()) {
      dataset.skipped.add(SkipReason::UnreadableJson, where, j ? "not a JSON object" : problem);
      continue;
    }
    Clip clip;
    clip.id = file.stem().string();
    clip.source = file;
    // The video: the name the label gives, else the label's stem with a video extension.
    const std::string named = string_field(*j, {"file_name", "video_name", "filename", "video_file"});
    std::vector<fs::path> candidates;
    if (!named.empty()) candidates.push_back(videos / fs::path(named).filename());
    for (const std::string_view ext : kVideoExtensions) candidates.push_back(videos / (clip.id + std::string(ext)));
    const auto found = std::find_if(candidates.begin(), candidates.end(), usable_file);
    if (found == candidates.end()) {
      const auto empty = std::find_if(candidates.begin(), candidates.end(), empty_file);
      if (empty != candidates.end())
        dataset.skipped.add(SkipReason::EmptyVideo, where,
                            (fs::path("videos") / empty->filename()).string() + " has 0 bytes");
      else
        dataset.skipped.add(SkipReason::MissingVideo, where,
                            (fs::path("videos") / candidates.front().filename()).string());
      continue;
    }
    clip.video = *found;
    const auto caption = find_caption(*j, options.language);
    if (!caption) {
      dataset.skipped.add(SkipReason::MissingCaption, where, "no caption." + options.language);
      continue;
    }
    clip.caption = trim(*caption);
    if (clip.caption.empty()) {
      dataset.skipped.add(SkipReason::EmptyCaption, where);
      continue;
    }
    clip.category = string_field(*j, {"category"});
    if (const auto it = j->find("metadata"); it != j->end()) clip.metadata = *it;
    out.push_back(std::move(clip));
  }
}

inline void hash_split(std::vector<Clip>& all, const DatasetOptions& options, Dataset& dataset) {
  for (auto& c : all)
    (in_validation(c.id, options.seed, options.val_fraction) ? dataset.val : dataset.train).push_back(std::move(c));
}

inline void check_options(const DatasetOptions& options) {
  require(options.val_fraction >= 0.0 && options.val_fraction <= 1.0, "dataset: val_fraction must be in [0, 1], got {}",
          options.val_fraction);
}

}  // namespace detail

// Reads an AI-Hub tree: root/{videos,labels} split by hash, or root/train/{videos,labels} and
// root/val/{videos,labels} split by folder (SplitRule::Auto picks folders when both exist).
inline Dataset read_aihub(const fs::path& root, const DatasetOptions& options = {}) {
  detail::check_options(options);
  require(fs::is_directory(root), "dataset: {} is not a directory", root.string());
  Dataset dataset;
  dataset.skipped.max_examples = options.max_skip_examples;
  const bool folders = fs::is_directory(root / "train") && fs::is_directory(root / "val");
  require(options.split != SplitRule::Folders || folders, "dataset: split by folders needs {}/train and {}/val",
          root.string(), root.string());
  if (folders && options.split != SplitRule::Hash) {
    detail::read_aihub_tree(root / "train", options, dataset.train, dataset);
    detail::read_aihub_tree(root / "val", options, dataset.val, dataset);
  } else {
    std::vector<Clip> all;
    if (folders) {
      detail::read_aihub_tree(root / "train", options, all, dataset);
      detail::read_aihub_tree(root / "val", options, all, dataset);
    } else {
      detail::read_aihub_tree(root, options, all, dataset);
    }
    detail::hash_split(all, options, dataset);
  }
  detail::sort_by_id(dataset.train);
  detail::sort_by_id(dataset.val);
  return dataset;
}

// Reads a JSONL manifest: one {"video": path, "caption": text} object per line (blank lines ignored),
// paths relative to the manifest's folder unless absolute. Optional "id" (default: the video's stem)
// and "split" ("train" / "val", used unless options.split is Hash).
inline Dataset read_manifest(const fs::path& manifest, const DatasetOptions& options = {}) {
  detail::check_options(options);
  std::ifstream in(manifest, std::ios::binary);
  require(static_cast<bool>(in), "dataset: cannot open manifest {}: {}", manifest.string(), std::strerror(errno));
  Dataset dataset;
  dataset.skipped.max_examples = options.max_skip_examples;
  const fs::path base = manifest.parent_path();
  std::string line;
  std::vector<Clip> hashed;
  for (long number = 1; std::getline(in, line); ++number) {
    if (detail::trim(line).empty()) continue;
    ++dataset.labels_seen;
    const std::string where = fmt::format("{}:{}", manifest.filename().string(), number);
    std::string problem;
    const auto parsed = detail::parse_json(line, problem);
    if (!parsed || !parsed->is_object() || !parsed->contains("video") || !(*parsed)["video"].is_string()) {
      dataset.skipped.add(SkipReason::UnreadableJson, where,
                          parsed ? "needs an object with a string \"video\"" : problem);
      continue;
    }
    const nlohmann::json& j = *parsed;
    Clip clip;
    const fs::path video = j["video"].get<std::string>();
    clip.video = video.is_absolute() ? video : base / video;
    clip.id = j.contains("id") && j["id"].is_string() ? j["id"].get<std::string>() : video.stem().string();
    clip.source = where;
    if (!detail::usable_file(clip.video)) {
      if (detail::empty_file(clip.video))
        dataset.skipped.add(SkipReason::EmptyVideo, where, video.string() + " has 0 bytes");
      else
        dataset.skipped.add(SkipReason::MissingVideo, where, video.string());
      continue;
    }
    const auto it = j.find("caption");
    const auto caption = it == j.end()     ? std::nullopt
                         : it->is_object() ? detail::find_caption(j, options.language)
                                           : detail::caption_text(*it);
    if (!caption) {
      dataset.skipped.add(SkipReason::MissingCaption, where);
      continue;
    }
    clip.caption = detail::trim(*caption);
    if (clip.caption.empty()) {
      dataset.skipped.add(SkipReason::EmptyCaption, where);
      continue;
    }
    if (const auto c = j.find("category"); c != j.end() && c->is_string()) clip.category = c->get<std::string>();
    if (const auto m = j.find("metadata"); m != j.end()) clip.metadata = *m;
    const auto split = j.find("split");
    if (options.split != SplitRule::Hash && split != j.end() && split->is_string() &&
        (*split == "train" || *split == "val")) {
      (*split == "val" ? dataset.val : dataset.train).push_back(std::move(clip));
    } else {
      require(options.split != SplitRule::Folders, "dataset: {} has no \"split\" field and the split rule is Folders",
              where);
      hashed.push_back(std::move(clip));
    }
  }
  detail::hash_split(hashed, options, dataset);
  detail::sort_by_id(dataset.train);
  detail::sort_by_id(dataset.val);
  return dataset;
}

// A .jsonl file is a manifest; a directory is an AI-Hub tree.
inline Dataset read_dataset(const fs::path& path, const DatasetOptions& options = {}) {
  if (fs::is_regular_file(path)) return read_manifest(path, options);
  return read_aihub(path, options);
}

}  // namespace vidlora::train
