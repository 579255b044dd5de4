#pragma once
// Captioning data sets: the AI-Hub layout (`videos/*.mp4` + `labels/*.json`, one label per clip), an AI-Hub
// download as unpacked (label JSON and videos in folders at any depth: `Training/라벨링데이터/TL_…/*.json` beside
// `Training/원천데이터/TS_…/*.mp4`, and `Validation/…`) and a JSONL manifest (`{"video": path, "caption": text}` per
// line), split into train/val by folders (`train/`, `val/`; Training / Validation) or by a seeded hash of the clip id. Labels that cannot be used (video missing or
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
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <vidlora/core/error.hpp>
#include <vidlora/eval/tokenize.hpp>
#include <vidlora/model/detail/unicode.hpp>

namespace vidlora::train {

namespace fs = std::filesystem;

struct Clip {
  std::string id;        // label file stem (labels/) or its path below the root without ".json" (a download), both
                         // in NFC; the manifest's "id" / the video's stem
  fs::path video;        // absolute or relative to the working directory, as found
  std::string caption;   // the supervised text (trimmed)
  std::string category;  // "" when the label has none
  nlohmann::json metadata = nlohmann::json::object();  // the label's "metadata" object, as written
  fs::path source;                                     // the label file, or the manifest with ":<line>"
};

// The video file extensions a data set's clips may have (lower case), in the order a label's stem is tried.
inline constexpr std::string_view kVideoExtensions[] = {".mp4", ".mkv", ".webm", ".mov", ".avi"};

enum class SkipReason { MissingVideo, UnreadableJson, MissingCaption, EmptyCaption, EmptyVideo, AmbiguousVideo };

inline std::string_view to_string(SkipReason r) {
  switch (r) {
    case SkipReason::MissingVideo: return "missing video";
    case SkipReason::UnreadableJson: return "unreadable JSON";
    case SkipReason::MissingCaption: return "no caption";
    case SkipReason::EmptyCaption: return "empty caption";
    case SkipReason::EmptyVideo: return "empty video";
    case SkipReason::AmbiguousVideo: return "ambiguous video";
  }
  return "?";
}

// What was skipped and why: a count per reason and the first `max_examples` entries in full.
struct SkipReport {
  std::array<std::size_t, 6> counts{};
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
  Auto,     // folders when root/train and root/val exist (a download: Training and Validation labels), else Hash
  Folders,  // root/train/… and root/val/… (each an AI-Hub tree; a download's sides); a manifest's "split" field
  Hash,     // val when hash(seed, clip id) falls under val_fraction; a video's clips together (hash_split)
};

struct DatasetOptions {
  SplitRule split = SplitRule::Auto;
  double val_fraction = 0.1;        // Hash split: expected share of clips in val
  std::uint64_t seed = 0;           // Hash split: different seeds give different, independent splits
  std::string language = "korean";  // the caption object's key to read ("korean", or e.g. "english")
  std::size_t max_skip_examples = 5;
  // Where a label keeps its caption, instead of a "caption" / "captions" field: a JSON pointer
  // ("/annotations/0/description": that value) or a field name (the first field of that name, depth-first). The
  // value is read as a caption is: a string, strings joined by spaces, or an object holding `language`. "": the
  // caption rule (docs/data.md).
  std::string caption_field = "";
};

struct Dataset {
  std::vector<Clip> train;      // sorted by id
  std::vector<Clip> val;        // sorted by id
  std::size_t labels_seen = 0;  // labels (or manifest records) looked at, skipped ones included
  SkipReport skipped;
  std::string layout;  // how an AI-Hub download was read (its split, what was left out); "" for the other layouts
  // Videos named by clips on both sides, sorted: a split given explicitly (a manifest's "split" fields, folders) put
  // them there, and held-out scores on them are not held out. The hash split keeps a video's clips on one side.
  std::vector<std::filesystem::path> videos_on_both_sides;
  std::string summary() const {
    std::string s = fmt::format("{} train + {} val clips; {}", train.size(), val.size(), skipped.summary(labels_seen));
    if (const std::size_t n = videos_on_both_sides.size(); n > 0)
      s += fmt::format(
          "; {} video{} named by train and val clips alike ({}{}): the held-out scores on {} are not "
          "held out",
          n, n == 1 ? "" : "s", videos_on_both_sides.front().string(), n > 1 ? ", …" : "", n == 1 ? "it" : "them");
    return s;
  }
};

// True when clip `id` belongs to the validation split of the seeded hash rule (for a clip whose video no other clip
// names; clips sharing a video go by the smallest of their ids, detail::hash_split): FNV-1a over the id's
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
// `keys`: the field names to look for ({"caption", "captions"}, or DatasetOptions::caption_field's name).
inline std::optional<std::string> find_caption(const nlohmann::json& j, const std::string& language,
                                               const std::vector<std::string>& keys = {"caption", "captions"},
                                               int depth = 0) {
  if (depth > 6) return std::nullopt;
  if (j.is_object()) {
    for (const auto& key : keys) {
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
        if (auto found = find_caption(v, language, keys, depth + 1)) return found;
  } else if (j.is_array()) {
    for (const auto& v : j)
      if (auto found = find_caption(v, language, keys, depth + 1)) return found;
  }
  return std::nullopt;
}

// JSON pointers to the first `max` non-empty strings in `j`, depth-first (keys in sorted order): what a label
// that gave no caption holds, so that the user can name its caption's field.
inline void text_fields(const nlohmann::json& j, const std::string& at, std::vector<std::string>& out, std::size_t max,
                        int depth = 0) {
  if (out.size() >= max || depth > 8) return;
  if (j.is_string()) {
    if (!j.get_ref<const std::string&>().empty()) out.push_back(at.empty() ? "/" : at);
  } else if (j.is_object()) {
    for (const auto& [k, v] : j.items()) {
      std::string key;
      for (const char c : k) key += c == '~' ? "~0" : c == '/' ? "~1" : std::string(1, c);
      text_fields(v, at + "/" + key, out, max, depth + 1);
    }
  } else if (j.is_array()) {
    for (std::size_t i = 0; i < j.size(); ++i) text_fields(j[i], at + "/" + std::to_string(i), out, max, depth + 1);
  }
}

// The caption of a label (or a manifest line) as `options` says, or nullopt with `missing` saying what was looked
// for and which text fields the label has.
inline std::optional<std::string> label_caption(const nlohmann::json& j, const DatasetOptions& options,
                                                std::string& missing) {
  std::optional<std::string> caption;
  const std::string& field = options.caption_field;
  if (field.empty()) {
    caption = find_caption(j, options.language);
  } else if (field.starts_with("/")) {
    try {  // (the pointer was checked by check_options; a label may still not have its path, or an index too big)
      const nlohmann::json::json_pointer pointer(field);
      if (j.contains(pointer)) {
        const nlohmann::json& v = j.at(pointer);
        if (v.is_object()) {
          if (const auto lang = v.find(options.language); lang != v.end()) caption = caption_text(*lang);
        } else {
          caption = caption_text(v);
        }
      }
    } catch (const nlohmann::json::exception&) {
      caption.reset();
    }
  } else {
    caption = find_caption(j, options.language, {field});
  }
  if (caption) return caption;
  std::vector<std::string> fields;
  text_fields(j, "", fields, 6);
  const bool more = fields.size() > 5;
  if (more) fields.pop_back();
  missing = fmt::format("no {}{}", field.empty() ? "caption." + options.language : field,
                        fields.empty() ? std::string("; no text in it")
                                       : fmt::format("; its text: {}{}", fmt::join(fields, ", "), more ? ", …" : ""));
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
// A file that is not UTF-8 (Korean text saved as CP949 / EUC-KR, as Windows tools do) is said to be so, with the fix.
inline std::string parse_problem(const nlohmann::json::exception& e) {
  std::string what = e.what();
  if (const auto at = what.find("; last read:"); at != std::string::npos) what.resize(at);
  if (what.find("ill-formed UTF-8") != std::string::npos)
    what += "; the text is not UTF-8 (Korean saved as CP949 / EUC-KR? iconv -f cp949 -t utf-8 converts it)";
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

// The file names a label's video may have: the one it gives (its last part, after '/' or '\'), that name's stem with
// each video extension, then the label's stem with each.
inline std::vector<std::string> video_names(const std::string& named, const std::string& label_stem) {
  std::vector<std::string> names;
  if (!named.empty()) {
    const std::string base =
        named.substr(named.find_last_of("/\\") == std::string::npos ? 0 : named.find_last_of("/\\") + 1);
    if (!base.empty()) {
      names.push_back(base);
      const std::string stem = fs::path(base).stem().string();
      for (const std::string_view ext : kVideoExtensions) names.push_back(stem + std::string(ext));
    }
  }
  for (const std::string_view ext : kVideoExtensions) names.push_back(label_stem + std::string(ext));
  return names;
}

// A label file's JSON object, or nullopt with the skip recorded (it cannot be read, does not parse, or is no object).
inline std::optional<nlohmann::json> read_label(const fs::path& file, const std::string& where, Dataset& dataset) {
  std::string problem;
  auto j = read_json_file(file, problem);
  if (j && j->is_object()) return j;
  dataset.skipped.add(SkipReason::UnreadableJson, where, j ? "not a JSON object" : problem);
  return std::nullopt;
}

// A label's caption (trimmed), category and metadata into `clip`; false, with the skip recorded, when it has no
// caption or an empty one.
inline bool take_label_fields(const nlohmann::json& j, const DatasetOptions& options, const std::string& where,
                              Clip& clip, Dataset& dataset) {
  std::string missing;
  const auto caption = label_caption(j, options, missing);
  if (!caption) {
    dataset.skipped.add(SkipReason::MissingCaption, where, missing);
    return false;
  }
  clip.caption = trim(*caption);
  if (clip.caption.empty()) {
    dataset.skipped.add(SkipReason::EmptyCaption, where);
    return false;
  }
  clip.category = string_field(j, {"category"});
  if (const auto it = j.find("metadata"); it != j.end()) clip.metadata = *it;
  return true;
}

// A name in Unicode NFC (a zip made on macOS stores Korean names decomposed, NFD: 학 as the three jamo ᄒ ᅡ ᆨ,
// which neither "학습" nor a label's composed file name would match); a name that is not UTF-8 (a cp949 name from a
// Korean Windows zip) as its bytes.
inline std::string composed(const std::string& name) {
  return model::detail::is_valid_utf8(name) ? model::detail::nfc(name, "a file name") : name;
}

// A file or folder name as the readers compare it: composed, with ASCII letters in lower case.
inline std::string comparable_name(const std::string& name) { return eval::ascii_lower(composed(name)); }

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
  std::map<std::string, std::vector<fs::path>> by_name;  // videos/ by comparable_name, listed on the first miss
  bool listed = false;
  for (const auto& file : files) {
    ++dataset.labels_seen;
    const std::string where = (fs::path("labels") / file.filename()).string();
    const auto j = read_label(file, where, dataset);
    if (!j) continue;
    Clip clip;
    clip.id = composed(file.stem().string());
    clip.source = file;
    // The video: the name the label gives, else the label's stem with a video extension.
    std::vector<fs::path> candidates;
    const auto names = video_names(string_field(*j, {"file_name", "video_name", "filename", "video_file"}), clip.id);
    for (const auto& name : names) candidates.push_back(videos / name);
    auto found = std::find_if(candidates.begin(), candidates.end(), usable_file);
    if (found == candidates.end()) {  // the name as compared (composed, any letter case): one file only
      if (!listed) {
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(videos, ec))
          if (e.is_regular_file(ec)) by_name[comparable_name(e.path().filename().string())].push_back(e.path());
        listed = true;
      }
      std::vector<fs::path> several;  // the files of the first name that matches more than one
      for (const auto& name : names) {
        const auto it = by_name.find(comparable_name(name));
        if (it == by_name.end()) continue;
        if (it->second.size() > 1) {
          if (several.empty()) several = it->second;
          continue;
        }
        candidates.push_back(it->second.front());
        if (usable_file(candidates.back())) break;
      }
      found = std::find_if(candidates.begin(), candidates.end(), usable_file);
      if (found == candidates.end() && !several.empty()) {
        std::sort(several.begin(), several.end());
        std::vector<std::string> shown;
        for (const auto& v : several) shown.push_back((fs::path("videos") / v.filename()).string());
        dataset.skipped.add(SkipReason::AmbiguousVideo, where,
                            fmt::format("{} videos named {} but for letter case or Unicode form: {}", several.size(),
                                        several.front().filename().string(), fmt::join(shown, ", ")));
        continue;
      }
    }
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
    if (!take_label_fields(*j, options, where, clip, dataset)) continue;
    out.push_back(std::move(clip));
  }
}

// A clip's video as the split compares videos: the file itself (its canonical path: another spelling of the path,
// "..", a symbolic link name it too), else the path as given, normalised.
inline fs::path video_identity(const fs::path& video) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(video, ec);
  return ec ? video.lexically_normal() : p;
}

// The hash split (in_validation) of `all`, a video's clips kept together: a clip whose video the clips already
// placed (by a manifest's "split" field, by a download's side) hold on one side only joins them; else the clips
// naming the same video (a manifest with several captions per video) all go where the smallest of their ids hashes
// to, so no held-out video is trained on. A clip whose video no other clip names goes by its own id.
inline void hash_split(std::vector<Clip>& all, const DatasetOptions& options, Dataset& dataset) {
  if (all.empty()) return;  // (a download split by its sides, a manifest with every "split" given: nothing to look up)
  std::map<fs::path, int> placed;  // video -> 1 train, 2 val, 3 both (the clips already placed)
  for (const auto& c : dataset.train) placed[video_identity(c.video)] |= 1;
  for (const auto& c : dataset.val) placed[video_identity(c.video)] |= 2;
  std::vector<fs::path> identity;
  std::map<fs::path, std::string> smallest_id;  // video -> the smallest id of the clips naming it
  for (const auto& c : all) {
    identity.push_back(video_identity(c.video));
    const auto [it, added] = smallest_id.emplace(identity.back(), c.id);
    if (!added && c.id < it->second) it->second = c.id;
  }
  for (std::size_t i = 0; i < all.size(); ++i) {
    const auto side = placed.find(identity[i]);
    const bool val = side != placed.end() && side->second != 3
                         ? side->second == 2
                         : in_validation(smallest_id.at(identity[i]), options.seed, options.val_fraction);
    (val ? dataset.val : dataset.train).push_back(std::move(all[i]));
  }
}

// The readers' last step: both sides sorted by id, and the videos named on both recorded.
inline void finish(Dataset& dataset) {
  sort_by_id(dataset.train);
  sort_by_id(dataset.val);
  std::set<fs::path> trained, both;
  for (const auto& c : dataset.train) trained.insert(video_identity(c.video));
  for (const auto& c : dataset.val)
    if (const fs::path v = video_identity(c.video); trained.count(v)) both.insert(v);
  dataset.videos_on_both_sides.assign(both.begin(), both.end());
}

// The side of an AI-Hub download a folder is on. AI-Hub ships Training/ and Validation/ (also "1.Training",
// "01.Training"), their archives prefixed TS_/TL_ (training sources / labels) and VS_/VL_ (validation).
enum class DownloadSide { None, Train, Val, Test, Conflict };

// A folder name that says its side outright: Training, Train, Validation, Valid, Val, Test (any case, after a
// number such as "1." or "02_"), or a TS_/TL_/VS_/VL_ archive's folder.
inline DownloadSide named_side(const std::string& name) {
  const std::string lower = comparable_name(name);
  const std::string_view rest =
      std::string_view(lower).substr(std::min(lower.size(), lower.find_first_not_of("0123456789._- ")));
  if (rest == "training" || rest == "train" || lower.starts_with("ts_") || lower.starts_with("tl_"))
    return DownloadSide::Train;
  if (rest == "validation" || rest == "valid" || rest == "val" || lower.starts_with("vs_") || lower.starts_with("vl_"))
    return DownloadSide::Val;
  if (rest == "test" || rest == "testing") return DownloadSide::Test;
  return DownloadSide::None;
}

// A folder name that only contains a side's word ("Training_data", "검증데이터", "학습"): read when no folder of the
// path names its side outright.
inline DownloadSide hinted_side(const std::string& name) {
  const std::string lower = comparable_name(name);
  const bool train = lower.find("training") != std::string::npos || lower.find("학습") != std::string::npos;
  const bool val = lower.find("validation") != std::string::npos || lower.find("검증") != std::string::npos;
  return train && val ? DownloadSide::Conflict
         : train      ? DownloadSide::Train
         : val        ? DownloadSide::Val
                      : DownloadSide::None;
}

// The side of a path below a download's root (its folders): a Test folder anywhere makes it Test; else the sides
// its folders name outright (folders that disagree make it Conflict: "1.Training/VL_a"); else the innermost folder
// that hints at one ("AI학습데이터/2.검증데이터" is Validation; a name hinting at both is Conflict).
inline DownloadSide download_side(const fs::path& relative_parent) {
  DownloadSide named = DownloadSide::None, hinted = DownloadSide::None;
  for (const auto& part : relative_parent) {
    const DownloadSide s = named_side(part.string());
    if (s == DownloadSide::Test) return s;
    if (s != DownloadSide::None) named = named == DownloadSide::None || named == s ? s : DownloadSide::Conflict;
    if (const DownloadSide h = hinted_side(part.string()); h != DownloadSide::None) hinted = h;
  }
  return named != DownloadSide::None ? named : hinted;
}

// A label's or a video's folders with what tells labels from videos left out (원천데이터 / 라벨링데이터 folders, the
// TS_/TL_/VS_/VL_ prefixes and the "_<n>" of an archive split in parts, labels/ and videos/): the same for a label
// and its video where the download mirrors its folders ("1.Training/라벨링데이터/TL_도시/서울" and
// "1.Training/원천데이터/TS_도시_2/서울"), the video's possibly one level deeper (a folder per clip).
inline std::vector<std::string> mirrored_folders(const fs::path& relative_parent) {
  std::vector<std::string> out;
  for (const auto& part : relative_parent) {
    const std::string name = composed(part.string());
    const std::string lower = eval::ascii_lower(name);
    if (name.find("원천") != std::string::npos || name.find("라벨링") != std::string::npos || lower == "labels" ||
        lower == "label" || lower == "videos" || lower == "video")
      continue;
    const bool prefixed = lower.size() > 3 && lower[2] == '_' && (lower[0] == 't' || lower[0] == 'v') &&
                          (lower[1] == 's' || lower[1] == 'l');
    std::string folder = prefixed ? name.substr(3) : name;
    if (prefixed) {  // an archive split in parts: TS_도시_1, TS_도시_2 hold what TL_도시 labels
      const auto digits = folder.find_last_not_of("0123456789");
      if (digits != std::string::npos && digits > 0 && digits + 1 < folder.size() && folder[digits] == '_')
        folder.resize(digits);
    }
    out.push_back(folder);
  }
  return out;
}

// Reads an AI-Hub download as unpacked under `root` (docs/data.md, "An AI-Hub download as unpacked"): every *.json
// below it is a label, every video file below it a clip's video, found by the name the label gives (file_name,
// video_name, …) or by the label's stem, on the label's side (a Training label never takes a Validation video),
// the mirrored folder breaking ties. Hidden entries (".", the "._x" files and "__MACOSX" folders a macOS zip
// leaves) are not read; folders behind symbolic links are, each once, unless the root holds them anyway or they
// hold the root. A clip's id is its label's path below `root` (composed: the same whether an unzip decomposed it)
// without ".json", whatever other labels there are. Labels under a Test folder are not read. With labels on both
// sides (and options.split not Hash) the split is by side, clips on neither side going by the hash; else by hash.
// dataset.layout says how it was read.
inline void read_download_tree(const fs::path& root, const DatasetOptions& options, Dataset& dataset) {
  std::vector<fs::path> labels, zips, unreadable;
  std::map<std::string, std::vector<fs::path>> videos;  // comparable_name(file name) -> videos
  std::set<fs::path> linked;                            // the folders entered through a symbolic link
  std::error_code ec;
  const fs::path top = fs::weakly_canonical(root, ec);
  const auto within = [](const fs::path& p, const fs::path& base) {  // p is base or below it
    const std::string r = p.lexically_relative(base).generic_string();
    return !r.empty() && !r.starts_with("..");
  };
  for (auto it = fs::recursive_directory_iterator(
           root, fs::directory_options::skip_permission_denied | fs::directory_options::follow_directory_symlink, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    // (a status error on an odd entry leaves it out: increment() resets ec)
    const std::string name = it->path().filename().string();
    if (name.starts_with(".") || name == "__MACOSX") {
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (it->is_directory(ec)) {
      std::error_code probe;
      if (fs::directory_iterator(it->path(), probe); probe) {  // (the walk would skip it without a word)
        unreadable.push_back(it->path());
        it.disable_recursion_pending();
      } else if (it->is_symlink(probe)) {
        // Followed once each, unless the folder is the root's own (the walk reaches it by its path: ids and sides
        // stay the path's), or holds the root (a loop).
        const fs::path target = fs::canonical(it->path(), probe);
        if (probe || within(target, top) || within(top, target) || !linked.insert(target).second)
          it.disable_recursion_pending();
      }
      continue;
    }
    if (!it->is_regular_file(ec)) continue;
    const std::string ext = eval::ascii_lower(it->path().extension().string());
    if (ext == ".json")
      labels.push_back(it->path());
    else if (ext == ".zip" || eval::ascii_lower(name).find(".zip.") != std::string::npos)
      zips.push_back(it->path());
    else if (std::find(std::begin(kVideoExtensions), std::end(kVideoExtensions), ext) != std::end(kVideoExtensions))
      videos[comparable_name(name)].push_back(it->path());
  }
  require(!ec, "dataset: cannot read the folders under {}: {}", root.string(), ec.message());
  std::sort(labels.begin(), labels.end());
  std::sort(zips.begin(), zips.end());
  std::sort(unreadable.begin(), unreadable.end());
  for (auto& [name, paths] : videos) std::sort(paths.begin(), paths.end());  // (the walk's order is the disk's)
  // Archives with no folder of their name beside them ("TS_도시.zip" unpacked into "TS_도시/" is read).
  std::erase_if(zips, [](const fs::path& z) {  // (the folder's name compared as names are: a macOS unzip decomposes it)
    const std::string name = z.filename().string();
    const std::string folder = comparable_name(name.substr(0, eval::ascii_lower(name).find(".zip")));
    std::error_code e;
    for (const auto& entry : fs::directory_iterator(z.parent_path(), e))
      if (entry.is_directory(e) && comparable_name(entry.path().filename().string()) == folder) return true;
    return false;
  });
  const auto relative = [&](const fs::path& p) { return p.lexically_relative(root); };
  if (labels.empty() || videos.empty()) {
    if (!zips.empty())
      fail(
          "dataset: {} holds {} zip archive{} ({}{}) and no {} outside them: unpack them where they are first (an "
          "AI-Hub download ships its videos and labels as TS_/TL_/VS_/VL_ archives)",
          root.string(), zips.size(), zips.size() == 1 ? "" : "s", relative(zips.front()).string(),
          zips.size() > 1 ? ", …" : "", labels.empty() ? "label JSON files" : "video files");
    fail(
        "dataset: {} has no labels/ folder and no {} below it (expected videos/*.mp4 + labels/*.json, train/ and val/ "
        "holding those, or an AI-Hub download: label JSON files and videos in folders at any depth){}",
        root.string(), labels.empty() ? "label JSON files" : "video files",
        unreadable.empty() ? std::string()
                           : fmt::format("; {} folder{} below it cannot be read ({}{})", unreadable.size(),
                                         unreadable.size() == 1 ? "" : "s", relative(unreadable.front()).string(),
                                         unreadable.size() > 1 ? ", …" : ""));
  }
  const auto side_of = [&](const fs::path& p) { return download_side(relative(p).parent_path()); };
  const auto side_name = [](DownloadSide s) { return s == DownloadSide::Train ? "Training" : "Validation"; };
  bool train_seen = false, val_seen = false;
  std::size_t tests = 0;
  std::vector<std::string> conflicts;  // labels whose folders disagree on the side
  for (const auto& l : labels) {
    const DownloadSide side = side_of(l);
    train_seen |= side == DownloadSide::Train;
    val_seen |= side == DownloadSide::Val;
    tests += side == DownloadSide::Test;
    if (side == DownloadSide::Conflict) conflicts.push_back(relative(l).generic_string());
  }
  const bool by_side = train_seen && val_seen && options.split != SplitRule::Hash;
  require(options.split != SplitRule::Folders || by_side,
          "dataset: split by folders needs labels under a Training and under a Validation folder in {} (it has {})",
          root.string(),
          train_seen ? "Training ones only"
          : val_seen ? "Validation ones only"
                     : "neither");
  std::vector<Clip> hashed;
  std::vector<std::string> sideless;  // clips on neither side (or on both) while the split is by side
  for (const auto& file : labels) {
    const DownloadSide side = side_of(file);
    if (side == DownloadSide::Test) continue;
    ++dataset.labels_seen;
    const std::string where = relative(file).generic_string();
    const auto j = read_label(file, where, dataset);
    if (!j) continue;
    Clip clip;
    clip.id = composed(where.substr(0, where.size() - file.extension().string().size()));
    clip.source = file;
    const auto names =
        video_names(string_field(*j, {"file_name", "video_name", "filename", "video_file"}), file.stem().string());
    std::vector<fs::path> found;
    std::vector<fs::path> other_side;  // videos of the name that are on the label's other side
    for (const auto& name : names) {
      const auto it = videos.find(comparable_name(name));
      if (it == videos.end()) continue;
      for (const auto& v : it->second) {
        // A label on a side takes a video on that side or on none; one on neither takes one on neither, or, when the
        // split is not by side, on any side; never a Test folder's (whose clips are not read).
        const DownloadSide vs = side_of(v);
        const bool sided = side == DownloadSide::Train || side == DownloadSide::Val;
        const bool video_sided = vs == DownloadSide::Train || vs == DownloadSide::Val;
        const bool mine = vs == DownloadSide::Test ? false
                          : sided                  ? !video_sided || vs == side
                                                   : !video_sided || !by_side;
        (mine ? found : other_side).push_back(v);
      }
      if (!found.empty()) break;
    }
    if (found.size() > 1) {  // the one in the label's mirrored folder (or the fewest levels below it), if only one is
      const auto mirror = mirrored_folders(relative(file).parent_path());
      std::vector<fs::path> same;
      std::size_t best = 0;
      for (const auto& v : found) {
        const auto theirs = mirrored_folders(relative(v).parent_path());
        if (theirs.size() < mirror.size() || !std::equal(mirror.begin(), mirror.end(), theirs.begin())) continue;
        const std::size_t extra = theirs.size() - mirror.size();
        if (same.empty() || extra < best) {
          same = {v};
          best = extra;
        } else if (extra == best) {
          same.push_back(v);
        }
      }
      if (same.size() == 1) found = same;
    }
    if (found.size() > 1) {
      std::vector<std::string> shown;
      for (const auto& v : found) shown.push_back(relative(v).generic_string());
      dataset.skipped.add(SkipReason::AmbiguousVideo, where,
                          fmt::format("{} videos named {}: {}", found.size(), found.front().filename().string(),
                                      fmt::join(shown, ", ")));
      continue;
    }
    if (found.empty()) {
      const DownloadSide other = other_side.empty() ? DownloadSide::None : side_of(other_side.front());
      const bool sided = side == DownloadSide::Train || side == DownloadSide::Val;
      dataset.skipped.add(
          SkipReason::MissingVideo, where,
          other_side.empty()
              ? "no video named " + names.front() + " below the data folder"
              : fmt::format("no video named {} {}; {} is {}", names.front(),
                            sided ? fmt::format("on its {} side", side_name(side))
                                  : std::string("outside the Training and Validation folders"),
                            relative(other_side.front()).generic_string(),
                            other == DownloadSide::Test ? std::string("under a Test folder (not read)")
                                                        : fmt::format("on the {} side", side_name(other))));
      continue;
    }
    if (!usable_file(found.front())) {
      if (empty_file(found.front()))
        dataset.skipped.add(SkipReason::EmptyVideo, where, relative(found.front()).generic_string() + " has 0 bytes");
      else
        dataset.skipped.add(SkipReason::MissingVideo, where,
                            relative(found.front()).generic_string() + " cannot be read");
      continue;
    }
    clip.video = found.front();
    if (!take_label_fields(*j, options, where, clip, dataset)) continue;
    if (by_side && (side == DownloadSide::Train || side == DownloadSide::Val)) {
      (side == DownloadSide::Val ? dataset.val : dataset.train).push_back(std::move(clip));
    } else {
      if (by_side) sideless.push_back(where);
      hashed.push_back(std::move(clip));
    }
  }
  require(options.split != SplitRule::Folders || sideless.empty(),
          "dataset: split by folders: {} is under neither a Training nor a Validation folder of {} (or under both)",
          sideless.empty() ? std::string() : sideless.front(), root.string());
  hash_split(hashed, options, dataset);
  dataset.layout =
      fmt::format("an AI-Hub download: labels and videos found in the folders below {}, split {}", root.string(),
                  by_side ? "by its Training and Validation folders"
                          : fmt::format("by the hash of the clip ids ({})",
                                        options.split == SplitRule::Hash ? "as asked"
                                        : train_seen                     ? "no label under a Validation folder"
                                        : val_seen                       ? "no label under a Training folder"
                                                   : "no label under a Training or a Validation folder"));
  if (!sideless.empty())
    dataset.layout += fmt::format("; {} clip{} under neither (or both) split by the hash ({}{})", sideless.size(),
                                  sideless.size() == 1 ? "" : "s", sideless.front(), sideless.size() > 1 ? ", …" : "");
  if (tests > 0)
    dataset.layout += fmt::format("; {} label{} under a Test folder not read", tests, tests == 1 ? "" : "s");
  if (!conflicts.empty())
    dataset.layout +=
        fmt::format("; {} label{} under folders that disagree on the side ({}{})", conflicts.size(),
                    conflicts.size() == 1 ? "" : "s", conflicts.front(), conflicts.size() > 1 ? ", …" : "");
  if (!zips.empty())
    dataset.layout += fmt::format(
        "; {} zip archive{} with no folder of {} name beside {} ({}{}): a clip only inside "
        "one is not read",
        zips.size(), zips.size() == 1 ? "" : "s", zips.size() == 1 ? "its" : "their", zips.size() == 1 ? "it" : "them",
        relative(zips.front()).generic_string(), zips.size() > 1 ? ", …" : "");
  if (!unreadable.empty())
    dataset.layout += fmt::format("; {} folder{} that cannot be read ({}{}): {} clips are not read", unreadable.size(),
                                  unreadable.size() == 1 ? "" : "s", relative(unreadable.front()).generic_string(),
                                  unreadable.size() > 1 ? ", …" : "", unreadable.size() == 1 ? "its" : "their");
}

inline void check_options(const DatasetOptions& options) {
  require(options.val_fraction >= 0.0 && options.val_fraction <= 1.0, "dataset: val_fraction must be in [0, 1], got {}",
          options.val_fraction);
  if (options.caption_field.starts_with("/")) {
    try {
      (void)nlohmann::json::json_pointer(options.caption_field);
    } catch (const nlohmann::json::exception& e) {
      fail("dataset: caption_field '{}' is not a JSON pointer ({})", options.caption_field, parse_problem(e));
    }
  }
}

}  // namespace detail

// Reads an AI-Hub tree: root/{videos,labels} split by hash, or root/train/{videos,labels} and
// root/val/{videos,labels} split by folder (SplitRule::Auto picks folders when both exist); a root with neither
// labels/ nor train/ + val/ is read as an AI-Hub download as unpacked (detail::read_download_tree).
inline Dataset read_aihub(const fs::path& root, const DatasetOptions& options = {}) {
  detail::check_options(options);
  require(fs::is_directory(root), "dataset: {} is not a directory", root.string());
  Dataset dataset;
  dataset.skipped.max_examples = options.max_skip_examples;
  const bool folders = fs::is_directory(root / "train") && fs::is_directory(root / "val");
  const bool tree =
      fs::is_directory(root / "labels") ||
      (folders && (fs::is_directory(root / "train" / "labels") || fs::is_directory(root / "val" / "labels")));
  if (!tree) {  // an AI-Hub download as unpacked
    detail::read_download_tree(root, options, dataset);
    detail::finish(dataset);
    return dataset;
  }
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
  detail::finish(dataset);
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
    std::string missing;
    const auto caption = !options.caption_field.empty() ? detail::label_caption(j, options, missing)
                         : it == j.end()                ? std::nullopt
                         : it->is_object()              ? detail::find_caption(j, options.language)
                                                        : detail::caption_text(*it);
    if (!caption) {
      dataset.skipped.add(SkipReason::MissingCaption, where, missing);
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
  detail::finish(dataset);
  return dataset;
}

// A .jsonl file is a manifest; a directory is an AI-Hub tree.
inline Dataset read_dataset(const fs::path& path, const DatasetOptions& options = {}) {
  if (fs::is_regular_file(path)) return read_manifest(path, options);
  return read_aihub(path, options);
}

}  // namespace vidlora::train
