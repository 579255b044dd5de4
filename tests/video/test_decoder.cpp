#include <catch2/catch.hpp>

#include <vidlora/video.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "clips.hpp"

using namespace vidlora;
using vidlora::video::decode_all_frames;
using vidlora::video::DecodeStatus;

namespace {
// Runs `f`, expects vidlora::Error, returns its message.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const vidlora::Error& e) {
    return e.what();
  }
  FAIL("no vidlora::Error thrown");
  return {};
}
}  // namespace

TEST_CASE("stream facts come from the container and frame positions from decoded timestamps", "[video][decoder]") {
  const auto path = test::testsrc_clip();
  video::VideoDecoder decoder(path);
  const video::StreamInfo& info = decoder.info();
  CHECK(info.codec_name == "h264");
  CHECK(info.width == 160);
  CHECK(info.height == 120);
  CHECK(info.avg_fps == Approx(30.0));
  CHECK(info.duration == Approx(4.0).margin(1e-3));
  CHECK(info.reported_frame_count == 120);
  CHECK(info.time_base_num == 1);
  CHECK(info.time_base_den > 0);
  std::int64_t count = 0;
  const DecodeStatus status = decoder.decode([&](const video::DecodedFrame& f) {
    CHECK(f.index == count);
    CHECK(f.timestamp == Approx(count / 30.0).margin(1e-6));
    CHECK(f.frame->width == 160);
    ++count;
    return true;
  });
  CHECK(count == 120);
  CHECK(status.frames == 120);
  CHECK_FALSE(status.damaged);
}

TEST_CASE("variable frame rate clip gives the exact frame count and per-frame timestamps", "[video][decoder][vfr]") {
  const auto frames = decode_all_frames(test::vfr_clip());
  REQUIRE(frames.size() == 30);
  for (int i = 0; i < 30; ++i) {
    CHECK(frames[i].index == i);
    CHECK(frames[i].timestamp == Approx(test::vfr_time(i)).margin(1e-4));
  }
  // The average rate the container states matches neither stretch: positions must not come from it.
  video::VideoDecoder decoder(test::vfr_clip());
  CHECK(decoder.info().avg_fps != Approx(10.0).margin(0.5));
  CHECK(decoder.info().avg_fps != Approx(30.0).margin(0.5));
}

TEST_CASE("a container that over-reports its frame count is decoded to its real length", "[video][decoder]") {
  const auto path = test::wrong_count_clip();
  video::VideoDecoder decoder(path);
  CHECK(decoder.info().reported_frame_count == 500);
  CHECK(decoder.scan_packets().pts.size() == 90);
  const auto frames = decode_all_frames(path);
  CHECK(frames.size() == 90);
  // Every sampler still returns exactly num_frames frames from the real 90.
  const auto uniform = Sampler<Uniform>(SamplerOptions{.num_frames = 8, .width = 32, .height = 24}).sample(path);
  REQUIRE(uniform.size() == 8);
  CHECK(uniform.back().index == 89);
  const auto motion = Sampler<Motion>(SamplerOptions{.num_frames = 8, .width = 32, .height = 24}).sample(path);
  REQUIRE(motion.size() == 8);
  CHECK(motion.back().index < 90);
}

TEST_CASE("frames come back as interleaved RGB at the requested size", "[video][decoder]") {
  const auto frames =
      Sampler<Uniform>(SamplerOptions{.num_frames = 2, .width = 40, .height = 30}).sample(test::red_clip());
  REQUIRE(frames.size() == 2);
  for (const auto& f : frames) {
    CHECK(f.rgb.width == 40);
    CHECK(f.rgb.height == 30);
    REQUIRE(f.rgb.data.size() == 40 * 30 * 3);
    for (int y : {0, 15, 29})
      for (int x : {0, 20, 39}) {
        CHECK(f.rgb.at(x, y, 0) >= 250);  // red through yuv420p and back: within a few levels
        CHECK(f.rgb.at(x, y, 1) <= 5);
        CHECK(f.rgb.at(x, y, 2) <= 5);
      }
  }
  const auto native =
      Sampler<Uniform>(SamplerOptions{.num_frames = 1, .width = 0, .height = 0}).sample(test::red_clip());
  REQUIRE(native.size() == 1);
  CHECK(native[0].rgb.width == 160);
  CHECK(native[0].rgb.height == 120);
}

TEST_CASE("bad input files throw vidlora::Error naming the file and the problem", "[video][decoder][errors]") {
  const auto missing = test::clip_dir() / "no_such_clip.mp4";
  auto msg = error_of([&] { Sampler<Uniform>().sample(missing); });
  CHECK_THAT(msg, Catch::Contains(missing.string()) && Catch::Contains("no such file"));

  msg = error_of([&] { Sampler<SceneChange>().sample(test::text_as_mp4()); });
  CHECK_THAT(msg, Catch::Contains(test::text_as_mp4().string()) && Catch::Contains("not a readable video"));

  msg = error_of([&] { Sampler<Motion>().sample(test::audio_only_clip()); });
  CHECK_THAT(msg, Catch::Contains(test::audio_only_clip().string()) && Catch::Contains("no video stream") &&
                      Catch::Contains("audio aac"));

  msg = error_of([&] { Sampler<Uniform>().sample(test::empty_mp4()); });
  CHECK_THAT(msg, Catch::Contains(test::empty_mp4().string()) && Catch::Contains("empty file"));

  msg = error_of([&] { video::detect_scene_changes(test::truncated_without_index()); });
  CHECK_THAT(msg, Catch::Contains(test::truncated_without_index().string()) && Catch::Contains("not a readable video"));

  msg = error_of([&] { Sampler<Uniform>(SamplerOptions{.num_frames = 0}).sample(test::testsrc_clip()); });
  CHECK_THAT(msg, Catch::Contains(test::testsrc_clip().string()) && Catch::Contains("num_frames is 0"));

  msg = error_of([&] { video::VideoDecoder decoder(test::clip_dir()); });
  CHECK_THAT(msg, Catch::Contains("is a directory"));
}

TEST_CASE("with the FFmpeg log captured, FFmpeg's own last error is part of the error naming the file",
          "[video][decoder][errors]") {
  struct Restore {  // the default callback back for the other tests (their messages are compared without it)
    ~Restore() {
      av_log_set_callback(av_log_default_callback);
      video::detail::ffmpeg_capture_installed = false;
      video::set_ffmpeg_log_level(AV_LOG_QUIET);
    }
  } restore;
  CHECK(video::ffmpeg_said().empty());  // not installed: nothing to add
  video::capture_ffmpeg_log(AV_LOG_QUIET);
  CHECK(av_log_get_level() == AV_LOG_QUIET);
  // An MP4 cut before its index: FFmpeg says which box is missing; the program's error says it too.
  const auto msg = error_of([&] { Sampler<Uniform>().sample(test::truncated_without_index()); });
  CHECK_THAT(msg, Catch::Contains(test::truncated_without_index().string()) &&
                      Catch::Contains("not a readable video (") && Catch::Contains("; FFmpeg: moov atom not found)"));
  CHECK(video::ffmpeg_said().empty());  // taken once
  // A message logged on this thread before a file is opened is not that file's.
  av_log(nullptr, AV_LOG_ERROR, "an earlier problem\n");
  const auto other = error_of([&] { Sampler<Uniform>().sample(test::text_as_mp4()); });
  CHECK_THAT(other, !Catch::Contains("an earlier problem"));
  // A message whose line never ended is not the next file's either.
  av_log(nullptr, AV_LOG_ERROR, "never ended");
  const auto next = error_of([&] { Sampler<Uniform>().sample(test::truncated_without_index()); });
  CHECK_THAT(next, !Catch::Contains("never ended") && Catch::Contains("; FFmpeg: moov atom not found)"));
  // Lines FFmpeg logs in parts are joined; only error-level ones are kept.
  av_log(nullptr, AV_LOG_ERROR, "part one, ");
  av_log(nullptr, AV_LOG_ERROR, "part two\n");
  av_log(nullptr, AV_LOG_WARNING, "a warning\n");
  CHECK(video::ffmpeg_said() == "; FFmpeg: part one, part two");
}

TEST_CASE("a file truncated mid-way reports where it broke and keeps the frames before it",
          "[video][decoder][errors]") {
  const auto path = test::truncated_clip();
  // Default: an error that names the file, says it is damaged and after how many good frames.
  const auto msg =
      error_of([&] { Sampler<Motion>(SamplerOptions{.num_frames = 4, .width = 16, .height = 12}).sample(path); });
  CHECK_THAT(msg, Catch::Contains(path.string()) && Catch::Contains("damaged") && Catch::Contains("good frame") &&
                      Catch::Contains("byte offset"));
  CHECK_THROWS_WITH(video::detect_scene_changes(path), Catch::Contains(path.string()) && Catch::Contains("damaged"));

  // The decoder delivers the good prefix and says where it stopped.
  DecodeStatus status;
  const auto frames = decode_all_frames(path, 0, 0, &status);
  CHECK(status.damaged);
  CHECK(status.byte_offset > 0);
  CHECK(status.frames == static_cast<std::int64_t>(frames.size()));
  CHECK(frames.size() >= 30);  // half of the bytes hold roughly half of the 120 frames
  CHECK(frames.size() < 120);
  for (std::size_t i = 0; i < frames.size(); ++i) CHECK(frames[i].timestamp == Approx(i / 30.0).margin(1e-6));

  // accept_damaged: the samplers use that prefix and flag it.
  for (bool seek : {true, false}) {
    const auto s = Sampler<Uniform>(
                       SamplerOptions{.num_frames = 8, .width = 16, .height = 12, .seek = seek, .accept_damaged = true})
                       .sample_with_report(path);
    CHECK(s.report.status.damaged);
    CHECK(s.report.frame_count == static_cast<std::int64_t>(frames.size()));
    REQUIRE(s.frames.size() == 8);
    CHECK(s.frames.front().index == 0);
    CHECK(s.frames.back().index == static_cast<std::int64_t>(frames.size()) - 1);
  }
}

TEST_CASE("damage FFmpeg decodes through is counted per frame and reported with where it starts",
          "[video][decoder][errors]") {
  using video::DecodedFrame;
  using video::VideoDecoder;
  using video::VideoDecoderOptions;
  const auto decode = [](const std::filesystem::path& path, std::vector<std::int64_t>* flagged) {
    VideoDecoder decoder(path,
                         VideoDecoderOptions{.threads = 1});  // FFmpeg's H.264 conceals only without frame threads
    return decoder.decode([&](const DecodedFrame& f) {
      if (f.concealed) flagged->push_back(f.index);
      return true;
    });
  };
  const auto sample = [](const std::filesystem::path& path, bool seek) {
    return Sampler<Uniform>(SamplerOptions{.num_frames = 8, .width = 16, .height = 12, .threads = 1, .seek = seek})
        .sample_with_report(path);
  };
  // The frames a seeking Uniform sampler decodes: from each wanted frame's keyframe (or the frame before, going on
  // in the same group of pictures) to it. `inside`: the first wanted frame that is no keyframe, so its own slice is
  // scrambled; `outside`: the last frame of the first group of pictures without a wanted frame, never decoded.
  const auto wanted = video::uniform_indices(150, 8);
  std::int64_t inside = -1, outside = -1;
  for (const auto t : wanted)
    if (inside < 0 && t % 12 != 0) inside = t;
  for (std::int64_t g = 0; g < 12 && outside < 0; ++g)
    if (std::none_of(wanted.begin(), wanted.end(), [&](std::int64_t t) { return t / 12 == g; })) outside = 12 * g + 11;
  REQUIRE(inside > 0);
  REQUIRE(outside > 0);
  {  // (the choice above needs a keyframe at every 12th frame and none between)
    VideoDecoder decoder(test::gop12_no_b_clip());
    const auto index = decoder.scan_packets();
    REQUIRE(index.keyframe.size() == 150);
    for (std::size_t k = 0; k < 150; ++k) CHECK(index.keyframe[k] == (k % 12 == 0));
  }

  std::vector<std::int64_t> clean_flagged;
  const DecodeStatus clean = decode(test::gop12_no_b_clip(), &clean_flagged);
  CHECK(clean.frames == 150);
  CHECK(clean.concealed_frames == 0);
  CHECK(clean.first_concealed_timestamp == -1.0);
  CHECK(clean.concealment().empty());
  CHECK(clean_flagged.empty());
  for (bool seek : {true, false}) CHECK(sample(test::gop12_no_b_clip(), seek).report.status.concealed_frames == 0);

  for (const std::int64_t frame : {inside, outside}) {
    INFO("frame " << frame << " scrambled");
    const auto path = test::scrambled_frame_clip(static_cast<int>(frame));
    std::vector<std::int64_t> flagged;
    const DecodeStatus s = decode(path, &flagged);
    CHECK(s.frames == 150);  // every packet decodes: the file is not "damaged" in the stopping sense
    CHECK_FALSE(s.damaged);
    CHECK(flagged == std::vector<std::int64_t>{frame});  // the frame whose slice broke (those after it: unflagged)
    CHECK(s.concealed_frames == 1);
    CHECK(s.first_concealed_timestamp == Approx(frame / 30.0).margin(1e-6));
    CHECK(s.concealment() ==
          fmt::format("FFmpeg concealed damage in 1 of 150 decoded frames, the first at {:.3f} s", frame / 30.0));

    // In one pass the sampler sees the whole clip's damage; seeking, the damage of the stretches it decodes.
    const auto one_pass = sample(path, false);
    CHECK_FALSE(one_pass.report.seeked);
    CHECK(one_pass.report.status.concealed_frames == 1);
    CHECK(one_pass.report.status.first_concealed_timestamp == Approx(frame / 30.0).margin(1e-6));
    const auto seeking = sample(path, true);
    REQUIRE(seeking.report.seeked);
    CHECK(seeking.frames.size() == 8);
    CHECK(seeking.report.frames_decoded < 150);  // (it seeked past some groups of pictures)
    CHECK(seeking.report.status.frames <= seeking.report.frames_decoded);
    if (frame == inside) {
      CHECK(seeking.report.status.concealed_frames == 1);
      CHECK(seeking.report.status.first_concealed_timestamp == Approx(frame / 30.0).margin(1e-6));
    } else {
      CHECK(seeking.report.status.concealed_frames == 0);  // no frame it returns carries that damage
    }
  }
}
