#pragma once
// RAII over the FFmpeg objects the decoder uses: each is a std::unique_ptr whose deleter is the
// matching FFmpeg free function, so every early return or exception releases what was allocated.

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avutil.h>
#include <libavutil/imgutils.h>
#include <libavutil/log.h>
#include <libswscale/swscale.h>
}

#include <atomic>
#include <cstdarg>
#include <memory>
#include <string>
#include <string_view>

namespace vidlora::video {

namespace detail {
struct FormatContextDeleter {
  void operator()(AVFormatContext* p) const { avformat_close_input(&p); }
};
struct CodecContextDeleter {
  void operator()(AVCodecContext* p) const { avcodec_free_context(&p); }
};
struct FrameDeleter {
  void operator()(AVFrame* p) const { av_frame_free(&p); }
};
struct PacketDeleter {
  void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct SwsContextDeleter {
  void operator()(SwsContext* p) const { sws_freeContext(p); }
};
}  // namespace detail

using FormatContextPtr = std::unique_ptr<AVFormatContext, detail::FormatContextDeleter>;
using CodecContextPtr = std::unique_ptr<AVCodecContext, detail::CodecContextDeleter>;
using FramePtr = std::unique_ptr<AVFrame, detail::FrameDeleter>;
using PacketPtr = std::unique_ptr<AVPacket, detail::PacketDeleter>;
using SwsContextPtr = std::unique_ptr<SwsContext, detail::SwsContextDeleter>;

// FFmpeg's text for an AVERROR code ("Invalid data found when processing input").
inline std::string av_error_string(int code) {
  char buffer[AV_ERROR_MAX_STRING_SIZE] = {};
  av_strerror(code, buffer, sizeof buffer);
  return buffer;
}

// FFmpeg logs to stderr on its own; the library never changes this global setting by itself.
// Tests and tools call this (e.g. with AV_LOG_QUIET) to silence the messages about damaged input.
inline void set_ffmpeg_log_level(int level) { av_log_set_level(level); }

namespace detail {
// The FFmpeg log capture (capture_ffmpeg_log): the line being assembled and the last error-level line FFmpeg logged
// on this thread, and whether the capture is installed.
inline thread_local std::string ffmpeg_partial_line;
inline thread_local std::string ffmpeg_last_error;
inline std::atomic<bool> ffmpeg_capture_installed{false};

inline void ffmpeg_log_callback(void* context, int level, const char* format, va_list args) {
  va_list copy;
  va_copy(copy, args);
  if ((level & 0xff) <= AV_LOG_ERROR && format) {  // (the high bits may carry a colour)
    char line[1024];
    int print_prefix = 0;  // the text without FFmpeg's "[mov,mp4,... @ 0x...]" context
    av_log_format_line2(context, level, format, copy, line, sizeof line, &print_prefix);
    std::string text = line;  // (cut at 1023 bytes: whether the message ends its line is the format's to say)
    if (!text.empty() && text.back() == '\n') text.pop_back();
    ffmpeg_partial_line += text;
    const std::string_view f = format;
    if (!f.empty() && f.back() == '\n') {
      ffmpeg_last_error = std::move(ffmpeg_partial_line);
      ffmpeg_partial_line.clear();
    }
  }
  va_end(copy);
  av_log_default_callback(context, level, format, args);  // prints what av_log_get_level() lets through
}
}  // namespace detail

// For programs (the library never installs it by itself): FFmpeg's log lines at `print_level` or more severe go to
// stderr as before (AV_LOG_QUIET: none), and the last error FFmpeg logs while a video is opened or decoded is added
// to the library's error for that file ("not a readable video (Invalid data found when processing input; FFmpeg:
// moov atom not found)"). Messages logged on FFmpeg's own decoding threads (a decoder with threads != 1) are
// printed as the level says but not captured: the error then names the last one logged on the calling thread, or
// none. A frame FFmpeg conceals (decodes with an error it logs) is no error here: DecodeStatus counts it (decoder.hpp).
inline void capture_ffmpeg_log(int print_level) {
  av_log_set_level(print_level);
  av_log_set_callback(detail::ffmpeg_log_callback);
  detail::ffmpeg_capture_installed = true;
}

// "; FFmpeg: <its last error on this thread>" when the capture is installed and FFmpeg logged one since the last
// call, else ""; the message is taken (a later call does not repeat it).
inline std::string ffmpeg_said() {
  std::string last = std::move(detail::ffmpeg_last_error);
  detail::ffmpeg_last_error.clear();
  detail::ffmpeg_partial_line.clear();  // (a line never ended is no later file's)
  if (!detail::ffmpeg_capture_installed || last.empty()) return {};
  return "; FFmpeg: " + last;
}

}  // namespace vidlora::video
