#pragma once
// Test clips made with the ffmpeg command at test time (tiny: 160x120, a few seconds), cached in the
// system temp folder. Each is written under a temporary name and renamed, so tests running in
// parallel never see a half-written file.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <unistd.h>

#include <vidlora/core/error.hpp>
#include <vidlora/video/decoder.hpp>
#include <vidlora/video/ffmpeg.hpp>

namespace vidlora::test {

inline std::filesystem::path clip_dir() {
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / "vidlora-video-test-clips-v1";
    std::filesystem::create_directories(d);
    video::set_ffmpeg_log_level(AV_LOG_QUIET);  // damaged-file tests would flood the output
    return d;
  }();
  return dir;
}

// Runs `ffmpeg <args> <tmp output>` once and renames the result to `name`.
inline std::filesystem::path ffmpeg_clip(const std::string& name, const std::string& args) {
  const auto out = clip_dir() / name;
  if (std::filesystem::exists(out)) return out;
  const auto ext = std::filesystem::path(name).extension().string();
  const auto tmp = clip_dir() / (name + ".tmp" + std::to_string(::getpid()) + ext);
  const std::string cmd = "ffmpeg -v error -y -nostdin " + args + " '" + tmp.string() + "'";
  if (std::system(cmd.c_str()) != 0) throw Error("test clip generation failed: " + cmd);
  std::filesystem::rename(tmp, out);
  return out;
}

inline void write_file(const std::filesystem::path& p, const std::string& bytes) {
  const auto tmp = p.string() + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary);
    f << bytes;
  }
  std::filesystem::rename(tmp, p);
}

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

inline const std::string x264 = " -c:v libx264 -pix_fmt yuv420p ";

// testsrc, 120 frames at 30 fps (4 s), moov atom first.
inline std::filesystem::path testsrc_clip() {
  return ffmpeg_clip("testsrc_120.mp4",
                     "-f lavfi -i testsrc=size=160x120:rate=30 -frames:v 120" + x264 + "-movflags +faststart");
}

// testsrc2, 150 frames, a keyframe every 12 frames and B-frames: for keyframe seeking.
inline std::filesystem::path gop_clip() {
  return ffmpeg_clip("gop12_150.mp4", "-f lavfi -i testsrc2=size=160x120:rate=30 -frames:v 150" + x264 +
                                          "-g 12 -keyint_min 12 -sc_threshold 0 -bf 2");
}

// Four scenes of 40, 35, 45 and 30 frames: cuts at 40, 75, 120.
inline const std::vector<std::int64_t> known_cuts{40, 75, 120};
inline std::filesystem::path cuts_clip() {
  return ffmpeg_clip(
      "cuts_40_75_120.mp4",
      "-f lavfi -i testsrc2=size=160x120:rate=30 -f lavfi -i smptebars=size=160x120:rate=30 "
      "-f lavfi -i mandelbrot=size=160x120:rate=30 -f lavfi -i rgbtestsrc=size=160x120:rate=30 -filter_complex "
      "'[0:v]trim=end_frame=40,setpts=PTS-STARTPTS[a];[1:v]trim=end_frame=35,setpts=PTS-STARTPTS[b];"
      "[2:v]trim=end_frame=45,setpts=PTS-STARTPTS[c];[3:v]trim=end_frame=30,setpts=PTS-STARTPTS[d];"
      "[a][b][c][d]concat=n=4:v=1,format=yuv420p[v]' -map '[v]'" +
          x264);
}

// Variable frame rate: frames 0-9 at 10 fps (t = 0.1 i), then 20 frames at 30 fps (t = 1 + (i-10)/30).
inline double vfr_time(int i) { return i < 10 ? 0.1 * i : 1.0 + (i - 10) / 30.0; }
inline std::filesystem::path vfr_clip() {
  return ffmpeg_clip("vfr_30.mp4",
                     "-f lavfi -i testsrc=size=160x120:rate=30 -vf \"setpts='if(lt(N,10),N*3,30+(N-10))/30/TB'\" "
                     "-frames:v 30 -fps_mode vfr -video_track_timescale 90000" +
                         x264);
}

// A still picture for 60 frames.
inline std::filesystem::path still_clip() {
  return ffmpeg_clip("still_60.mp4", "-f lavfi -i color=c=0x336699:size=160x120:rate=30 -frames:v 60" + x264);
}

// 210 frames of a grey background with a white box that moves only in frames 90-119.
inline std::filesystem::path burst_clip() {
  return ffmpeg_clip("burst_90_120.mp4",
                     "-f lavfi -i color=c=gray:size=160x120:rate=30 -f lavfi -i color=c=white:size=24x24:rate=30 "
                     "-filter_complex \"[0:v][1:v]overlay=x='if(between(n,90,119),10+(n-90)*4,10)':y=40:eval=frame,"
                     "trim=end_frame=210,format=yuv420p[v]\" -map '[v]'" +
                         x264);
}

// Solid red, 10 frames.
inline std::filesystem::path red_clip() {
  return ffmpeg_clip("red_10.mp4", "-f lavfi -i color=c=red:size=160x120:rate=30 -frames:v 10" + x264);
}

// An AVI of 90 frames whose headers claim 500 (avih dwTotalFrames and strh dwLength patched).
inline std::filesystem::path wrong_count_clip() {
  const auto out = clip_dir() / "claims_500_has_90.avi";
  if (std::filesystem::exists(out)) return out;
  const auto src =
      ffmpeg_clip("plain_90.avi", "-f lavfi -i testsrc=size=160x120:rate=30 -frames:v 90 -c:v mpeg4 -q:v 5");
  std::string bytes = read_file(src);
  auto put_u32 = [&](std::size_t at, std::uint32_t v) {
    for (int b = 0; b < 4; ++b) bytes[at + b] = static_cast<char>((v >> (8 * b)) & 0xff);
  };
  const auto avih = bytes.find("avih"), strh = bytes.find("strh");
  if (avih == std::string::npos || strh == std::string::npos) throw Error("AVI headers not found");
  put_u32(avih + 8 + 16, 500);  // MainAVIHeader.dwTotalFrames
  put_u32(strh + 8 + 32, 500);  // AVIStreamHeader.dwLength
  write_file(out, bytes);
  return out;
}

inline std::filesystem::path audio_only_clip() {
  return ffmpeg_clip("sine.m4a", "-f lavfi -i sine=frequency=440:duration=1 -c:a aac");
}

inline std::filesystem::path text_as_mp4() {
  const auto p = clip_dir() / "notes.mp4";
  if (!std::filesystem::exists(p)) write_file(p, "These are meeting notes, not a video.\nSecond line.\n");
  return p;
}

inline std::filesystem::path empty_mp4() {
  const auto p = clip_dir() / "empty.mp4";
  if (!std::filesystem::exists(p)) write_file(p, "");
  return p;
}

// The first half of testsrc_clip() (moov first, so the frames before the cut are decodable).
inline std::filesystem::path truncated_clip() {
  const auto p = clip_dir() / "testsrc_120_truncated.mp4";
  if (!std::filesystem::exists(p)) {
    const std::string bytes = read_file(testsrc_clip());
    write_file(p, bytes.substr(0, bytes.size() / 2));
  }
  return p;
}

// The first half of an MP4 whose moov atom is at the end: nothing is decodable.
inline std::filesystem::path truncated_without_index() {
  const auto p = clip_dir() / "moov_at_end_truncated.mp4";
  if (!std::filesystem::exists(p)) {
    const auto full = ffmpeg_clip("moov_at_end.mp4", "-f lavfi -i testsrc=size=160x120:rate=30 -frames:v 60" + x264);
    const std::string bytes = read_file(full);
    write_file(p, bytes.substr(0, bytes.size() / 2));
  }
  return p;
}

// testsrc2, 150 frames, a keyframe every 12 frames and no B-frames: decode order is presentation order, and each
// frame one slice, so frame k's slice is the k-th slice NAL unit of the MP4's data.
inline std::filesystem::path gop12_no_b_clip() {
  return ffmpeg_clip("gop12_nob_150.mp4", "-f lavfi -i testsrc2=size=160x120:rate=30 -frames:v 150" + x264 +
                                              "-g 12 -keyint_min 12 -sc_threshold 0 -bf 0 -movflags +faststart");
}

// gop12_no_b_clip() with 8 bytes of frame `frame`'s slice (a P frame's) scrambled (XOR 0xA5) where FFmpeg then
// flags that frame, and that frame only, as concealed (decoding with one thread): the container and every packet
// stay intact, so FFmpeg decodes all 150 frames, guessing the broken blocks. Not every scrambled place is flagged
// (some decode wrong with no word: a review found 23 of this clip's 137 P slices so, scrambled in the middle), so
// places from the middle of the slice outwards are tried until one is; the x264 that made the clip decides which.
// The MP4's mdat holds only the video's NAL units, each after its 4-byte length: walking them finds the slice.
inline std::filesystem::path scrambled_frame_clip(int frame) {
  const auto p = clip_dir() / ("gop12_nob_150_flagged_" + std::to_string(frame) + ".mp4");
  if (std::filesystem::exists(p)) return p;
  const auto source = gop12_no_b_clip();
  const std::string clean = read_file(source);
  auto u32 = [&](std::size_t at) {
    std::uint32_t v = 0;
    for (int b = 0; b < 4; ++b) v = (v << 8) | static_cast<std::uint8_t>(clean.at(at + b));
    return static_cast<std::size_t>(v);
  };
  const auto mdat = clean.find("mdat");
  if (mdat == std::string::npos || mdat < 4) throw Error("scrambled_frame_clip: no mdat box in " + source.string());
  const std::size_t end = mdat - 4 + u32(mdat - 4);
  std::size_t nal = 0, size = 0;
  int slice = 0;
  for (std::size_t at = mdat + 4; at + 4 <= end && nal == 0; at += 4 + u32(at)) {
    const int type = static_cast<std::uint8_t>(clean.at(at + 4)) & 0x1f;
    if ((type == 1 || type == 5) && slice++ == frame) {  // a slice: non-IDR (P) or IDR
      if (type != 1 || u32(at) < 24)
        throw Error("scrambled_frame_clip: frame " + std::to_string(frame) + " of " + source.string() +
                    " is a keyframe or its slice has fewer than 24 bytes");
      nal = at + 4;
      size = u32(at);
    }
  }
  if (nal == 0)
    throw Error("scrambled_frame_clip: " + source.string() + " has fewer than " + std::to_string(frame + 1) +
                " slices");
  const auto tmp =
      clip_dir() / ("gop12_nob_150_flagged_" + std::to_string(frame) + ".try" + std::to_string(::getpid()) + ".mp4");
  for (int step = 0; step < 32; ++step) {  // the middle, then 1/32 of the slice further out on either side in turn
    const long offset =
        static_cast<long>(size / 2) + (step % 2 ? -1 : 1) * ((step + 1) / 2) * static_cast<long>(size / 32);
    if (offset < 4 || offset + 8 > static_cast<long>(size)) continue;  // (not the slice header's first bytes)
    std::string bytes = clean;
    for (std::size_t k = nal + offset; k < nal + offset + 8; ++k)
      bytes[k] = static_cast<char>(static_cast<std::uint8_t>(bytes[k]) ^ 0xA5);
    { std::ofstream(tmp, std::ios::binary) << bytes; }
    std::vector<std::int64_t> flagged;
    video::VideoDecoder decoder(tmp, video::VideoDecoderOptions{.threads = 1});
    const auto status = decoder.decode([&](const video::DecodedFrame& f) {
      if (f.concealed) flagged.push_back(f.index);
      return true;
    });
    if (!status.damaged && status.frames == 150 && flagged == std::vector<std::int64_t>{frame}) {
      std::filesystem::rename(tmp, p);
      return p;
    }
  }
  std::filesystem::remove(tmp);
  throw Error("scrambled_frame_clip: no place in frame " + std::to_string(frame) + "'s slice of " + source.string() +
              " that FFmpeg flags when scrambled");
}

}  // namespace vidlora::test

namespace vidlora::test {
// A raw H.264 elementary stream (no container, no packet timestamps), 60 frames.
inline std::filesystem::path raw_h264_clip() {
  return ffmpeg_clip("raw_60.h264",
                     "-f lavfi -i testsrc=size=160x120:rate=30 -frames:v 60 -c:v libx264 -pix_fmt yuv420p -f h264");
}
}  // namespace vidlora::test
