#include <catch2/catch.hpp>

#include <fixtures.hpp>
#include <vidlora/model/detail/unicode.hpp>
#include <vidlora/train/dataset.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include <unistd.h>

using namespace vidlora;
namespace fs = std::filesystem;

namespace {

using test::TempDir;

std::string run_command(const std::string& command) {
  std::string output;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  REQUIRE(pipe != nullptr);
  char buffer[4096];
  while (std::fgets(buffer, sizeof buffer, pipe)) output += buffer;
  const int status = ::pclose(pipe);
  INFO(command << "\n" << output);
  REQUIRE(status == 0);
  return output;
}

void make_demo(const fs::path& out, int count, int seed) {
  REQUIRE(std::system("command -v ffmpeg > /dev/null") == 0);  // tools/install-deps.sh installs it
  run_command("bash " + std::string(VIDLORA_SOURCE_DIR) + "/tools/make_demo_data.sh '" + out.string() + "' " +
              std::to_string(count) + " " + std::to_string(seed) + " 2");
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << text;
}

// The Korean template grammar of tools/make_demo_data.sh, written out independently.
const std::regex kGrammar(
    "(빨간|파란|초록|노란|보라|검은|흰|주황) 배경에서 (빨간|파란|초록|노란|보라|검은|흰|주황) (원이|사각형이) "
    "(왼쪽에서 오른쪽으로 움직인다\\.|오른쪽에서 왼쪽으로 움직인다\\.|위에서 아래로 움직인다\\.|"
    "아래에서 위로 움직인다\\.|제자리에 멈춰 있다\\.)"
    "( 장면이 바뀌어 (빨간|파란|초록|노란|보라|검은|흰|주황) 배경이 나타난다\\.| 잠시 빠르게 흔들린다\\.)?");

}  // namespace

TEST_CASE("demo clips read back through the AI-Hub reader with bad labels counted and named", "[train][dataset]") {
  TempDir dir("aihub");
  make_demo(dir.path, 6, 7);
  // bad labels next to the generated ones
  write_file(dir.path / "labels/broken.json", "{\"caption\": {\"korean\": \"잘린 파일");
  write_file(dir.path / "labels/orphan.json", R"({"caption": {"korean": "영상이 없는 라벨"}})");
  write_file(dir.path / "labels/blank.json", R"({"caption": {"korean": "   "}})");
  fs::copy_file(dir.path / "videos/clip_00000.mp4", dir.path / "videos/blank.mp4");
  write_file(dir.path / "labels/english_only.json", R"({"caption": {"english": "a cat"}})");
  fs::copy_file(dir.path / "videos/clip_00000.mp4", dir.path / "videos/english_only.mp4");
  // the release's nesting: the caption object inside an annotation list, the video named in the label
  write_file(
      dir.path / "labels/nested.json",
      R"({"info": {"file_name": "renamed.mp4"}, "annotations": [{"category": "x", "caption": {"korean": "중첩된 캡션"}}]})");
  fs::copy_file(dir.path / "videos/clip_00001.mp4", dir.path / "videos/renamed.mp4");
  // a video that is there but empty (a failed copy) is said to be empty, not missing
  write_file(dir.path / "labels/hollow.json", R"({"caption": {"korean": "빈 영상"}})");
  write_file(dir.path / "videos/hollow.mp4", "");

  const auto data = train::read_aihub(dir.path, {.val_fraction = 0.5, .seed = 3});
  CHECK(data.labels_seen == 12);
  CHECK(data.train.size() + data.val.size() == 7);
  const auto& skipped = data.skipped;
  CHECK(skipped.count(train::SkipReason::UnreadableJson) == 1);
  CHECK(skipped.count(train::SkipReason::MissingVideo) == 1);
  CHECK(skipped.count(train::SkipReason::EmptyVideo) == 1);
  CHECK(skipped.count(train::SkipReason::EmptyCaption) == 1);
  CHECK(skipped.count(train::SkipReason::MissingCaption) == 1);
  const std::string summary = data.summary();
  CHECK_THAT(summary, !Catch::Contains("last read"));  // (the parser's quote of the file's raw bytes is left out)
  CHECK_THAT(summary, Catch::Contains("skipped 5 of 12 labels") && Catch::Contains("1 empty video") &&
                          Catch::Contains("labels/hollow.json: empty video (videos/hollow.mp4 has 0 bytes)") &&
                          Catch::Contains("labels/broken.json: unreadable JSON ([json.exception.parse_error") &&
                          Catch::Contains("labels/orphan.json: missing video (videos/orphan.mp4)") &&
                          Catch::Contains("labels/blank.json: empty caption") &&
                          Catch::Contains(
                              "labels/english_only.json: no caption (no caption.korean; its text: /caption/english)"));

  std::map<std::string, train::Clip> clips;
  for (const auto* part : {&data.train, &data.val})
    for (const auto& c : *part) clips[c.id] = c;
  REQUIRE(clips.count("nested"));
  CHECK(clips["nested"].caption == "중첩된 캡션");
  CHECK(clips["nested"].video.filename() == "renamed.mp4");
  for (int i = 0; i < 6; ++i) {
    const std::string id = "clip_0000" + std::to_string(i);
    REQUIRE(clips.count(id));
    const auto label = nlohmann::json::parse(read_file(dir.path / "labels" / (id + ".json")));
    CHECK(clips[id].caption == label["caption"]["korean"].get<std::string>());
    CHECK(std::regex_match(clips[id].caption, kGrammar));
    CHECK(clips[id].category == label["category"].get<std::string>());
    CHECK(clips[id].metadata["index"].get<int>() == i);
    CHECK(clips[id].video == dir.path / "videos" / (id + ".mp4"));
    // the split is the documented hash rule
    const bool in_val = train::in_validation(id, 3, 0.5);
    CHECK(std::any_of(data.val.begin(), data.val.end(), [&](const auto& c) { return c.id == id; }) == in_val);
  }
}

TEST_CASE("demo generator writes h264 clips of the labelled length at 10 fps", "[train][dataset]") {
  TempDir dir("probe");
  make_demo(dir.path, 3, 11);
  for (int i = 0; i < 3; ++i) {
    const std::string id = "clip_0000" + std::to_string(i);
    const auto label = nlohmann::json::parse(read_file(dir.path / "labels" / (id + ".json")));
    const std::string probe = run_command(
        "ffprobe -v error -count_frames -select_streams v:0 -show_entries "
        "stream=codec_name,width,height,nb_read_frames "
        "-of csv=p=0 '" +
        (dir.path / "videos" / (id + ".mp4")).string() + "'");
    const int frames = label["video"]["duration_s"].get<int>() * 10;
    CHECK(probe == "h264,96,96," + std::to_string(frames) + "\n");
  }
}

TEST_CASE("demo generator is deterministic for a given count and seed", "[train][dataset]") {
  TempDir a("det_a"), b("det_b"), c("det_c");
  make_demo(a.path, 4, 5);
  make_demo(b.path, 4, 5);
  make_demo(c.path, 4, 6);
  std::set<std::string> names;
  for (const auto& e : fs::recursive_directory_iterator(a.path))
    if (e.is_regular_file()) names.insert(fs::relative(e.path(), a.path).string());
  CHECK(names.size() == 9);  // 4 videos, 4 labels, the manifest
  for (const auto& n : names) {
    INFO(n);
    CHECK(read_file(a.path / n) == read_file(b.path / n));
  }
  CHECK(read_file(a.path / "manifest.jsonl") != read_file(c.path / "manifest.jsonl"));
}

TEST_CASE("manifest reader resolves paths and reports broken lines", "[train][dataset]") {
  TempDir dir("manifest");
  fs::create_directories(dir.path / "v");
  write_file(dir.path / "v/a.mp4", "not really a video but not empty");
  write_file(dir.path / "v/b.mp4", "x");
  write_file(dir.path / "v/c.mp4", "x");
  write_file(dir.path / "v/empty.mp4", "");
  write_file(dir.path / "data.jsonl",
             "{\"video\": \"v/a.mp4\", \"caption\": \" 파란 배경 \"}\n"
             "\n"
             "{\"video\": \"v/b.mp4\", \"caption\": \"b\", \"split\": \"val\"}\n"
             "{\"video\": \"v/c.mp4\", \"caption\": [\"둘\", \"문장\"], \"id\": \"see\", \"split\": \"train\"}\n"
             "{\"video\": \"v/missing.mp4\", \"caption\": \"x\"}\n"
             "{\"video\": \"v/empty.mp4\", \"caption\": \"x\"}\n"
             "not json\n"
             "{\"video\": \"v/a.mp4\", \"caption\": \"\"}\n"
             "{\"caption\": \"no video\"}\n");
  const auto data = train::read_manifest(dir.path / "data.jsonl", {.val_fraction = 0.0});
  CHECK(data.labels_seen == 8);
  REQUIRE(data.train.size() == 2);
  REQUIRE(data.val.size() == 1);
  CHECK(data.train[0].id == "a");
  CHECK(data.train[0].caption == "파란 배경");
  CHECK(data.train[0].video == dir.path / "v/a.mp4");
  CHECK(data.train[1].id == "see");
  CHECK(data.train[1].caption == "둘 문장");
  CHECK(data.val[0].id == "b");
  CHECK(data.skipped.count(train::SkipReason::MissingVideo) == 1);
  CHECK(data.skipped.count(train::SkipReason::EmptyVideo) == 1);
  CHECK(data.skipped.count(train::SkipReason::UnreadableJson) == 2);
  CHECK(data.skipped.count(train::SkipReason::EmptyCaption) == 1);
  CHECK_THAT(data.skipped.summary(data.labels_seen),
             Catch::Contains("data.jsonl:5: missing video (v/missing.mp4)") &&
                 Catch::Contains("data.jsonl:6: empty video (v/empty.mp4 has 0 bytes)") &&
                 Catch::Contains("data.jsonl:7: unreadable JSON ([json.exception.parse_error"));
  // a manifest that cannot be opened: its path and the system's reason
  CHECK_THROWS_WITH(train::read_manifest(dir.path / "absent.jsonl"),
                    Catch::Contains("dataset: cannot open manifest " + (dir.path / "absent.jsonl").string() +
                                    ": No such file or directory"));
}

TEST_CASE("skip report keeps only the first few examples but counts all", "[train][dataset]") {
  train::SkipReport r;
  r.max_examples = 2;
  for (int i = 0; i < 5; ++i) r.add(train::SkipReason::MissingVideo, fmt::format("l{}.json", i));
  CHECK(r.total() == 5);
  CHECK(r.examples == std::vector<std::string>{"l0.json: missing video", "l1.json: missing video"});
  CHECK(r.summary(9) ==
        "skipped 5 of 9 labels: 5 missing video; first: l0.json: missing video; l1.json: missing video");
}

TEST_CASE("hash split is stable per clip id and follows the validation fraction", "[train][dataset]") {
  int val = 0, moved = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const std::string id = "clip_" + std::to_string(i);
    const bool v = train::in_validation(id, 42, 0.1);
    val += v;
    moved += v != train::in_validation(id, 43, 0.1);
    CHECK(v == train::in_validation(id, 42, 0.1));
    if (v) CHECK(train::in_validation(id, 42, 0.3));  // monotone in the fraction: growing val only adds clips
  }
  CHECK(val == Approx(0.1 * n).margin(4 * std::sqrt(0.09 * n)));            // 4 sigma of a binomial
  CHECK(moved == Approx(0.18 * n).margin(4 * std::sqrt(0.18 * 0.82 * n)));  // another seed: an independent split
  CHECK_FALSE(train::in_validation("x", 1, 0.0));
  CHECK(train::in_validation("x", 1, 1.0));
}

TEST_CASE("the hash split keeps the clips of one video together and an explicit split that does not is named",
          "[train][dataset]") {
  TempDir dir("shared_videos");
  // 60 videos with three captions each (ids v<i>_<k>), 60 with one (ids s<i>), in a manifest.
  std::string manifest;
  for (int i = 0; i < 60; ++i) {
    write_file(dir.path / "videos" / fmt::format("v{}.mp4", i), "x");
    write_file(dir.path / "videos" / fmt::format("s{}.mp4", i), "x");
    for (int k = 0; k < 3; ++k)
      manifest += fmt::format(R"({{"video": "videos/v{}.mp4", "caption": "c", "id": "v{}_{}"}})", i, i, k) + "\n";
    manifest += fmt::format(R"({{"video": "./videos/s{}.mp4", "caption": "c", "id": "s{}"}})", i, i) + "\n";
  }
  write_file(dir.path / "m.jsonl", manifest);
  train::DatasetOptions o;
  o.val_fraction = 0.3;
  o.seed = 7;
  const auto data = train::read_dataset(dir.path / "m.jsonl", o);
  REQUIRE(data.train.size() + data.val.size() == 240);
  CHECK(data.videos_on_both_sides.empty());
  std::map<std::string, std::set<bool>> sides;  // video file name -> the sides its clips are on
  std::size_t split_apart_by_own_ids = 0;
  for (const bool val : {false, true})
    for (const auto& c : val ? data.val : data.train) {
      const std::string name = c.video.filename().string();
      sides[name].insert(val);
      if (name.starts_with("s")) {
        CHECK(val == train::in_validation(c.id, 7, 0.3));  // a video of its own: by its own id, as always
      } else {
        const std::string first = c.id.substr(0, c.id.find('_')) + "_0";  // the smallest id naming the video
        CHECK(val == train::in_validation(first, 7, 0.3));
      }
    }
  for (int i = 0; i < 60; ++i) {
    CHECK(sides[fmt::format("v{}.mp4", i)].size() == 1);
    std::set<bool> own;  // where the three clips would have gone by their own ids
    for (int k = 0; k < 3; ++k) own.insert(train::in_validation(fmt::format("v{}_{}", i, k), 7, 0.3));
    split_apart_by_own_ids += own.size() == 2;
  }
  CHECK(split_apart_by_own_ids > 10);  // (the case that matters happens: 60 x (1 - 0.7^3 - 0.3^3) = 38 expected)
  CHECK(data.val.size() > 30);
  CHECK(data.val.size() < 120);

  // An explicit split that puts one video on both sides is kept and named.
  write_file(dir.path / "explicit.jsonl", R"({"video": "videos/v0.mp4", "caption": "a", "id": "a", "split": "train"})"
                                          "\n"
                                          R"({"video": "videos/./v0.mp4", "caption": "b", "id": "b", "split": "val"})"
                                          "\n"
                                          R"({"video": "videos/v1.mp4", "caption": "c", "id": "c", "split": "val"})"
                                          "\n");
  const auto explicit_split = train::read_dataset(dir.path / "explicit.jsonl", o);
  CHECK(explicit_split.train.size() == 1);
  CHECK(explicit_split.val.size() == 2);
  const fs::path v0 = fs::weakly_canonical(dir.path / "videos" / "v0.mp4");
  REQUIRE(explicit_split.videos_on_both_sides.size() == 1);
  CHECK(explicit_split.videos_on_both_sides[0] == v0);
  CHECK_THAT(explicit_split.summary(),
             Catch::EndsWith(fmt::format("; 1 video named by train and val clips alike ({}): the held-out scores on "
                                         "it are not held out",
                                         v0.string())));
  CHECK_THAT(data.summary(), !Catch::Contains("alike"));

  // A hashed clip joins the clips of its video placed by a "split" field; a video is the file, however the path
  // names it (another spelling, a symbolic link to its folder).
  std::string to_val;  // an id the hash sends to val
  for (int i = 0; to_val.empty(); ++i)
    if (train::in_validation("h" + std::to_string(i), 7, 0.3)) to_val = "h" + std::to_string(i);
  fs::create_directory_symlink(dir.path / "videos", dir.path / "alias");
  write_file(dir.path / "joined.jsonl",
             R"({"video": "videos/v0.mp4", "caption": "a", "id": "a", "split": "train"})"
             "\n" +
                 fmt::format(R"({{"video": "{}", "caption": "b", "id": "{}"}})", (dir.path / "videos/v0.mp4").string(),
                             to_val) +
                 "\n" + fmt::format(R"({{"video": "alias/v1.mp4", "caption": "c", "id": "{}"}})", to_val + "x") + "\n" +
                 R"({"video": "videos/../videos/v1.mp4", "caption": "d", "id": "0"})"
                 "\n");
  const auto joined = train::read_dataset(dir.path / "joined.jsonl", o);
  CHECK(joined.train.size() + joined.val.size() == 4);
  const auto has = [](const std::vector<train::Clip>& clips, const std::string& id) {
    return std::any_of(clips.begin(), clips.end(), [&](const train::Clip& c) { return c.id == id; });
  };
  CHECK(has(joined.train, "a"));
  CHECK(has(joined.train, to_val));  // v0's other clip is placed in train: the hash would have sent this one to val
  const auto& v1_side = train::in_validation("0", 7, 0.3) ? joined.val : joined.train;  // v1's smallest id decides
  CHECK(has(v1_side, "0"));
  CHECK(has(v1_side, to_val + "x"));  // alias/v1.mp4 is videos/v1.mp4
  CHECK(joined.videos_on_both_sides.empty());
}

TEST_CASE("train and val folders give the split when both exist", "[train][dataset]") {
  TempDir dir("folders");
  for (const char* part : {"train", "val"}) {
    write_file(dir.path / part / "videos" / (std::string(part) + "1.mp4"), "x");
    write_file(dir.path / part / "labels" / (std::string(part) + "1.json"),
               std::string(R"({"caption": {"korean": ")") + part + "\"}, \"category\": \"c\"}");
  }
  const auto data = train::read_dataset(dir.path);
  REQUIRE(data.train.size() == 1);
  REQUIRE(data.val.size() == 1);
  CHECK(data.train[0].caption == "train");
  CHECK(data.val[0].id == "val1");
  CHECK(data.val[0].category == "c");
  const auto hashed = train::read_dataset(dir.path, {.split = train::SplitRule::Hash, .val_fraction = 1.0});
  CHECK(hashed.val.size() == 2);
}

// A label JSON with a Korean caption (the release's nesting), and `extra` fields.
std::string download_label(const std::string& caption, const std::string& extra = "") {
  return R"({"annotations": [{"caption": {"korean": ")" + caption + "\"}}]" + extra + "}";
}

std::vector<std::string> ids_of(const std::vector<train::Clip>& clips) {
  std::vector<std::string> ids;
  for (const auto& c : clips) ids.push_back(c.id);
  return ids;
}

TEST_CASE("an AI-Hub download as unpacked is read from its folders at any depth", "[train][dataset]") {
  TempDir dir("download");
  const fs::path t = dir.path / "01.데이터" / "1.Training", v = dir.path / "01.데이터" / "2.Validation";
  const auto label = [](const std::string& caption, const std::string& extra = "") {
    return download_label(caption, extra);
  };
  write_file(t / "라벨링데이터" / "TL_도시" / "a1.json", label("도시 하나", R"(, "video_name": "a1.mp4")"));
  write_file(t / "원천데이터" / "TS_도시" / "a1.mp4", "x");
  write_file(t / "라벨링데이터" / "TL_도시" / "a2.json", label("도시 둘"));  // found by its stem, any letter case
  write_file(t / "원천데이터" / "TS_도시" / "A2.MP4", "x");
  write_file(t / "라벨링데이터" / "TL_도시" / "dup.json", label("학습 쪽"));
  write_file(t / "원천데이터" / "TS_도시" / "dup.mp4", "x");
  write_file(t / "라벨링데이터" / "TL_도시" / "empty.json", label("빈 영상"));
  write_file(t / "원천데이터" / "TS_도시" / "empty.mp4", "");
  write_file(t / "라벨링데이터" / "TL_도시" / "lost.json", label("영상 없음"));
  // Numbered per category: the video in the label's mirrored folder.
  write_file(t / "라벨링데이터" / "TL_자연" / "0001.json", label("자연 0001"));
  write_file(t / "라벨링데이터" / "TL_도시" / "0001.json", label("도시 0001"));
  write_file(t / "원천데이터" / "TS_자연" / "0001.mp4", "x");
  write_file(t / "원천데이터" / "TS_도시" / "0001.mp4", "x");
  // Two videos of one name that no folder tells apart: ambiguous.
  write_file(t / "라벨링데이터" / "TL_자연" / "amb.json", label("둘 중 하나"));
  write_file(t / "원천데이터" / "TS_자연" / "a" / "amb.mp4", "x");
  write_file(t / "원천데이터" / "TS_자연" / "b" / "amb.mp4", "x");
  // A Windows path, and another extension than the name given.
  write_file(t / "라벨링데이터" / "TL_도시" / "w.json",
             label("윈도 경로", R"(, "file_name": "원천데이터\\TS_도시\\w_clip.mp4")"));
  write_file(t / "원천데이터" / "TS_도시" / "w_clip.mp4", "x");
  write_file(t / "라벨링데이터" / "TL_도시" / "e.json", label("다른 확장자", R"(, "file_name": "e_clip.avi")"));
  write_file(t / "원천데이터" / "TS_도시" / "e_clip.MOV", "x");
  write_file(v / "라벨링데이터" / "VL_도시" / "v1.json", label("검증 하나"));
  write_file(v / "원천데이터" / "VS_도시" / "v1.mp4", "x");
  write_file(v / "라벨링데이터" / "VL_도시" / "dup.json", label("검증 쪽"));  // the same stem in both splits
  write_file(v / "원천데이터" / "VS_도시" / "dup.mp4", "x");
  // A Validation label whose video is only on the Training side (its archive not unpacked): never paired.
  write_file(v / "라벨링데이터" / "VL_도시" / "cross.json", label("교차"));
  write_file(t / "원천데이터" / "TS_도시" / "cross.mp4", "x");
  // What a macOS zip leaves beside the files, a stray JSON at the top, and a Test folder: not clips.
  write_file(t / "라벨링데이터" / "TL_도시" / "._a1.json", "\x00\x05\x16\x07");
  write_file(dir.path / "__MACOSX" / "x.json", label("숨은 것"));
  write_file(dir.path / "__MACOSX" / "x.mp4", "x");
  write_file(dir.path / "dataset_info.json", R"({"name": "배경영상"})");
  write_file(dir.path / "3.Test" / "TL_도시" / "t1.json", label("평가"));
  write_file(dir.path / "3.Test" / "TS_도시" / "t1.mp4", "x");
  write_file(dir.path / "VS_산.zip", "PK");

  const auto data = train::read_dataset(dir.path);
  const std::string tl = "01.데이터/1.Training/라벨링데이터/", vl = "01.데이터/2.Validation/라벨링데이터/";
  CHECK(ids_of(data.train) == std::vector<std::string>{tl + "TL_도시/0001", tl + "TL_도시/a1", tl + "TL_도시/a2",
                                                       tl + "TL_도시/dup", tl + "TL_도시/e", tl + "TL_도시/w",
                                                       tl + "TL_자연/0001"});
  CHECK(ids_of(data.val) == std::vector<std::string>{vl + "VL_도시/dup", vl + "VL_도시/v1"});
  REQUIRE(data.train.size() == 7);
  REQUIRE(data.val.size() == 2);
  const auto video = [&](const std::vector<train::Clip>& clips, const std::string& id) {
    for (const auto& c : clips)
      if (c.id == id) return c.video.lexically_relative(dir.path).generic_string();
    return std::string("(none)");
  };
  CHECK(video(data.train, tl + "TL_도시/0001") == "01.데이터/1.Training/원천데이터/TS_도시/0001.mp4");
  CHECK(video(data.train, tl + "TL_자연/0001") == "01.데이터/1.Training/원천데이터/TS_자연/0001.mp4");
  CHECK(video(data.train, tl + "TL_도시/dup") == "01.데이터/1.Training/원천데이터/TS_도시/dup.mp4");
  CHECK(video(data.val, vl + "VL_도시/dup") == "01.데이터/2.Validation/원천데이터/VS_도시/dup.mp4");
  CHECK(video(data.train, tl + "TL_도시/a2") == "01.데이터/1.Training/원천데이터/TS_도시/A2.MP4");
  CHECK(video(data.train, tl + "TL_도시/w") == "01.데이터/1.Training/원천데이터/TS_도시/w_clip.mp4");
  CHECK(video(data.train, tl + "TL_도시/e") == "01.데이터/1.Training/원천데이터/TS_도시/e_clip.MOV");
  CHECK(data.train[1].caption == "도시 하나");
  CHECK(data.val[0].caption == "검증 쪽");
  CHECK(data.labels_seen == 14);  // 10 Training, 3 Validation labels and the stray one; not the Test folder's
  CHECK(data.skipped.count(train::SkipReason::EmptyVideo) == 1);
  CHECK(data.skipped.count(train::SkipReason::MissingVideo) == 3);  // lost, cross, dataset_info
  CHECK(data.skipped.count(train::SkipReason::AmbiguousVideo) == 1);
  CHECK(data.skipped.total() == 5);
  train::DatasetOptions all_examples;
  all_examples.max_skip_examples = 10;
  const std::string summary = train::read_dataset(dir.path, all_examples).summary();
  CHECK_THAT(summary, Catch::Contains("1 ambiguous video"));
  CHECK_THAT(summary, Catch::Contains(tl + "TL_자연/amb.json: ambiguous video (2 videos named amb.mp4: "
                                           "01.데이터/1.Training/원천데이터/TS_자연/a/amb.mp4, "
                                           "01.데이터/1.Training/원천데이터/TS_자연/b/amb.mp4)"));
  CHECK_THAT(summary, Catch::Contains("TL_도시/empty.json: empty video (01.데이터/1.Training/원천데이터/TS_도시/"
                                      "empty.mp4 has 0 bytes)"));
  CHECK_THAT(summary, Catch::Contains("TL_도시/lost.json: missing video (no video named lost.mp4 below the data "
                                      "folder)"));
  CHECK_THAT(summary, Catch::Contains(vl + "VL_도시/cross.json: missing video (no video named cross.mp4 on its "
                                           "Validation side; 01.데이터/1.Training/원천데이터/TS_도시/cross.mp4 is on "
                                           "the Training side)"));
  CHECK_THAT(
      data.layout,
      Catch::Contains("an AI-Hub download") && Catch::Contains("split by its Training and Validation folders") &&
          Catch::Contains("1 label under a Test folder not read") &&
          Catch::Contains(
              "1 zip archive with no folder of its name beside it (VS_산.zip): a clip only inside one is not read") &&
          !Catch::Contains("under neither"));
  // Hash: one pool of the same clips, split by id.
  const auto hashed = train::read_dataset(dir.path, {.split = train::SplitRule::Hash, .val_fraction = 1.0});
  CHECK(hashed.train.empty());
  CHECK(hashed.val.size() == 9);
  CHECK_THAT(hashed.layout, Catch::Contains("split by the hash of the clip ids (as asked)"));
  // A clip on neither side while the split is by side goes by the hash, said so; Folders refuses it, naming it.
  write_file(dir.path / "extra" / "x.json", label("밖"));
  write_file(dir.path / "extra" / "x.mp4", "x");
  const auto with_extra = train::read_dataset(dir.path, {.val_fraction = 0.0});
  CHECK(with_extra.train.size() == 8);
  CHECK_THAT(with_extra.layout, Catch::Contains("1 clip under neither (or both) split by the hash (extra/x.json)"));
  CHECK_THROWS_WITH(train::read_dataset(dir.path, {.split = train::SplitRule::Folders}),
                    Catch::Contains("extra/x.json is under neither a Training nor a Validation folder"));
  fs::remove_all(dir.path / "extra");
  // Ids do not depend on the other labels: without the Validation side the Training clips keep theirs.
  fs::remove_all(v);
  CHECK_THROWS_WITH(train::read_dataset(dir.path, {.split = train::SplitRule::Folders}),
                    Catch::Contains("needs labels under a Training and under a Validation folder") &&
                        Catch::Contains("Training ones only"));
  const auto auto_split = train::read_dataset(dir.path, {.val_fraction = 0.0});
  CHECK(ids_of(auto_split.train) == ids_of(data.train));
  CHECK(auto_split.val.empty());
  CHECK_THAT(auto_split.layout,
             Catch::Contains("split by the hash of the clip ids (no label under a Validation folder)"));
}

TEST_CASE("a download's videos: split archives, a folder per clip, sides, Test folders and packed archives",
          "[train][dataset]") {
  TempDir dir("download_more");
  // Korean side names under a parent that hints at Training: the innermost hint decides.
  const fs::path t = dir.path / "AI학습데이터" / "1.학습데이터", v = dir.path / "AI학습데이터" / "2.검증데이터";
  write_file(t / "02.라벨링데이터" / "TL_도시" / "0001.json", download_label("도시"));
  write_file(t / "02.라벨링데이터" / "TL_자연" / "0001.json", download_label("자연"));
  write_file(t / "02.라벨링데이터" / "TL_산" / "0001.json", download_label("산"));
  write_file(t / "01.원천데이터" / "TS_도시_2" / "0001.mp4", "x");  // an archive split in parts
  write_file(t / "01.원천데이터" / "TS_자연_1" / "0001.mp4", "x");
  write_file(t / "01.원천데이터" / "TS_산" / "0001" / "0001.mp4", "x");  // a folder per clip
  write_file(t / "01.원천데이터" / "TS_도시_2.zip", "PK");               // unpacked beside its folder: not reported
  write_file(v / "02.라벨링데이터" / "VL_도시" / "0001.json", download_label("검증 도시"));
  write_file(v / "01.원천데이터" / "VS_도시" / "0001.mp4", "x");
  // A Training label whose only video is under a Test folder; a label on neither side whose only video is on one.
  write_file(t / "02.라벨링데이터" / "TL_도시" / "t.json", download_label("평가 영상"));
  write_file(dir.path / "3.Test" / "TS_도시" / "t.mp4", "x");
  write_file(dir.path / "extra" / "e.json", download_label("바깥"));
  write_file(v / "01.원천데이터" / "VS_도시" / "e.mp4", "x");
  // A folder's name against a hint ("1.학습데이터/VL_x": the name decides) and a name against a name.
  write_file(t / "VL_x" / "c.json", download_label("이름이 이긴다"));
  write_file(t / "VL_x" / "c.mp4", "x");
  write_file(dir.path / "1.Training" / "VL_y" / "d.json", download_label("모순"));
  write_file(dir.path / "1.Training" / "VL_y" / "d.mp4", "x");

  train::DatasetOptions o;
  o.max_skip_examples = 10;
  o.val_fraction = 0.0;  // (d.json, on neither side, goes by the hash: to train)
  const auto data = train::read_dataset(dir.path, o);
  const std::string tl = "AI학습데이터/1.학습데이터/02.라벨링데이터/";
  CHECK(ids_of(data.train) ==
        std::vector<std::string>{"1.Training/VL_y/d", tl + "TL_도시/0001", tl + "TL_산/0001", tl + "TL_자연/0001"});
  CHECK(ids_of(data.val) == std::vector<std::string>{"AI학습데이터/1.학습데이터/VL_x/c",
                                                     "AI학습데이터/2.검증데이터/02.라벨링데이터/VL_도시/0001"});
  REQUIRE(data.train.size() == 4);
  CHECK(data.train[1].video == t / "01.원천데이터" / "TS_도시_2" / "0001.mp4");
  CHECK(data.train[2].video == t / "01.원천데이터" / "TS_산" / "0001" / "0001.mp4");
  CHECK(data.train[3].video == t / "01.원천데이터" / "TS_자연_1" / "0001.mp4");
  const std::string summary = data.summary();
  CHECK_THAT(summary, Catch::Contains(tl + "TL_도시/t.json: missing video (no video named t.mp4 on its Training side; "
                                           "3.Test/TS_도시/t.mp4 is under a Test folder (not read))"));
  CHECK_THAT(summary, Catch::Contains("extra/e.json: missing video (no video named e.mp4 outside the Training and "
                                      "Validation folders; AI학습데이터/2.검증데이터/01.원천데이터/VS_도시/e.mp4 is on "
                                      "the Validation side)"));
  CHECK(data.skipped.total() == 2);
  // d.json (Training against VL_) is on neither side: split by the hash, and said so.
  CHECK_THAT(data.layout,
             Catch::Contains("split by its Training and Validation folders") &&
                 Catch::Contains("1 clip under neither (or both) split by the hash (1.Training/VL_y/d.json)") &&
                 Catch::Contains("1 label under folders that disagree on the side (1.Training/VL_y/d.json)") &&
                 !Catch::Contains("zip"));
  CHECK(data.labels_seen == 8);  // not the Test folder's
  // A symbolic link to a folder the root holds anyway is not followed: ids and sides stay the folders' own paths.
  fs::create_directory_symlink(v, dir.path / "shortcut");
  const auto linked = train::read_dataset(dir.path, o);
  CHECK(ids_of(linked.val) == ids_of(data.val));
  CHECK(linked.labels_seen == 8);
  if (::geteuid() != 0) {  // (root reads any folder)
    fs::permissions(v / "01.원천데이터", fs::perms::none);
    const auto denied = train::read_dataset(dir.path, o);
    fs::permissions(v / "01.원천데이터", fs::perms::owner_all);
    CHECK_THAT(denied.layout, Catch::Contains("1 folder that cannot be read (AI학습데이터/2.검증데이터/01.원천데이터): "
                                              "its clips are not read"));
  }
}

TEST_CASE("the labels/ layout takes a named video's Windows path and another extension", "[train][dataset]") {
  TempDir dir("labels_names");
  write_file(dir.path / "labels" / "a.json", R"({"caption": "가", "file_name": "D:\\clips\\a_clip.mp4"})");
  write_file(dir.path / "videos" / "a_clip.mp4", "x");
  write_file(dir.path / "labels" / "b.json", R"({"caption": "나", "video_name": "b_clip.avi"})");
  write_file(dir.path / "videos" / "b_clip.mov", "x");
  const auto data = train::read_dataset(dir.path, {.val_fraction = 0.0});
  REQUIRE(data.train.size() == 2);
  CHECK(data.train[0].video == dir.path / "videos" / "a_clip.mp4");
  CHECK(data.train[1].video == dir.path / "videos" / "b_clip.mov");
  CHECK(data.layout.empty());
}

TEST_CASE("a download's sides: numbered, hinted and conflicting folder names", "[train][dataset]") {
  using train::detail::download_side;
  using S = train::detail::DownloadSide;
  CHECK(download_side("1.Training/라벨링데이터/TL_a") == S::Train);
  CHECK(download_side("01.Training/TL_a") == S::Train);
  CHECK(download_side("1.Train/x") == S::Train);
  CHECK(download_side("2.Val/x") == S::Val);
  CHECK(download_side("validation/x") == S::Val);
  CHECK(download_side("VL_도시") == S::Val);
  CHECK(download_side("AI학습데이터/2.Validation/VL_a") == S::Val);  // a side named outright wins over a hint
  CHECK(download_side("AI학습데이터/1.Training") == S::Train);
  CHECK(download_side("AI학습데이터/2.검증데이터/VL_a") == S::Val);
  CHECK(download_side("AI학습데이터/2.검증데이터") == S::Val);  // the innermost hint
  CHECK(download_side("학습데이터/x") == S::Train);             // hints only
  CHECK(download_side("검증데이터/x") == S::Val);
  CHECK(download_side("Training_data/validation_set") == S::Val);  // hints: the innermost
  CHECK(download_side("training_validation/x") == S::Conflict);
  CHECK(download_side("1.Training/VL_a") == S::Conflict);
  CHECK(download_side("3.Test/TL_a") == S::Test);
  CHECK(download_side("trains/x") == S::None);  // not a side's name
  CHECK(download_side("intervals/x") == S::None);
  CHECK(download_side("") == S::None);
}

// `text` with its Hangul syllables decomposed into jamo (NFD), as a zip made on macOS stores names: 학 = ᄒ ᅡ ᆨ.
std::string hangul_nfd(const std::string& text) {
  std::string out;
  for (const char32_t cp : model::detail::utf8_to_code_points(text, "test text")) {
    if (cp < 0xAC00 || cp > 0xD7A3) {
      model::detail::append_utf8(out, cp);
      continue;
    }
    const char32_t s = cp - 0xAC00;
    model::detail::append_utf8(out, 0x1100 + s / (21 * 28));
    model::detail::append_utf8(out, 0x1161 + (s % (21 * 28)) / 28);
    if (s % 28 != 0) model::detail::append_utf8(out, 0x11A7 + s % 28);
  }
  return out;
}

TEST_CASE("a download unpacked from a macOS zip: decomposed Korean names are read as their composed form",
          "[train][dataset]") {
  TempDir dir("download_nfd");
  const std::string nfd = hangul_nfd("AI학습데이터");
  REQUIRE(nfd.size() == 2 + (5 * 2 + 2) * 3);  // "AI", 5 syllables of 2 jamo, 2 of them with a third (3 bytes each)
  CHECK(train::detail::comparable_name(nfd) == "ai학습데이터");
  CHECK(train::detail::comparable_name("Clip\xb5.MP4") == "clip\xb5.mp4");  // not UTF-8: its bytes
  using S = train::detail::DownloadSide;
  CHECK(train::detail::download_side(hangul_nfd("학습데이터/x")) == S::Train);
  CHECK(train::detail::download_side(hangul_nfd("AI학습데이터/2.검증데이터")) == S::Val);

  // Folders and files with decomposed names; the labels name their videos composed (as JSON text usually is).
  const fs::path t = dir.path / hangul_nfd("학습데이터"), v = dir.path / hangul_nfd("검증데이터");
  write_file(t / hangul_nfd("라벨링데이터") / "a.json",
             download_label("학습 클립", R"(, "file_name": "서울_거리_001.mp4")"));
  write_file(t / hangul_nfd("원천데이터") / hangul_nfd("서울_거리_001.mp4"), "x");
  write_file(v / hangul_nfd("라벨링데이터") / hangul_nfd("부산_항구_002.json"), download_label("검증 클립"));
  write_file(v / hangul_nfd("원천데이터") / "부산_항구_002.mp4", "x");  // composed, its label decomposed
  const auto data = train::read_dataset(dir.path, train::DatasetOptions{});
  INFO(data.summary() << "\n" << data.layout);
  REQUIRE(data.train.size() == 1);
  REQUIRE(data.val.size() == 1);
  CHECK(data.train[0].video == t / hangul_nfd("원천데이터") / hangul_nfd("서울_거리_001.mp4"));
  CHECK(data.val[0].video == v / hangul_nfd("원천데이터") / "부산_항구_002.mp4");
  CHECK(data.train[0].caption == "학습 클립");
  CHECK(data.train[0].id == "학습데이터/라벨링데이터/a");  // composed, as the same download unzipped elsewhere
  CHECK(data.val[0].id == "검증데이터/라벨링데이터/부산_항구_002");
  CHECK_THAT(data.layout, Catch::Contains("split by its Training and Validation folders") && !Catch::Contains("zip"));
  CHECK(data.skipped.total() == 0);

  // Two videos of one name: the one in the label's mirrored folder, decomposed names and all; an archive beside its
  // decomposed folder is unpacked (not reported).
  write_file(t / hangul_nfd("라벨링데이터") / hangul_nfd("TL_도시") / "m.json", download_label("도시 클립"));
  write_file(t / hangul_nfd("원천데이터") / hangul_nfd("TS_시골") / "m.mp4", "x");
  write_file(t / hangul_nfd("원천데이터") / hangul_nfd("TS_도시") / "m.mp4", "x");
  write_file(t / hangul_nfd("원천데이터") / "TS_도시.zip", "PK");
  const auto mirrored = train::read_dataset(dir.path, train::DatasetOptions{});
  INFO(mirrored.summary() << "\n" << mirrored.layout);
  REQUIRE(mirrored.train.size() == 2);
  CHECK(mirrored.train[0].id == "학습데이터/라벨링데이터/TL_도시/m");
  CHECK(mirrored.train[0].video == t / hangul_nfd("원천데이터") / hangul_nfd("TS_도시") / "m.mp4");
  CHECK_THAT(mirrored.layout, !Catch::Contains("zip"));

  // The labels/ layout: a label naming a composed video whose file is decomposed, or in another letter case; two
  // files that match alike are ambiguous; an empty match does not stop the search for another extension.
  TempDir flat("labels_nfd");
  write_file(flat.path / "labels" / "a.json", R"({"caption": "가", "file_name": "서울_001.mp4"})");
  write_file(flat.path / "videos" / hangul_nfd("서울_001.mp4"), "x");
  write_file(flat.path / "labels" / "b.json", R"({"caption": "나", "file_name": "Clip_B.MP4"})");
  write_file(flat.path / "videos" / "clip_b.mp4", "x");
  write_file(flat.path / "labels" / hangul_nfd("c.json"), R"({"caption": "다", "file_name": "Two.mp4"})");
  write_file(flat.path / "videos" / "TWO.mp4", "x");
  write_file(flat.path / "videos" / "two.MP4", "x");
  write_file(flat.path / "labels" / "d.json", R"({"caption": "라", "file_name": "Empty.mp4"})");
  write_file(flat.path / "videos" / "empty.mp4", "");
  write_file(flat.path / "videos" / "empty.mkv", "x");
  write_file(flat.path / "labels" / hangul_nfd("한글.json"), R"({"caption": "마"})");
  write_file(flat.path / "videos" / "한글.mp4", "x");
  train::DatasetOptions all_train;
  all_train.val_fraction = 0.0;
  const auto labels = train::read_dataset(flat.path, all_train);
  INFO(labels.summary());
  REQUIRE(labels.train.size() == 4);
  CHECK(labels.train[0].video == flat.path / "videos" / hangul_nfd("서울_001.mp4"));
  CHECK(labels.train[1].video == flat.path / "videos" / "clip_b.mp4");
  CHECK(labels.train[2].video == flat.path / "videos" / "empty.mkv");
  CHECK(labels.train[3].id == "한글");  // composed, as the label's decomposed stem is
  CHECK(labels.train[3].video == flat.path / "videos" / "한글.mp4");
  CHECK(labels.skipped.total() == 1);
  CHECK_THAT(labels.summary(), Catch::Contains("labels/c.json: ambiguous video (2 videos named TWO.mp4 but for letter "
                                               "case or Unicode form: videos/TWO.mp4, videos/two.MP4)"));
}

TEST_CASE("a download's folders behind symbolic links are read once, and train/ + val/ may hold a download",
          "[train][dataset]") {
  TempDir dir("download_links");
  const fs::path store = dir.path / "store", root = dir.path / "root";
  write_file(store / "videos" / "a.mp4", "x");
  write_file(root / "Training" / "labels_here" / "a.json", download_label("링크 너머"));
  fs::create_directories(root / "Training");
  fs::create_directory_symlink(store / "videos", root / "Training" / "원천데이터");
  fs::create_directory_symlink(root, root / "Training" / "loop");  // a loop: entered once
  write_file(root / "Validation" / "b.json", download_label("검증"));
  write_file(root / "Validation" / "b.mp4", "x");
  const auto data = train::read_dataset(root);
  REQUIRE(data.train.size() == 1);
  CHECK(data.train[0].video == root / "Training" / "원천데이터" / "a.mp4");
  CHECK(data.train[0].id == "Training/labels_here/a");
  REQUIRE(data.val.size() == 1);
  CHECK(data.val[0].id == "Validation/b");
  CHECK(data.labels_seen == 2);
  // train/ and val/ at the top without labels/ in them: a download too.
  TempDir tv("download_train_val");
  write_file(tv.path / "train" / "라벨링데이터" / "x.json", download_label("학습"));
  write_file(tv.path / "train" / "원천데이터" / "x.mp4", "x");
  write_file(tv.path / "val" / "라벨링데이터" / "y.json", download_label("검증"));
  write_file(tv.path / "val" / "원천데이터" / "y.mp4", "x");
  const auto split = train::read_dataset(tv.path);
  CHECK(ids_of(split.train) == std::vector<std::string>{"train/라벨링데이터/x"});
  CHECK(ids_of(split.val) == std::vector<std::string>{"val/라벨링데이터/y"});
}

TEST_CASE("a label's caption field can be named by a JSON pointer or a field name", "[train][dataset]") {
  TempDir dir("caption_field");
  write_file(dir.path / "videos/a.mp4", "x");
  write_file(dir.path / "videos/b.mp4", "x");
  write_file(dir.path / "videos/c.mp4", "x");
  write_file(dir.path / "labels/a.json",
             R"({"info": {"title": "제목"}, "annotations": [{"desc": "첫 묘사"}, {"desc": "둘째 묘사"}]})");
  write_file(dir.path / "labels/b.json", R"({"annotations": [{"desc": {"korean": "언어별 묘사", "english": "x"}}]})");
  write_file(dir.path / "labels/c.json", R"({"annotations": [], "n": 3})");
  write_file(dir.path / "labels/d.json", "{\"caption\": \"\xB9\xE8\xB0\xE6\"}");  // "배경" in CP949
  write_file(dir.path / "videos/d.mp4", "x");
  // The caption rule finds none, and the skip says what text each label holds (JSON pointers).
  const auto plain = train::read_aihub(dir.path, {.val_fraction = 0.0});
  CHECK(plain.train.empty());
  CHECK_THAT(plain.summary(),
             Catch::Contains("labels/a.json: no caption (no caption.korean; its text: /annotations/0/desc, "
                             "/annotations/1/desc, /info/title)") &&
                 Catch::Contains("labels/b.json: no caption (no caption.korean; its text: /annotations/0/desc/english, "
                                 "/annotations/0/desc/korean)") &&
                 Catch::Contains("labels/c.json: no caption (no caption.korean; no text in it)") &&
                 Catch::Contains("labels/d.json: unreadable JSON (") &&
                 Catch::Contains("the text is not UTF-8 (Korean saved as CP949 / EUC-KR? iconv -f cp949 -t utf-8"));
  // A field name: the first of that name, depth-first; an object holding the language is read as a caption is.
  const auto named = train::read_aihub(dir.path, {.val_fraction = 0.0, .caption_field = "desc"});
  REQUIRE(named.train.size() == 2);
  CHECK(named.train[0].caption == "첫 묘사");
  CHECK(named.train[1].caption == "언어별 묘사");
  CHECK_THAT(named.summary(), Catch::Contains("labels/c.json: no caption (no desc; no text in it)"));
  // A JSON pointer: that value exactly.
  const auto pointed = train::read_aihub(dir.path, {.val_fraction = 0.0, .caption_field = "/annotations/1/desc"});
  REQUIRE(pointed.train.size() == 1);
  CHECK(pointed.train[0].id == "a");
  CHECK(pointed.train[0].caption == "둘째 묘사");
  CHECK(pointed.skipped.count(train::SkipReason::MissingCaption) == 2);  // (and d.json unreadable)
  CHECK_THAT(pointed.summary(), Catch::Contains("labels/b.json: no caption (no /annotations/1/desc; its text: "));
  const auto english =
      train::read_aihub(dir.path, {.val_fraction = 0.0, .language = "english", .caption_field = "/annotations/0/desc"});
  REQUIRE(english.train.size() == 2);
  CHECK(english.train[0].caption == "첫 묘사");  // a string is the caption whatever the language
  CHECK(english.train[1].caption == "x");
  // Manifests take it too.
  write_file(dir.path / "m.jsonl", R"({"video": "videos/a.mp4", "text": {"korean": "매니페스트 묘사"}})"
                                   "\n");
  const auto manifest = train::read_manifest(dir.path / "m.jsonl", {.val_fraction = 0.0, .caption_field = "/text"});
  REQUIRE(manifest.train.size() == 1);
  CHECK(manifest.train[0].caption == "매니페스트 묘사");
  // An index past any array, or past size_t: no caption, never an exception.
  const auto huge =
      train::read_aihub(dir.path, {.val_fraction = 0.0, .caption_field = "/annotations/99999999999999999999999/desc"});
  CHECK(huge.train.empty());
  CHECK(huge.skipped.count(train::SkipReason::MissingCaption) == 3);
  CHECK_THROWS_WITH(train::read_aihub(dir.path, {.caption_field = "/a/~2"}),
                    Catch::Contains("caption_field '/a/~2' is not a JSON pointer"));
}

TEST_CASE("a download folder still zipped, or without labels or videos, is refused saying what to do",
          "[train][dataset][errors]") {
  TempDir dir("download_zipped");
  write_file(dir.path / "1.Training" / "TS_도시.zip", "PK");
  write_file(dir.path / "1.Training" / "TL_도시.zip", "PK");
  CHECK_THROWS_WITH(train::read_dataset(dir.path),
                    Catch::Contains("holds 2 zip archives (1.Training/TL_도시.zip, …) and no label JSON files") &&
                        Catch::Contains("unpack them"));
  write_file(dir.path / "1.Training" / "TL_도시" / "a.json", R"({"caption": "a"})");
  CHECK_THROWS_WITH(train::read_dataset(dir.path), Catch::Contains("and no video files outside them"));
  fs::remove(dir.path / "1.Training" / "TS_도시.zip");
  fs::remove(dir.path / "1.Training" / "TL_도시.zip");
  CHECK_THROWS_WITH(train::read_dataset(dir.path),
                    Catch::Contains("has no labels/ folder and no video files below it"));
  // Labels and videos in one folder without Training / Validation: a hash split.
  write_file(dir.path / "1.Training" / "TL_도시" / "a.mp4", "x");
  const auto data = train::read_dataset(dir.path, {.val_fraction = 0.0});
  REQUIRE(data.train.size() == 1);
  CHECK(data.train[0].caption == "a");
}

TEST_CASE("dataset readers reject a tree without labels and bad options", "[train][dataset][errors]") {
  TempDir dir("errors");
  CHECK_THROWS_WITH(train::read_aihub(dir.path), Catch::Contains("has no labels/ folder"));
  CHECK_THROWS_WITH(train::read_aihub(dir.path / "nope"), Catch::Contains("is not a directory"));
  CHECK_THROWS_WITH(train::read_aihub(dir.path, {.val_fraction = 1.5}), Catch::Contains("val_fraction"));
  fs::create_directories(dir.path / "train");  // train/ without val/ (not a download: it has labels/)
  fs::create_directories(dir.path / "labels");
  CHECK_THROWS_WITH(train::read_aihub(dir.path, {.split = train::SplitRule::Folders}), Catch::Contains("train and"));
  CHECK_THROWS_WITH(train::read_manifest(dir.path / "none.jsonl"), Catch::Contains("cannot open manifest"));
}
