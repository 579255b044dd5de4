#include <catch2/catch.hpp>

#include <fixtures.hpp>
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
                          Catch::Contains("labels/english_only.json: no caption (no caption.korean)"));

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

TEST_CASE("dataset readers reject a tree without labels and bad options", "[train][dataset][errors]") {
  TempDir dir("errors");
  CHECK_THROWS_WITH(train::read_aihub(dir.path), Catch::Contains("has no labels/ folder"));
  CHECK_THROWS_WITH(train::read_aihub(dir.path / "nope"), Catch::Contains("is not a directory"));
  CHECK_THROWS_WITH(train::read_aihub(dir.path, {.val_fraction = 1.5}), Catch::Contains("val_fraction"));
  CHECK_THROWS_WITH(train::read_aihub(dir.path, {.split = train::SplitRule::Folders}), Catch::Contains("train and"));
  CHECK_THROWS_WITH(train::read_manifest(dir.path / "none.jsonl"), Catch::Contains("cannot open manifest"));
}
