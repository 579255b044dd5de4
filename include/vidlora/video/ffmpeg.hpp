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

#include <memory>
#include <string>

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

}  // namespace vidlora::video
